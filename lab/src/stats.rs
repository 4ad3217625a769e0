//! Latency statistics over recorded samples (microseconds).

use serde::{Deserialize, Serialize};

/// Summary of a latency sample, all in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub avg_us: f64,
    /// Median (nearest rank).
    pub p50_us: f64,
    /// 90th percentile (nearest rank).
    pub p90_us: f64,
    /// 99th percentile (nearest rank).
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that
/// at least `q` of the samples are <= it.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

impl Latency {
    /// Summarises samples (sorted in place).
    pub fn from_samples(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let sum: u64 = samples.iter().map(|&s| s as u64).sum();
        Self {
            count: samples.len() as u64,
            avg_us: sum as f64 / samples.len() as f64,
            p50_us: percentile(samples, 0.50),
            p90_us: percentile(samples, 0.90),
            p99_us: percentile(samples, 0.99),
            max_us: *samples.last().unwrap() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn one_to_hundred() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.count, 100);
        assert_eq!(l.avg_us, 50.5);
        assert_eq!(l.p50_us, 50.0);
        assert_eq!(l.p90_us, 90.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.max_us, 100.0);
    }

    #[test]
    fn single_and_skewed() {
        let mut v = vec![7];
        let l = Latency::from_samples(&mut v);
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (7.0, 7.0, 7.0));
        let mut v = vec![1; 99];
        v.push(1000);
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p99_us, 1.0);
        assert_eq!(l.max_us, 1000.0);
        assert!((l.avg_us - 10.99).abs() < 1e-9);
    }

    #[test]
    fn percentile_edges() {
        let v = [10, 20, 30];
        assert_eq!(percentile(&v, 0.0), 10.0);
        assert_eq!(percentile(&v, 1.0), 30.0);
        assert_eq!(percentile(&v, 0.34), 20.0);
    }
}
