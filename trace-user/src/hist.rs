//! Power-of-two histograms, printed the way bcc's tools print them.

use std::io::{self, Write};

/// Counts by power-of-two bucket: bucket 0 holds 0, bucket k holds [2^(k-1), 2^k).
#[derive(Clone, Debug)]
pub struct Log2Hist {
    buckets: [u64; 65],
    pub count: u64,
}

impl Default for Log2Hist {
    fn default() -> Self {
        Self {
            buckets: [0; 65],
            count: 0,
        }
    }
}

impl Log2Hist {
    pub fn add(&mut self, v: u64) {
        self.buckets[(u64::BITS - v.leading_zeros()) as usize] += 1;
        self.count += 1;
    }

    /// Adds counts by bucket, numbered as here (the kernel's `trace_common::agg` histograms).
    pub fn add_buckets(&mut self, counts: &[u64]) {
        for (b, &n) in self.buckets.iter_mut().zip(counts) {
            *b += n;
            self.count += n;
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Log2Hist) {
        self.add_buckets(&other.buckets);
    }

    /// The counts added since `earlier`, a copy of this histogram taken before.
    pub fn minus(&self, earlier: &Log2Hist) -> Log2Hist {
        let mut d = Log2Hist::default();
        for (k, (now, then)) in self.buckets.iter().zip(&earlier.buckets).enumerate() {
            d.buckets[k] = now.saturating_sub(*then);
        }
        d.count = d.buckets.iter().sum();
        d
    }

    /// (low, high, count) of each bucket from the first to the last non-empty one.
    pub fn rows(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let first = self.buckets.iter().position(|&c| c > 0).unwrap_or(0);
        let last = self.buckets.iter().rposition(|&c| c > 0).unwrap_or(0);
        (first..=last).map(|k| {
            let (lo, hi) = if k == 0 {
                (0, 0)
            } else {
                (1u64 << (k - 1), (1u64 << (k - 1)).saturating_mul(2) - 1)
            };
            (lo, hi, self.buckets[k])
        })
    }

    /// bcc's layout: `lo -> hi : count |****   |`.
    pub fn write(&self, out: &mut impl Write, unit: &str) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let max = self.buckets.iter().copied().max().unwrap_or(1).max(1);
        writeln!(out, "{:>24} : count     distribution", unit)?;
        for (lo, hi, c) in self.rows() {
            let stars = (c * 40).div_ceil(max) as usize;
            writeln!(
                out,
                "{lo:>10} -> {hi:<10} : {c:<9} |{:<40}|",
                "*".repeat(stars.min(40))
            )?;
        }
        Ok(())
    }
}

impl serde::Serialize for Log2Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Row {
            lo: u64,
            hi: u64,
            count: u64,
        }
        s.collect_seq(
            self.rows()
                .filter(|r| self.count > 0 || r.2 > 0)
                .map(|(lo, hi, count)| Row { lo, hi, count }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_layout() {
        let mut h = Log2Hist::default();
        for v in [0, 1, 2, 3, 1000, 1024] {
            h.add(v);
        }
        let rows: Vec<_> = h.rows().collect();
        assert_eq!(rows[0], (0, 0, 1));
        assert_eq!(rows[1], (1, 1, 1));
        assert_eq!(rows[2], (2, 3, 2));
        assert_eq!(rows.last(), Some(&(1024, 2047, 1)));
        assert!(rows.contains(&(512, 1023, 1)));
        let mut out = Vec::new();
        h.write(&mut out, "bytes").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "         2 -> 3          : 2         |****************************************|"
            ),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&h).unwrap()[2]["count"], 2);
    }
}
