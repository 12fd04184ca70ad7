//! A streaming latency sketch with a distribution-free interval for a quantile.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::{CanaryError, Result};

/// Largest latency the sketch records exactly enough (one hour, in microseconds); larger
/// values are clamped to it.
pub const LATENCY_MICROS_MAX: u64 = 3_600_000_000;

/// Latencies in microseconds, kept in a fixed-size HDR histogram (two significant digits:
/// any quantile is within 1 % of the exact order statistic, in about 26 KiB). Record raw samples in O(1),
/// merge sketches from several hosts, and read a quantile with an order-statistic interval.
///
/// ```
/// use canary::LatencySketch;
///
/// let mut sketch = LatencySketch::new();
/// for ms in 1..=1000u64 {
///     sketch.record_micros(ms * 1000);
/// }
/// let p95 = sketch.quantile(0.95).unwrap();
/// assert!((p95 as f64 - 950_000.0).abs() / 950_000.0 < 0.01);
/// let (lo, hi) = sketch.quantile_interval(0.95, 1.96).unwrap();
/// assert!(lo <= p95 && p95 <= hi);
/// ```
#[derive(Clone)]
pub struct LatencySketch {
    histogram: Histogram<u64>,
}

impl fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencySketch")
            .field("count", &self.histogram.len())
            .finish()
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.histogram == other.histogram
    }
}

impl LatencySketch {
    /// An empty sketch.
    #[must_use]
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 2)
            .expect("constant bounds (1 µs ..= 1 h, 2 digits) are valid for hdrhistogram");
        LatencySketch { histogram }
    }

    /// Records one latency in microseconds (0 counts as 1 µs; above
    /// [`LATENCY_MICROS_MAX`] is clamped).
    pub fn record_micros(&mut self, micros: u64) {
        let v = micros.clamp(1, LATENCY_MICROS_MAX);
        // In range by construction, so `saturating_record` never loses the sample.
        self.histogram.saturating_record(v);
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_micros(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records `count` samples of the same latency.
    pub fn record_n_micros(&mut self, micros: u64, count: u64) {
        let v = micros.clamp(1, LATENCY_MICROS_MAX);
        // In range, so only a counter overflow could fail; saturate instead.
        if self.histogram.record_n(v, count).is_err() {
            let _ = self.histogram.record_n(v, u64::MAX - self.histogram.len());
        }
    }

    /// Adds every sample of `other`.
    ///
    /// # Errors
    /// [`CanaryError::InvalidObservation`] if the counts would overflow.
    pub fn merge(&mut self, other: &LatencySketch) -> Result<()> {
        self.histogram
            .add(&other.histogram)
            .map_err(|e| CanaryError::InvalidObservation {
                reason: format!("cannot merge latency sketches: {e:?}"),
            })
    }

    /// Number of samples.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether no sample was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The `q`-quantile in microseconds, or `None` when empty or `q` is not in `(0, 1)`.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.is_empty() || !(q > 0.0 && q < 1.0) {
            return None;
        }
        Some(self.histogram.value_at_quantile(q))
    }

    /// A distribution-free interval for the `q`-quantile: the order statistics at ranks
    /// `n·q ∓ z·√(n·q·(1−q))` (the normal approximation of the binomial rank distribution).
    /// `z` is the normal quantile of the wanted one-sided confidence (1.645 for 95 %); with few
    /// samples the interval widens to the sample range. `None` when empty, `q ∉ (0, 1)` or
    /// `z` is negative or not finite.
    #[must_use]
    pub fn quantile_interval(&self, q: f64, z: f64) -> Option<(u64, u64)> {
        if self.is_empty() || !(q > 0.0 && q < 1.0) || !(z.is_finite() && z >= 0.0) {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52 in practice
        let n = self.histogram.len() as f64;
        let centre = n * q;
        let half = z * (n * q * (1.0 - q)).sqrt();
        let lo_rank = (centre - half).floor().max(1.0);
        let hi_rank = (centre + half).ceil().min(n);
        let lo = self.histogram.value_at_quantile((lo_rank / n).min(1.0));
        let hi = self.histogram.value_at_quantile((hi_rank / n).min(1.0));
        Some((lo, hi))
    }
}
