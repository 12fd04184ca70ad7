//! One-dimensional Gauss–Legendre quadrature against Beta densities.
//!
//! Each integral `∫ f(x) g(x) dx` over a Beta density `f` is split into panels at quantiles
//! of `f` (and at the quantiles of every other distribution involved, so that a step in `g`
//! falls on a panel boundary), and each panel gets a 16-point Gauss–Legendre rule, in `ln x`
//! or `ln(1 − x)` when the panel spans orders of magnitude near an end of `[0, 1]`.

use std::sync::OnceLock;

use crate::beta::Beta;

/// Number of Gauss–Legendre nodes per panel.
pub(crate) const NODES: usize = 16;

/// Tail probabilities at which each distribution's support is cut into panels. Mass outside
/// the outermost pair (1e-17 on each side) is ignored.
const PANEL_PROBABILITIES: [f64; 7] = [1e-17, 1e-11, 1e-7, 1e-4, 0.005, 0.06, 0.25];

/// Gauss–Legendre nodes and weights on [−1, 1].
fn gauss_legendre() -> &'static ([f64; NODES], [f64; NODES]) {
    static RULE: OnceLock<([f64; NODES], [f64; NODES])> = OnceLock::new();
    RULE.get_or_init(|| {
        let mut nodes = [0.0; NODES];
        let mut weights = [0.0; NODES];
        let n = NODES as f64;
        for i in 0..NODES.div_ceil(2) {
            // Initial guess (Tricomi), then Newton on P_n.
            let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n + 0.5)).cos();
            let mut derivative = 0.0;
            for _ in 0..100 {
                let (mut p1, mut p2) = (1.0, 0.0);
                for j in 0..NODES {
                    let jf = j as f64;
                    let p3 = p2;
                    p2 = p1;
                    p1 = ((2.0 * jf + 1.0) * z * p2 - jf * p3) / (jf + 1.0);
                }
                derivative = n * (z * p1 - p2) / (z * z - 1.0);
                let step = p1 / derivative;
                z -= step;
                if step.abs() < 1e-16 {
                    break;
                }
            }
            nodes[i] = -z;
            nodes[NODES - 1 - i] = z;
            let w = 2.0 / ((1.0 - z * z) * derivative * derivative);
            weights[i] = w;
            weights[NODES - 1 - i] = w;
        }
        (nodes, weights)
    })
}

/// The largest double below 1.
const ONE_BELOW: f64 = 1.0 - f64::EPSILON / 2.0;

/// The mass of `d` above its upper break point, which the panels do not cover: 1e-17 by
/// construction, or more when the break point is capped one ulp below 1.
pub(crate) fn tail_above(d: Beta, grid: &[f64]) -> f64 {
    d.sf(grid[grid.len() - 1])
}

/// The quantile break points of one distribution, ascending, inside `(0, 1)`. The outermost
/// two (the 1e-17 tails) are exact: they bound the integration. The others only place panel
/// boundaries, so the inverse's starting approximation is good enough for them.
pub(crate) fn break_points(d: Beta) -> Vec<f64> {
    let (a, b) = (d.alpha(), d.beta());
    let outer = PANEL_PROBABILITIES[0];
    let lower = crate::special::beta_inc_inv(a, b, outer, 1.0 - outer);
    // Doubles end one ulp below 1; with β < 1 the density is singular there and the mass
    // above the last double (~1e-8 for β = ½) is added back by `tail_above`.
    let upper = crate::special::beta_inc_inv(a, b, 1.0 - outer, outer).min(ONE_BELOW);
    let mut points = Vec::with_capacity(2 * PANEL_PROBABILITIES.len() + 1);
    points.push(lower);
    let inner = &PANEL_PROBABILITIES[1..];
    let approximate =
        |p: f64, q: f64| crate::special::initial_guess(a, b, p, q).clamp(lower, upper);
    for &p in inner {
        points.push(approximate(p, 1.0 - p));
    }
    points.push(approximate(0.5, 0.5));
    for &p in inner.iter().rev() {
        points.push(approximate(1.0 - p, p));
    }
    points.push(upper);
    points.sort_by(f64::total_cmp);
    points
}

/// The nodes of one panel: `x[m] = φ(t_m)` for the Gauss–Legendre nodes `t_m` and
/// `jacobian[m] = φ'(t_m)` (signed); `start = φ(−1)`.
pub(crate) struct Panel {
    pub(crate) start: f64,
    pub(crate) x: [f64; NODES],
    /// `1 − x[m]`, exact where the panel is parametrised by `ln(1 − x)`.
    pub(crate) y: [f64; NODES],
    pub(crate) jacobian: [f64; NODES],
}

impl Panel {
    /// Quadrature weight of node `m` for `∫ g(x) dx` over the panel.
    pub(crate) fn weight(&self, m: usize) -> f64 {
        gauss_legendre().1[m] * self.jacobian[m].abs()
    }

    /// `∫_{start}^{x[k]} g(x) dx` for every node `k`, from `g` at the nodes, by the
    /// Gauss–Legendre spectral integration matrix (exact for the interpolating polynomial).
    pub(crate) fn cumulative(&self, g: &[f64; NODES]) -> [f64; NODES] {
        let matrix = cumulative_matrix();
        let mut scaled = [0.0; NODES];
        for m in 0..NODES {
            scaled[m] = g[m] * self.jacobian[m];
        }
        let mut out = [0.0; NODES];
        for (k, row) in matrix.iter().enumerate() {
            out[k] = row.iter().zip(&scaled).map(|(a, b)| a * b).sum();
        }
        out
    }
}

/// `S[k][m] = ∫_{−1}^{t_k} ℓ_m(t) dt` for the Lagrange basis `ℓ_m` on the Gauss–Legendre
/// nodes, from the discrete Legendre expansion `ℓ_m = w_m Σ_n (n + ½) P_n(t_m) P_n` and
/// `∫_{−1}^{x} P_n = (P_{n+1}(x) − P_{n−1}(x)) / (2n + 1)`.
fn cumulative_matrix() -> &'static [[f64; NODES]; NODES] {
    static MATRIX: OnceLock<[[f64; NODES]; NODES]> = OnceLock::new();
    MATRIX.get_or_init(|| {
        let (nodes, weights) = gauss_legendre();
        // P_0..P_NODES at x.
        let legendre = |x: f64| {
            let mut p = [0.0; NODES + 1];
            p[0] = 1.0;
            p[1] = x;
            for n in 1..NODES {
                let nf = n as f64;
                p[n + 1] = ((2.0 * nf + 1.0) * x * p[n] - nf * p[n - 1]) / (nf + 1.0);
            }
            p
        };
        let mut matrix = [[0.0; NODES]; NODES];
        for (k, row) in matrix.iter_mut().enumerate() {
            let pk = legendre(nodes[k]);
            let mut integral = [0.0; NODES];
            integral[0] = nodes[k] + 1.0;
            for n in 1..NODES {
                integral[n] = (pk[n + 1] - pk[n - 1]) / (2.0 * n as f64 + 1.0);
            }
            for (m, entry) in row.iter_mut().enumerate() {
                let pm = legendre(nodes[m]);
                let mut sum = 0.0;
                for n in 0..NODES {
                    sum += (n as f64 + 0.5) * pm[n] * integral[n];
                }
                *entry = weights[m] * sum;
            }
        }
        matrix
    })
}

/// Calls `visit` for every panel of `[lo, hi]` cut at `cuts`.
pub(crate) fn for_each_panel(lo: f64, hi: f64, cuts: &[f64], mut visit: impl FnMut(&Panel)) {
    let mut points: Vec<f64> = Vec::with_capacity(cuts.len() + 2);
    points.push(lo);
    points.extend(cuts.iter().copied().filter(|&c| c > lo && c < hi));
    // Always cut at ½, so that a panel touching either end of (0, 1) gets the logarithmic
    // rule when it spans orders of magnitude there (where a density can be singular).
    if lo < 0.5 && hi > 0.5 {
        points.push(0.5);
    }
    points.push(hi);
    points.sort_by(f64::total_cmp);
    points.dedup();
    let nodes = gauss_legendre().0;
    let mut panel = Panel {
        start: 0.0,
        x: [0.0; NODES],
        y: [0.0; NODES],
        jacobian: [0.0; NODES],
    };
    for w in points.windows(2) {
        let (l, h) = (w[0], w[1]);
        if h <= l {
            continue;
        }
        if l > 0.0 && h <= 0.5 && h / l > 4.0 {
            // x = e^t.
            let (tl, th) = (l.ln(), h.ln());
            let (mid, half) = (0.5 * (tl + th), 0.5 * (th - tl));
            panel.start = l;
            for (m, &z) in nodes.iter().enumerate() {
                let x = (mid + half * z).exp();
                panel.x[m] = x;
                panel.y[m] = 1.0 - x;
                panel.jacobian[m] = half * x;
            }
        } else if h < 1.0 && l >= 0.5 && (1.0 - l) / (1.0 - h) > 4.0 {
            // 1 − x = e^t: x decreases in t, so the panel starts at h.
            let (tl, th) = ((1.0 - h).ln(), (1.0 - l).ln());
            let (mid, half) = (0.5 * (tl + th), 0.5 * (th - tl));
            panel.start = h;
            for (m, &z) in nodes.iter().enumerate() {
                let y = (mid + half * z).exp();
                panel.x[m] = 1.0 - y;
                panel.y[m] = y;
                panel.jacobian[m] = -half * y;
            }
        } else {
            let (mid, half) = (0.5 * (l + h), 0.5 * (h - l));
            panel.start = l;
            for (m, &z) in nodes.iter().enumerate() {
                panel.x[m] = mid + half * z;
                panel.y[m] = 1.0 - panel.x[m];
                panel.jacobian[m] = half;
            }
        }
        visit(&panel);
    }
}

/// P(best) and expected loss of each arm by quadrature:
/// `P(best_k) = ∫ f_k(x) Π_{j≠k} F_j(x) dx` and
/// `loss_k = E[max_j p_j] − E[p_k]` with `E[max] = Σ_k ∫ x f_k(x) Π_{j≠k} F_j(x) dx`.
/// The probabilities are normalised by their sum, so they lie in `[0, 1]` and sum to 1.
///
/// One grid serves every arm. In each panel every distribution function is computed exactly
/// once, at the panel's start, and carried to the nodes by integrating the densities
/// (spectral integration on the same nodes), so the cost is one incomplete beta per arm and
/// panel plus cheap density evaluations; `Π_{j≠k} F_j` comes from prefix and suffix products.
/// Break points closer than a quarter of the narrowest posterior's standard deviation are
/// merged, except near 0 and 1 where they differ in scale.
///
/// Near a rate of 1 doubles are coarse (spaced 1.1e-16, against 5e-324 near 0), so when the
/// arms' mean rate is above ½ the whole computation is mirrored (`p → 1 − p`,
/// `Beta(α, β) → Beta(β, α)`): the best arm is the one with the *smallest* mirrored rate,
/// `P(best_k) = ∫ f'_k(y) Π_{j≠k} S'_j(y) dy` with the survival functions `S'`, and
/// `loss_k = μ'_k − E[min_j p'_j]`.
pub(crate) fn best_of(arms: &[Beta]) -> (Vec<f64>, Vec<f64>) {
    let mean_sum: f64 = arms.iter().map(|a| a.mean()).sum();
    #[allow(clippy::cast_precision_loss)]
    if mean_sum > 0.5 * arms.len() as f64 {
        let mirrored: Vec<Beta> = arms
            .iter()
            .map(|d| Beta::new(d.beta(), d.alpha()).unwrap_or(*d))
            .collect();
        best_of_oriented(&mirrored, true)
    } else {
        best_of_oriented(arms, false)
    }
}

/// [`best_of`] on arms as given (`smallest = false`: best is the largest rate) or on mirrored
/// arms (`smallest = true`: best is the smallest rate).
fn best_of_oriented(arms: &[Beta], smallest: bool) -> (Vec<f64>, Vec<f64>) {
    let grids: Vec<Vec<f64>> = arms.iter().map(|&d| break_points(d)).collect();
    let lo = grids.iter().map(|g| g[0]).fold(f64::INFINITY, f64::min);
    let hi = grids
        .iter()
        .map(|g| g[g.len() - 1])
        .fold(f64::NEG_INFINITY, f64::max);
    let min_gap = 0.25
        * arms
            .iter()
            .map(|a| a.std_dev())
            .fold(f64::INFINITY, f64::min);
    let mut all: Vec<f64> = grids.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = Vec::with_capacity(all.len());
    for x in all {
        // Near 0 and 1 the panels are logarithmic: keep points that differ in scale there.
        if cuts.last().is_none_or(|&last| {
            x - last >= min_gap || x > 2.0 * last || 1.0 - last > 2.0 * (1.0 - x)
        }) {
            cuts.push(x);
        }
    }
    let k = arms.len();
    let mut prob_best = vec![0.0; k];
    let mut expected_max = 0.0;
    let mut pdf = vec![[0.0; NODES]; k];
    let mut cdf = vec![[0.0; NODES]; k];
    let mut suffix = vec![1.0; k + 1];
    for_each_panel(lo, hi, &cuts, |panel| {
        let mut any = false;
        for (j, &arm) in arms.iter().enumerate() {
            let g = &grids[j];
            for (m, value) in pdf[j].iter_mut().enumerate() {
                let (x, y) = (panel.x[m], panel.y[m]);
                // Upper side compared in 1 − x: near 1, x itself rounds to the top.
                *value = if x > g[0] && y > 1.0 - g[g.len() - 1] {
                    arm.pdf_pair(x, y)
                } else {
                    0.0
                };
            }
            let increments = panel.cumulative(&pdf[j]);
            if smallest {
                // The probability that arm j is above each node: S(start) − ∫ f.
                let at_start = sf_with_bounds(arm, g, panel.start);
                for (value, increment) in cdf[j].iter_mut().zip(increments) {
                    *value = (at_start - increment).clamp(0.0, 1.0);
                }
            } else {
                let at_start = cdf_with_bounds(arm, g, panel.start);
                for (value, increment) in cdf[j].iter_mut().zip(increments) {
                    *value = (at_start + increment).clamp(0.0, 1.0);
                }
            }
            any |= pdf[j].iter().any(|&p| p > 0.0);
        }
        if !any {
            return;
        }
        for m in 0..NODES {
            let weight = panel.weight(m);
            for j in (0..k).rev() {
                suffix[j] = suffix[j + 1] * cdf[j][m];
            }
            let mut prefix = 1.0;
            for i in 0..k {
                let c = weight * pdf[i][m] * prefix * suffix[i + 1];
                prob_best[i] += c;
                expected_max += panel.x[m] * c;
                prefix *= cdf[i][m];
            }
        }
    });
    // Each arm's mass above its last break point, at the other arms' distribution functions
    // there (flat at that height).
    for (i, &arm) in arms.iter().enumerate() {
        let g = &grids[i];
        let tail = tail_above(arm, g);
        if tail > 0.0 {
            let top = g[g.len() - 1];
            let mut product = tail;
            for (j, &other) in arms.iter().enumerate() {
                if j != i {
                    product *= if smallest {
                        sf_with_bounds(other, &grids[j], top)
                    } else {
                        cdf_with_bounds(other, &grids[j], top)
                    };
                }
            }
            prob_best[i] += product;
            expected_max += top * product;
        }
    }
    // The raw masses sum to `∫ (Π_j F_j)' = 1` only up to the rounding of the densities'
    // normalising constants and of the quadrature sums (a few 1e-15): a certain winner came
    // out at 1.000000000000007. Dividing by their sum makes the probabilities a distribution
    // by construction: each mass is ≥ 0 and the rounded sum of non-negative terms is at
    // least each of them, so every quotient is in [0, 1], and they sum to 1 within rounding.
    // `E[max]` is an integral against the same weights and gets the same normalisation.
    let total: f64 = prob_best.iter().sum();
    if total.is_finite() && total > 0.0 {
        for p in &mut prob_best {
            *p /= total;
        }
        expected_max /= total;
    }
    // Final guard, a no-op after the normalisation: the results are documented as in [0, 1].
    for p in &mut prob_best {
        *p = p.clamp(0.0, 1.0);
    }
    // `expected_max` is E[min] of the mirrored rates when `smallest`.
    let losses = arms
        .iter()
        .map(|a| {
            if smallest {
                (a.mean() - expected_max).max(0.0)
            } else {
                (expected_max - a.mean()).max(0.0)
            }
        })
        .collect();
    (prob_best, losses)
}

/// `1 − F(x)`, taken as exactly 1 or 0 outside the distribution's outermost break points.
fn sf_with_bounds(d: Beta, grid: &[f64], x: f64) -> f64 {
    if x <= grid[0] {
        1.0
    } else if x >= grid[grid.len() - 1] {
        0.0
    } else {
        d.sf(x)
    }
}

/// `F(x)`, taken as exactly 0 or 1 outside the distribution's outermost break points (the mass
/// there is below 1e-17).
pub(crate) fn cdf_with_bounds(d: Beta, grid: &[f64], x: f64) -> f64 {
    if x <= grid[0] {
        0.0
    } else if x >= grid[grid.len() - 1] {
        1.0
    } else {
        d.cdf(x)
    }
}
