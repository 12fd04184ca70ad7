#!/usr/bin/env python3
"""Reference values for bayes-ab's experiment-level CUPED, metric family and anytime-valid
CUPED sequence, on the deterministic data of `bayes-ab/tests/experiment_metrics.rs` (the same
integer formulas and float operations in Rust and here).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install mpmath scipy statsmodels
    /tmp/venv/bin/python scripts/bayes_ab_experiment_reference.py

Prints Rust source; the output is committed as `bayes-ab/tests/data/experiment_metrics.rs`,
so the tests need no Python. Independent computations:

- the CUPED difference and slope of the primary conversion for each challenger: the treatment
  coefficient and covariate slope of `y ~ 1 + treatment + x` by statsmodels OLS on the units of
  champion and challenger;
- the covariate balance p-value: statsmodels `CompareMeans.ztest_ind(usevar="unequal")`;
- every metric x challenger hypothesis of the family: the conversion metric's Beta posteriors
  (mpmath at 50 digits), CUPED metrics by statsmodels OLS for the estimate and numpy for the
  per-arm residual variance, the continuous metric's Welch standard error and its Gaussian
  effect prior by precision weighting; two-sided p-values by scipy; Holm and
  Benjamini-Hochberg decisions and adjusted p-values by statsmodels `multipletests`;
- the anytime-valid CUPED sequence of champion and challenger 1: the predictable plug-in
  empirical-Bernstein sequence (Waudby-Smith & Ramdas 2023, Theorem 2) on the augmented
  inverse-propensity terms, re-implemented here from the formulas in mpmath at 50 digits.
"""

import mpmath as mp
import numpy as np
import statsmodels.api as sm
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

mp.mp.dps = 50

UNITS = 3_000
WEIGHTS = [4_000, 3_000, 3_000]


def arm_of(i):
    r = i % 10
    return 0 if r < 4 else (1 if r < 7 else 2)


def unit(i):
    """(arm, covariate, primary conversion, [signup, revenue, pages, retained])."""
    arm = arm_of(i)
    x = ((i * 7919) % 1000) / 100.0
    h = (i * 104729 + arm * 17) % 1000
    converted = 1.0 if h < 100 + 40 * int(x) + 25 * arm else 0.0
    signup = 1.0 if (i * 31337 + arm * 7) % 100 < 10 + 3 * arm else 0.0
    revenue = 5.0 + 0.9 * x + ((i * 4099) % 101) / 10.0 - 5.0 + 0.4 * arm
    pages = float((i * 2003 + arm) % 17) + 0.25 * arm
    retained = 1.0 if (i * 6007) % 100 < 20 + 5 * int(x) + 2 * arm else 0.0
    return arm, x, converted, [signup, revenue, pages, retained]


def data():
    arms = {a: {"x": [], "conv": [], "m": [[], [], [], []]} for a in range(3)}
    for i in range(UNITS):
        arm, x, c, ms = unit(i)
        arms[arm]["x"].append(x)
        arms[arm]["conv"].append(c)
        for k, v in enumerate(ms):
            arms[arm]["m"][k].append(v)
    return arms


def ols(ya, xa, yb, xb):
    """Treatment coefficient and slope of y ~ 1 + T + x (statsmodels)."""
    y = np.array(ya + yb)
    design = np.column_stack(
        [np.ones(len(y)), np.r_[np.zeros(len(ya)), np.ones(len(yb))], np.array(xa + xb)]
    )
    fit = sm.OLS(y, design).fit()
    return float(fit.params[1]), float(fit.params[2])


def cuped_se(ya, xa, yb, xb, theta):
    """The standard error bayes-ab reports: each arm's sample variance of y - theta x."""
    va = np.var(np.array(ya) - theta * np.array(xa), ddof=1) / len(ya)
    vb = np.var(np.array(yb) - theta * np.array(xb), ddof=1) / len(yb)
    return float(np.sqrt(va + vb))


def beta_hypothesis(ya, yb, prior):
    """Posterior mean difference and combined posterior sd of two rates (mpmath)."""
    def moments(y):
        s = mp.mpf(sum(y))
        a = mp.mpf(prior[0]) + s
        b = mp.mpf(prior[1]) + len(y) - s
        mean = a / (a + b)
        var = a * b / ((a + b) ** 2 * (a + b + 1))
        return mean, var

    (ma, va), (mb, vb) = moments(ya), moments(yb)
    return float(mb - ma), float(mp.sqrt(va + vb))


def welch_with_prior(ya, yb, prior_mean, prior_sd):
    a, b = np.array(ya), np.array(yb)
    d = float(b.mean() - a.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    wp, wd = 1.0 / prior_sd**2, 1.0 / se**2
    return (prior_mean * wp + d * wd) / (wp + wd), (wp + wd) ** -0.5


def anytime_cuped(stream, share, alphas):
    """The anytime-valid CUPED sequence of a conversion pair, in mpmath."""
    tune = mp.mpf("0.05")
    c = mp.mpf("0.5")
    reach = 1 / min(mp.mpf(share), 1 - mp.mpf(share))
    # pooled regression state (plain sums are fine at 50 digits)
    n = 0
    sx = sy = sxx = sxy = mp.mpf(0)
    t = 0
    zsum = sq = lam_sum = lam_z = pen = mp.mpf(0)
    for challenger, y, x in stream:
        y, x = mp.mpf(y), mp.mpf(x)
        if n == 0:
            f = mp.mpf("0.5")
        else:
            mx, my = sx / n, sy / n
            m2x = sxx - n * mx * mx
            f = my + (sxy - n * mx * my) / m2x * (x - mx) if m2x > 0 else my
            f = min(max(f, mp.mpf(0)), mp.mpf(1))
        phi = (y - f) / share if challenger else -(y - f) / (1 - mp.mpf(share))
        z = (phi + reach) / (2 * reach)
        t += 1
        mean_before = (mp.mpf("0.5") + zsum) / t
        var_before = (mp.mpf("0.25") + sq) / t
        lam = min(mp.sqrt(2 * mp.log(2 / tune) / (var_before * t * mp.log(1 + t))), c)
        psi = (-mp.log(1 - lam) - lam) / 4
        pen += 4 * (z - mean_before) ** 2 * psi
        lam_sum += lam
        lam_z += lam * z
        zsum += z
        mean_after = (mp.mpf("0.5") + zsum) / (t + 1)
        sq += (z - mean_after) ** 2
        n += 1
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    p_value = min(mp.mpf(1), 2 * mp.exp(pen - abs(lam_z - lam_sum / 2)))
    out = [float(p_value)]
    for alpha in alphas:
        centre = lam_z / lam_sum
        half = (mp.log(2 / mp.mpf(alpha)) + pen) / lam_sum
        lo, hi = max(centre - half, 0), min(centre + half, 1)
        out.append((float(2 * reach * lo - reach), float(2 * reach * hi - reach)))
    return out


def main():
    arms = data()
    a = arms[0]
    print("// Generated by `scripts/bayes_ab_experiment_reference.py`; do not edit.")
    print("// (challenger, CUPED difference, theta) of the primary conversion (statsmodels OLS).")
    print("pub(crate) const PRIMARY_CUPED: [(usize, f64, f64); 2] = [")
    for j in (1, 2):
        b = arms[j]
        d, theta = ols(a["conv"], a["x"], b["conv"], b["x"])
        print(f"    ({j}, {d!r}, {theta!r}),")
    print("];")
    print("// (challenger, covariate balance z, p) (statsmodels ztest_ind, unequal variances).")
    print("pub(crate) const BALANCE: [(usize, f64, f64); 2] = [")
    for j in (1, 2):
        z, p = CompareMeans(DescrStatsW(np.array(arms[j]["x"])), DescrStatsW(np.array(a["x"]))).ztest_ind(
            usevar="unequal"
        )
        print(f"    ({j}, {float(z)!r}, {float(p)!r}),")
    print("];")

    # The family: metric-major, challengers in arm order.
    members = []
    for k in range(4):
        for j in (1, 2):
            b = arms[j]
            ya, yb = a["m"][k], b["m"][k]
            if k == 0:  # signup: conversion, Beta(2, 18) prior
                est, sd = beta_hypothesis(ya, yb, (2, 18))
            elif k == 2:  # pages: continuous, effect prior N(0, 0.2^2)
                est, sd = welch_with_prior(ya, yb, 0.0, 0.2)
            else:  # revenue, retained: CUPED, flat prior
                est, theta = ols(ya, a["x"], yb, b["x"])
                sd = cuped_se(ya, a["x"], yb, b["x"], theta)
            members.append((k, j, est, sd))
    p = np.array([2.0 * norm.sf(abs(est / sd)) for (_, _, est, sd) in members])
    holm_reject, holm_adj, _, _ = multipletests(p, alpha=0.05, method="holm")
    bh_reject, bh_adj, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
    print("// (metric, challenger, estimate, sd, p, Holm adjusted p, Holm rejects,")
    print("//  BH adjusted p, BH rejects) at alpha = 0.05 (mpmath, numpy, statsmodels, scipy).")
    print(f"pub(crate) const FAMILY: [(usize, usize, f64, f64, f64, f64, bool, f64, bool); {len(members)}] = [")
    for i, (k, j, est, sd) in enumerate(members):
        print(
            f"    ({k}, {j}, {est!r}, {sd!r}, {float(p[i])!r}, {float(holm_adj[i])!r}, "
            f"{str(bool(holm_reject[i])).lower()}, {float(bh_adj[i])!r}, "
            f"{str(bool(bh_reject[i])).lower()}),"
        )
    print("];")

    stream = []
    for i in range(UNITS):
        arm, x, c, _ = unit(i)
        if arm in (0, 1):
            stream.append((arm == 1, c, x))
    share = WEIGHTS[1] / (WEIGHTS[0] + WEIGHTS[1])
    p_value, (lo05, hi05), (lo01, hi01) = anytime_cuped(stream, share, ["0.05", "0.01"])
    print("// The anytime-valid CUPED sequence of champion and challenger 1 after every unit,")
    print("// at alpha 0.05 and 0.01 (mpmath at 50 digits).")
    print(f"pub(crate) const ANYTIME: [(f64, f64, f64); 2] = [(0.05, {lo05!r}, {hi05!r}), (0.01, {lo01!r}, {hi01!r})];")
    stream2 = []
    for i in range(UNITS):
        arm, x, c, _ = unit(i)
        if arm in (0, 2):
            stream2.append((arm == 2, c, x))
    p2, _ = anytime_cuped(stream2, WEIGHTS[2] / (WEIGHTS[0] + WEIGHTS[2]), ["0.05"])
    print("// (challenger, anytime-valid p-value): the smallest alpha at which the sequence")
    print("// excludes zero (mpmath).")
    print(f"pub(crate) const ANYTIME_P: [(usize, f64); 2] = [(1, {p_value!r}), (2, {p2!r})];")


if __name__ == "__main__":
    main()
