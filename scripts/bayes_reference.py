#!/usr/bin/env python3
"""Reference values for bayes-ab's extreme-regime accuracy tests.

Writes `bayes-ab/tests/data/extreme.rs` (Rust tables, no Python needed to run the tests).

    python3 -m venv /tmp/bayesref
    /tmp/bayesref/bin/pip install mpmath==1.3.0
    /tmp/bayesref/bin/python scripts/bayes_reference.py > bayes-ab/tests/data/extreme.rs

Everything is computed with mpmath at 60 significant digits, by methods independent of the
crate's double-precision code:

* the regularized incomplete beta function by the all-positive hypergeometric series
  I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 2F1(a + b, 1; a + 1; x)  (DLMF 8.17.8), summed on the
  side of the mean where it converges (the other side by I_x(a, b) = 1 - I_{1-x}(b, a)), so
  it works for parameters up to 1e9 where mpmath's own `betainc` gives up; cross-checked
  against `mpmath.betainc` wherever that converges;
* quantiles by Newton's method on that function, to 50 digits;
* P(B > A) with an integer posterior parameter by Evan Miller's sum, every term in 60-digit
  arithmetic (from the largest term outward until the rest is below 1e-58 of the total);
  without one (Jeffreys' prior) by `mpmath.quad` of a density times the other arm's survival
  function (the series above);
* expected losses by Stucchio's identity E[max(p_a - p_b, 0)] = mu_a P(A+ > B) - mu_b P(A > B+)
  (X+ has alpha + 1), each probability computed as above.
"""

import sys

import mpmath as mp

mp.mp.dps = 60
EPS = mp.mpf(10) ** -58


def lnbeta(a, b):
    return mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)


def _series(a, b, x):
    """I_x(a, b) for x <= 1/2 (positive terms, whose ratio tends to x)."""
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    total, term, k = mp.mpf(1), mp.mpf(1), 0
    while True:
        term *= (a + b + k) * x / (a + 1 + k)
        total += term
        k += 1
        if term < EPS * total:
            break
    return mp.exp(a * mp.log(x) + b * mp.log1p(-x) - lnbeta(a, b)) / a * total


def cdf_pair(a, b, x):
    """(I_x(a, b), 1 - I_x(a, b)), each to full relative precision."""
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    if x <= mp.mpf(1) / 2:
        v = _series(a, b, x)
        return v, 1 - v
    v = _series(b, a, 1 - x)
    return 1 - v, v


def pdf(a, b, x):
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    return mp.exp((a - 1) * mp.log(x) + (b - 1) * mp.log1p(-x) - lnbeta(a, b))


def quantile(a, b, p, start):
    """The x with I_x(a, b) = p, by Newton's method from a double-precision start."""
    p = mp.mpf(p)
    x = mp.mpf(start)
    lower = p <= mp.mpf(1) / 2
    for _ in range(60):
        c, s = cdf_pair(a, b, x)
        err = (c - p) if lower else ((1 - p) - s)
        step = err / pdf(a, b, x)
        x -= step
        if abs(step) < mp.mpf(10) ** -52 * x:
            return x
    raise RuntimeError(f"quantile({a}, {b}, {p}) did not converge")


def _miller(a1, b1, n, b2):
    """Evan Miller's h(a1, b1, n, b2) = P(X2 > X1), X1 ~ Beta(a1, b1), X2 ~ Beta(n, b2)."""
    a1, b1, b2 = mp.mpf(a1), mp.mpf(b1), mp.mpf(b2)
    s = a1 + b1 + b2
    c = (a1 * b2 - s) / (b1 + 1)
    m = 0 if c <= 0 else min(int(mp.ceil(c)), n - 1)
    lnt = (lnbeta(a1 + m, b1 + b2) - mp.log(b2 + m) - lnbeta(1 + m, b2) - lnbeta(a1, b1))
    total = mp.mpf(1)
    t, i = mp.mpf(1), m
    while i < n - 1:
        t *= (a1 + i) * (b2 + i) / ((i + 1) * (s + i))
        i += 1
        total += t
        if t < EPS * total:
            break
    t, i = mp.mpf(1), m
    while i > 0:
        j = i - 1
        t *= (j + 1) * (s + j) / ((a1 + j) * (b2 + j))
        i -= 1
        total += t
        if t < EPS * total:
            break
    return mp.exp(lnt) * total


def _is_int(x):
    return mp.mpf(x) == mp.floor(mp.mpf(x))


def prob_greater(a, b):
    """P(p_b > p_a) for a = (alpha, beta), b = (alpha, beta)."""
    (aa, ba), (ab, bb) = a, b
    forms = []
    if _is_int(ab):
        forms.append((int(ab), lambda n: _miller(aa, ba, n, bb)))
    if _is_int(aa):
        forms.append((int(aa), lambda n: 1 - _miller(ab, bb, n, ba)))
    if _is_int(ba):
        forms.append((int(ba), lambda n: _miller(bb, ab, n, aa)))
    if _is_int(bb):
        forms.append((int(bb), lambda n: 1 - _miller(ba, aa, n, ab)))
    if forms:
        n, f = min(forms, key=lambda t: t[0])
        return f(n)
    return _quad_prob(a, b)


def _quad_prob(a, b):
    """P(p_b > p_a) = P(1 - p_a > 1 - p_b) = integral of f_{B'} * S_{A'} with X' ~ Beta(beta, alpha),
    integrated near 0 (all quadrature cases here live near a rate of 1 or 0)."""
    (aa, ba), (ab, bb) = a, b
    if aa / (aa + ba) > 0.5:
        # mirrored: A' = Beta(ba, aa), B' = Beta(bb, ab); P(B > A) = P(A' > B').
        xa, ya = mp.mpf(ba), mp.mpf(aa)  # A'
        xb, yb = mp.mpf(bb), mp.mpf(ab)  # B'
        dens, dist = (xb, yb), (xa, ya)  # integral f_{B'}(y) P(A' > y) dy
    else:
        # P(B > A) = integral f_A(x) P(B > x) dx
        dens, dist = (mp.mpf(aa), mp.mpf(ba)), (mp.mpf(ab), mp.mpf(bb))
    mean = dens[0] / (dens[0] + dens[1])
    sd = mp.sqrt(dens[0] * dens[1] / ((dens[0] + dens[1]) ** 2 * (dens[0] + dens[1] + 1)))
    pts = [mean + sd * k for k in (-40, -20, -10, -6, -3, -1.5, 0, 1.5, 3, 6, 10, 20, 40, 80)]
    pts = [mp.mpf(0)] + [x for x in pts if 0 < x < 1] + [mp.mpf(1)]
    small = [mean * f for f in (1e-8, 1e-4, 1e-2, 0.1)]
    pts = sorted(set(pts + [x for x in small if x < pts[1]]))

    def f(y):
        return pdf(dens[0], dens[1], y) * cdf_pair(dist[0], dist[1], y)[1]

    return mp.quad(f, pts)


def two_arm(a, b):
    """(P(B > A), loss of choosing A, loss of choosing B)."""
    (aa, ba), (ab, bb) = a, b
    aa, ba, ab, bb = map(mp.mpf, (aa, ba, ab, bb))
    mu_a, mu_b = aa / (aa + ba), ab / (ab + bb)
    p = prob_greater((aa, ba), (ab, bb))
    p_b_gt_aplus = prob_greater((aa + 1, ba), (ab, bb))
    p_bplus_gt_a = prob_greater((aa, ba), (ab + 1, bb))
    loss_b = mu_a * (1 - p_b_gt_aplus) - mu_b * (1 - p_bplus_gt_a)
    loss_a = loss_b + mu_b - mu_a
    return p, loss_a, loss_b


def fmt(x):
    s = mp.nstr(mp.mpf(x), 22, min_fixed=-4, max_fixed=4)
    if "e" not in s and "." not in s:
        s += ".0"
    return s.replace("e-0", "e-").replace("e+", "e")


def num(x):
    """A Rust literal for an f64 parameter (integers without exponent noise)."""
    x = mp.mpf(x)
    if x == mp.floor(x):
        return f"{int(x)}.0"
    return repr(float(x))


# (alpha, beta, x): the documented regimes, CDF and survival function.
CDF_CASES = [
    (6, 999_999_996, 7e-9),
    (6, 999_999_996, 1e-9),
    (6, 999_999_996, 2e-8),
    (6, 999_999_996, 3e-8),
    (2, 1_000_000_000, 1e-9),
    (2, 1_000_000_000, 5e-9),
    (1.5, 999_999_999.5, 2e-9),
    (1_001, 999_999_001, 1e-6),
    (1_001, 999_999_001, 1.05e-6),
    (1_000_001, 999_000_001, 1.001e-3),
    (999_999_996, 6, 1 - 7e-9),
    (500_000_001, 500_000_001, 0.500_01),
    (500_000_001, 500_000_001, 0.5),
    (100_000_001, 900_000_001, 0.100_01),
    (1_000_001, 9_000_001, 0.1003),
    (0.5, 1_000_000_000.5, 1e-9),
    # A density singular at 0 far below its mode (x s below a times the rounding unit).
    (0.5, 1_000, 7.8e-37),
    (0.5, 1_000, 1e-30),
    (0.5, 10.5, 1e-300),
    (1_000_000.5, 0.5, 0.999_999),
]

# (alpha, beta, p)
QUANTILE_CASES = [
    (6, 999_999_996, 0.025),
    (6, 999_999_996, 0.975),
    (2, 1_000_000_000, 0.025),
    (2, 1_000_000_000, 0.975),
    (1.5, 999_999_999.5, 0.5),
    (1_001, 999_999_001, 0.025),
    (1_001, 999_999_001, 0.975),
    (999_999_996, 6, 0.025),
    (999_999_996, 6, 0.975),
    (500_000_001, 500_000_001, 0.975),
    (100_000_001, 900_000_001, 0.025),
    (1_000_001, 9_000_001, 0.975),
    (0.5, 1_000_000_000.5, 0.975),
    (0.5, 1_000, 1e-17),
    (0.5, 1_000, 1e-7),
]

# ((alpha_a, beta_a), (alpha_b, beta_b)): posteriors (uniform prior unless half-integers).
def u(s, n):
    return (s + 1, n - s + 1)


def j(s, n):
    return (s + 0.5, n - s + 0.5)


TWO_ARM_CASES = [
    # Where the closed form hands over to quadrature (sum of parameters 2e4 to 2e6).
    (u(1_000, 10_000), u(1_100, 10_000)),
    (u(5_000, 10_000), u(5_100, 10_000)),
    (u(10_000, 100_000), u(10_100, 100_000)),
    (u(20_000, 40_000), u(20_100, 40_000)),
    (u(100_000, 1_000_000), u(100_300, 1_000_000)),
    # About a million conversions per arm (the regime) and the normal approximation's.
    (u(1_000_000, 10_000_000), u(1_001_000, 10_000_000)),
    (u(1_000_000, 2_000_000), u(1_001_500, 2_000_000)),
    (u(1_000_000, 10_000_000), u(1_000_000, 10_000_000)),
    (u(3_000_000, 6_000_000), u(2_998_000, 6_000_000)),
    # Counts up to 1e9.
    (u(100_000_000, 1_000_000_000), u(100_020_000, 1_000_000_000)),
    (u(500_000_000, 1_000_000_000), u(500_030_000, 1_000_000_000)),
    (u(1_000_000, 1_000_000_000), u(1_001_500, 1_000_000_000)),
    (u(1_000, 1_000_000_000), u(1_100, 1_000_000_000)),
    # Rates down to 1e-9.
    (u(1, 1_000_000_000), u(3, 1_000_000_000)),
    (u(0, 1_000_000_000), u(2, 1_000_000_000)),
    (u(5, 999_999_999), u(5, 1_000_000_000)),
    # Near a rate of 1.
    (u(999_999_998, 1_000_000_000), u(1_000_000_000, 1_000_000_000)),
    (u(999_999, 1_000_000), u(1_000_000, 1_000_000)),
    # Jeffreys' prior near 1 and its mirror near 0 (quadrature).
    (j(999, 1_000), j(1_000, 1_000)),
    (j(999_999, 1_000_000), j(1_000_000, 1_000_000)),
    (j(1, 1_000), j(0, 1_000)),
    (j(1, 1_000_000), j(0, 1_000_000)),
    (j(999_999_999, 1_000_000_000), j(1_000_000_000, 1_000_000_000)),
    (j(500_000, 1_000_000), j(501_000, 1_000_000)),
]


def main():
    out = sys.stdout
    out.write("// @generated by scripts/bayes_reference.py (mpmath 1.3.0, 60 digits). Do not edit.\n")
    out.write("// Included by bayes-ab/tests/reference_extreme.rs.\n\n")
    out.write("/// (alpha, beta, x, I_x(alpha, beta), 1 - I_x(alpha, beta))\n")
    out.write("pub(crate) const CDF: &[(f64, f64, f64, f64, f64)] = &[\n")
    for a, b, x in CDF_CASES:
        c, s = cdf_pair(a, b, mp.mpf(x))
        try:
            check = mp.betainc(a, b, 0, mp.mpf(x), regularized=True)
            assert abs(check - c) < mp.mpf(10) ** -40, (a, b, x, c, check)
        except mp.libmp.NoConvergence:
            pass
        out.write(f"    ({num(a)}, {num(b)}, {float(x)!r}, {fmt(c)}, {fmt(s)}),\n")
    out.write("];\n\n")

    from scipy.stats import beta as sbeta

    out.write("/// (alpha, beta, p, quantile)\n")
    out.write("pub(crate) const QUANTILES: &[(f64, f64, f64, f64)] = &[\n")
    for a, b, p in QUANTILE_CASES:
        start = sbeta.ppf(p, a, b)
        x = quantile(a, b, p, start)
        out.write(f"    ({num(a)}, {num(b)}, {p!r}, {fmt(x)}),\n")
    out.write("];\n\n")

    out.write("/// ((alpha_a, beta_a), (alpha_b, beta_b), P(B > A), loss of A, loss of B)\n")
    out.write("#[allow(clippy::type_complexity)]\n")
    out.write("pub(crate) const TWO_ARM: &[((f64, f64), (f64, f64), f64, f64, f64)] = &[\n")
    for a, b in TWO_ARM_CASES:
        p, la, lb = two_arm(a, b)
        out.write(
            f"    (({num(a[0])}, {num(a[1])}), ({num(b[0])}, {num(b[1])}), "
            f"{fmt(p)}, {fmt(la)}, {fmt(lb)}),\n"
        )
        out.flush()
    out.write("];\n")


def covariate_balance():
    """`python3 scripts/bayes_reference.py balance`: the Welch z test of the covariate-balance
    check on seeded normal data, by statsmodels (values pasted into bayes-ab/tests/health.rs)."""
    import numpy as np
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    rng = np.random.default_rng(7)
    a = rng.normal(50, 10, 400)
    b = rng.normal(51.5, 12, 500)
    z, p = CompareMeans(DescrStatsW(b), DescrStatsW(a)).ztest_ind(usevar="unequal")
    m2 = lambda x: float(x.var(ddof=1) * (len(x) - 1))
    print(f"(400, {float(a.mean())!r}, {m2(a)!r}), (500, {float(b.mean())!r}, {m2(b)!r}), "
          f"z = {float(z)!r}, p = {float(p)!r}")


def cuped_data(n, arm):
    """The deterministic data of bayes-ab/tests/cuped.rs (the same float operations in Rust)."""
    xs, ys = [], []
    for i in range(n):
        x = ((i * 7919 + arm * 31) % 1000) / 10.0
        noise = ((i * 104729 + arm * 17) % 997) / 100.0 - 5.0
        y = 2.0 + 0.8 * x + noise + (1.3 if arm == 1 else 0.0)
        xs.append(x)
        ys.append(y)
    return xs, ys


def cuped():
    """`python3 scripts/bayes_reference.py cuped`: the regression y ~ 1 + treatment + x by
    statsmodels OLS on the data of `cuped_data` (values pasted into bayes-ab/tests/cuped.rs)."""
    import numpy as np
    import statsmodels.api as sm

    for n in (1_000, 20_000):
        xa, ya = cuped_data(n, 0)
        xb, yb = cuped_data(n, 1)
        y = np.array(ya + yb)
        design = np.column_stack([np.ones(2 * n), np.r_[np.zeros(n), np.ones(n)], xa + xb])
        fit = sm.OLS(y, design).fit()
        print(f"({n}, {float(fit.params[1])!r}, {float(fit.params[2])!r}),")


if __name__ == "__main__":
    if sys.argv[1:] == ["cuped"]:
        cuped()
        sys.exit(0)
    if sys.argv[1:] == ["balance"]:
        covariate_balance()
    else:
        main()
