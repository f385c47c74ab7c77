//! Histograms made from the kernel's log2 buckets of microseconds (`--full`): the kernel
//! counts each write-to-ACK time and each sleep in a power-of-two bucket, so the exported
//! buckets are powers of four microseconds (1 µs … 16.8 s, then +Inf), each the sum of the
//! two log2 buckets below it. Counts are exact; `_sum` is exact where the kernel keeps the
//! total (sleeps), else the buckets' midpoints (write-to-ACK: an estimate, said in the help).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

use super::labels::Labels;
use crate::hist::Log2Hist;

/// Bucket bounds: 4^0 … 4^12 µs, as seconds.
const BOUNDS: usize = 13;

#[derive(Clone, Debug, Default)]
struct State {
    /// Counts per bound (not cumulative), the last one past every bound (+Inf).
    counts: [u64; BOUNDS + 1],
    count: u64,
    sum_s: f64,
}

/// One histogram per label set, fed with what each refresh added.
#[derive(Clone, Debug, Default)]
pub struct Log2Family(Arc<RwLock<HashMap<Labels, State>>>);

impl Log2Family {
    /// Adds `h`'s counts (microseconds) to `labels`' histogram; `sum_s`: their exact total in
    /// seconds where known, else estimated from the buckets.
    pub fn add(&self, labels: &Labels, h: &Log2Hist, sum_s: Option<f64>) {
        if h.count == 0 {
            return;
        }
        let mut map = self.0.write().expect("not poisoned");
        let s = map.entry(labels.clone()).or_default();
        let mut estimate = 0.0;
        for (lo, hi, n) in h.rows() {
            // Values in [lo, hi] µs (hi = 2^k - 1): under the first bound 4^j ≥ hi.
            let j = if hi <= 1 {
                0
            } else {
                (u64::BITS - hi.leading_zeros()).div_ceil(2) as usize
            };
            s.counts[j.min(BOUNDS)] += n;
            estimate += n as f64 * (lo + hi) as f64 / 2e6;
        }
        s.count += h.count;
        s.sum_s += sum_s.unwrap_or(estimate);
    }
}

impl TypedMetric for Log2Family {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Log2Family {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.read().expect("not poisoned");
        for (labels, s) in map.iter() {
            let buckets: Vec<(f64, u64)> = s
                .counts
                .iter()
                .enumerate()
                .map(|(j, &n)| {
                    let bound = if j == BOUNDS {
                        f64::INFINITY
                    } else {
                        4f64.powi(j as i32) / 1e6
                    };
                    (bound, n)
                })
                .collect();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(s.sum_s, s.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_land_under_the_next_power_of_four() {
        let f = Log2Family::default();
        let mut h = Log2Hist::default();
        for us in [0, 1, 3, 4, 5, 100, 1_000_000] {
            h.add(us);
        }
        let labels: Labels = vec![("comm", "x".to_owned())];
        f.add(&labels, &h, None);
        let map = f.0.read().unwrap();
        let s = &map[&labels];
        // 0 and 1 ≤ 1 µs; 3 ≤ 4; 4, 5 ≤ 16 (their log2 bucket [4, 7]); 100 ≤ 256 ([64, 127]);
        // 10^6 ≤ 4^10 µs (1.05 s; [524288, 1048575]).
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[2], 2);
        assert_eq!(s.counts[4], 1);
        assert_eq!(s.counts[10], 1);
        assert_eq!(s.count, 7);
        assert_eq!(s.counts.iter().sum::<u64>(), 7);
    }
}
