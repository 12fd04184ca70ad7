//! One-dimensional Gauss–Legendre quadrature against Beta densities.
//!
//! Each integral `∫ f(x) g(x) dx` over a Beta density `f` is split into panels at quantiles
//! of `f` (and at the quantiles of every other distribution involved, so that a step in `g`
//! falls on a panel boundary), and each panel gets a 16-point Gauss–Legendre rule, in `ln x`
//! or `ln(1 − x)` when the panel spans orders of magnitude near an end of `[0, 1]`.

use std::sync::OnceLock;

use crate::beta::Beta;

/// Number of Gauss–Legendre nodes per panel.
const NODES: usize = 16;

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

/// The quantile break points of one distribution, ascending, inside `(0, 1)`.
pub(crate) fn break_points(d: Beta) -> Vec<f64> {
    let (a, b) = (d.alpha(), d.beta());
    let mut points = Vec::with_capacity(2 * PANEL_PROBABILITIES.len() + 1);
    for &p in &PANEL_PROBABILITIES {
        points.push(crate::special::beta_inc_inv(a, b, p, 1.0 - p));
    }
    points.push(crate::special::beta_inc_inv(a, b, 0.5, 0.5));
    for &p in PANEL_PROBABILITIES.iter().rev() {
        points.push(crate::special::beta_inc_inv(a, b, 1.0 - p, p));
    }
    points
}

/// `(∫ h(x) dx, ∫ x h(x) dx)` over `[lo, hi]` (the support that matters), with extra panel
/// boundaries at `cuts`, where `integrand(x)` returns `h(x)`.
pub(crate) fn integrate(
    lo: f64,
    hi: f64,
    cuts: &[f64],
    mut integrand: impl FnMut(f64) -> f64,
) -> (f64, f64) {
    let mut total = 0.0;
    let mut total_x = 0.0;
    for_each_node(lo, hi, cuts, |x, weight| {
        let value = integrand(x);
        total += weight * value;
        total_x += weight * x * value;
    });
    (total, total_x)
}

/// Calls `visit(x, weight)` for every quadrature node of `[lo, hi]` cut into panels at `cuts`.
fn for_each_node(lo: f64, hi: f64, cuts: &[f64], mut visit: impl FnMut(f64, f64)) {
    let mut points: Vec<f64> = Vec::with_capacity(cuts.len() + 2);
    points.push(lo);
    points.extend(cuts.iter().copied().filter(|&c| c > lo && c < hi));
    points.push(hi);
    points.sort_by(f64::total_cmp);
    points.dedup_by(|x, y| (*x - *y).abs() <= 1e-15 * y.abs().max(1e-300));
    let (nodes, weights) = gauss_legendre();
    for w in points.windows(2) {
        let (l, h) = (w[0], w[1]);
        if h <= l {
            continue;
        }
        if l > 0.0 && h <= 0.5 && h / l > 4.0 {
            // x = e^t.
            let (tl, th) = (l.ln(), h.ln());
            let (mid, half) = (0.5 * (tl + th), 0.5 * (th - tl));
            for (&z, &wt) in nodes.iter().zip(weights) {
                let x = (mid + half * z).exp();
                visit(x, wt * half * x);
            }
        } else if h < 1.0 && l >= 0.5 && (1.0 - l) / (1.0 - h) > 4.0 {
            // 1 − x = e^t.
            let (tl, th) = ((1.0 - h).ln(), (1.0 - l).ln());
            let (mid, half) = (0.5 * (tl + th), 0.5 * (th - tl));
            for (&z, &wt) in nodes.iter().zip(weights) {
                let y = (mid + half * z).exp();
                visit(1.0 - y, wt * half * y);
            }
        } else {
            let (mid, half) = (0.5 * (l + h), 0.5 * (h - l));
            for (&z, &wt) in nodes.iter().zip(weights) {
                visit(mid + half * z, wt * half);
            }
        }
    }
}

/// P(best) and expected loss of each arm by quadrature:
/// `P(best_k) = ∫ f_k(x) Π_{j≠k} F_j(x) dx` and
/// `loss_k = E[max_j p_j] − E[p_k]` with `E[max] = Σ_k ∫ x f_k(x) Π_{j≠k} F_j(x) dx`.
///
/// One grid serves every arm: at each node each density and distribution function is
/// evaluated once, and `Π_{j≠k} F_j` comes from prefix and suffix products. Break points
/// closer than a quarter of the narrowest posterior's standard deviation are merged, except
/// near 0 and 1 where they differ in scale.
pub(crate) fn best_of(arms: &[Beta]) -> (Vec<f64>, Vec<f64>) {
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
    let (mut pdf, mut cdf) = (vec![0.0; k], vec![0.0; k]);
    let mut suffix = vec![1.0; k + 1];
    for_each_node(lo, hi, &cuts, |x, weight| {
        let mut any = false;
        for (j, &arm) in arms.iter().enumerate() {
            let g = &grids[j];
            let inside = x > g[0] && x < g[g.len() - 1];
            pdf[j] = if inside { arm.pdf(x) } else { 0.0 };
            cdf[j] = cdf_with_bounds(arm, g, x);
            any |= pdf[j] > 0.0;
        }
        if !any {
            return;
        }
        for j in (0..k).rev() {
            suffix[j] = suffix[j + 1] * cdf[j];
        }
        let mut prefix = 1.0;
        for i in 0..k {
            let c = weight * pdf[i] * prefix * suffix[i + 1];
            prob_best[i] += c;
            expected_max += x * c;
            prefix *= cdf[i];
        }
    });
    let losses = arms
        .iter()
        .map(|a| (expected_max - a.mean()).max(0.0))
        .collect();
    (prob_best, losses)
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
