//! Latency figures: percentiles over a sorted sample and the summary the benches print.

use std::time::Duration;

/// The value at quantile `p` (0..=1) of an ascending sample, by nearest rank
/// (`round((n - 1) * p)`); zero for an empty sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[idx]
}

/// Milliseconds, with fractions.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `a / b`, NaN when `b` is not positive (a ratio against nothing means nothing).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// p50, p99 and max of a set of latencies, and the wall time the whole set took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub wall: Duration,
}

impl Summary {
    pub fn of(mut latencies: Vec<Duration>, wall: Duration) -> Summary {
        latencies.sort();
        Summary {
            count: latencies.len(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            wall,
        }
    }

    /// Completions per second over the wall time.
    pub fn per_second(&self) -> f64 {
        ratio(self.count as f64, self.wall.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let s = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(51)); // round(49.5) = 50 -> 51 ms
        assert_eq!(percentile(&s, 0.99), Duration::from_millis(99)); // round(98.01) = 98
        assert_eq!(percentile(&s, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&millis(&[7]), 0.99), Duration::from_millis(7));
    }

    #[test]
    fn summary_sorts_and_counts() {
        let s = Summary::of(millis(&[30, 10, 20, 40, 1000]), Duration::from_secs(2));
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Duration::from_millis(30));
        assert_eq!(s.p99, Duration::from_millis(1000));
        assert_eq!(s.max, Duration::from_millis(1000));
        assert_eq!(s.per_second(), 2.5);
    }

    #[test]
    fn ratio_of_nothing_is_nan() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
