//! A lock-free latency histogram for hot paths on FreeSWITCH's threads (the event handler).
//!
//! Hand-written rather than a crate: recording must be one relaxed atomic add from any number of threads
//! with no allocation, and the common histogram crates either need `&mut` (hdrhistogram) or float
//! arithmetic per sample. Buckets are log-linear: four per power of two of nanoseconds, so a reported
//! quantile is at most 19 % above the true value.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two.
const SUB: usize = 4;
/// Powers of two covered: 1 ns .. 2^41 ns (about 36 minutes); larger samples share the last bucket.
const OCTAVES: usize = 40;
const BUCKETS: usize = OCTAVES * SUB;

/// Counts of samples per bucket, plus the running maximum.
pub struct Histogram {
    /// Samples per bucket; bucket `i` covers `[lower(i), lower(i+1))` nanoseconds.
    buckets: [AtomicU64; BUCKETS],
    /// Largest sample seen, exact.
    max: AtomicU64,
    /// Sum of all samples (for Prometheus' `_sum`).
    sum: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let octave = 63 - ns.leading_zeros() as usize; // ns >= 4 → octave >= 2
        let sub = ((ns >> (octave - 2)) & (SUB as u64 - 1)) as usize;
        ((octave - 1) * SUB + sub).min(BUCKETS - 1)
    }

    /// The smallest value that falls in bucket `i`.
    fn lower(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let octave = i / SUB + 1;
        let sub = (i % SUB) as u64;
        (1u64 << octave) + (sub << (octave - 2))
    }

    /// Records one sample.
    pub fn record(&self, ns: u64) {
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
        // Read before writing: a new maximum is rare, and a read leaves the shared cache line unowned.
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(ns, Ordering::Relaxed);
        }
        self.sum.fetch_add(ns, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Snapshot {
            counts,
            max: self.max.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }

    /// Forgets every sample (a fresh load of the module starts from zero).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of the histogram's counts.
pub struct Snapshot {
    /// Samples per bucket.
    counts: Vec<u64>,
    /// Largest sample.
    max: u64,
    /// Sum of the samples.
    sum: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Samples known to be at most `ns`: whole buckets whose every value is `<= ns`. Exact when `ns + 1` is a
    /// bucket boundary (every power of two is), as Prometheus' cumulative `le` buckets need.
    pub fn count_at_most(&self, ns: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|&(i, _)| i + 1 < BUCKETS && Histogram::lower(i + 1) - 1 <= ns)
            .map(|(_, c)| c)
            .sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), capped by the maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = if i + 1 < BUCKETS {
                    Histogram::lower(i + 1) - 1
                } else {
                    u64::MAX
                };
                return upper.min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_their_values() {
        for ns in [0u64, 1, 3, 4, 5, 7, 8, 100, 1000, 1_000_000, 123_456_789] {
            let i = Histogram::index(ns);
            assert!(Histogram::lower(i) <= ns, "{ns}");
            assert!(i + 1 == BUCKETS || ns < Histogram::lower(i + 1), "{ns}");
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::new();
        for ns in 1..=1000u64 {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile(0.5);
        assert!((500..=600).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(s.max(), 1000);
        assert_eq!(s.sum(), 500_500);
        assert_eq!(s.count_at_most(255), 255);
        assert_eq!(s.count_at_most(1023), 1000);
        h.reset();
        assert_eq!(h.snapshot().quantile(0.5), 0);
    }
}
