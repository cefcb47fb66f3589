//! Restart delay for machined: doubles after each quick exit, capped, and starts over once a
//! run has lasted long enough to count as healthy.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub healthy_after: Duration,
    quick_exits: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        Backoff {
            initial,
            max,
            healthy_after,
            quick_exits: 0,
        }
    }

    /// The delay before the next start, given how long the last run lasted.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            self.quick_exits = 0;
        }
        let factor = 1u32 << self.quick_exits.min(16);
        self.quick_exits = self.quick_exits.saturating_add(1);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_then_caps() {
        let mut b = Backoff::new(secs(1), secs(10), secs(60));
        let delays: Vec<u64> = (0..7).map(|_| b.after_exit(secs(1)).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn a_healthy_run_resets_the_delay() {
        let mut b = Backoff::new(secs(1), secs(10), secs(60));
        for _ in 0..5 {
            b.after_exit(Duration::ZERO);
        }
        assert_eq!(b.after_exit(secs(59)), secs(10));
        assert_eq!(b.after_exit(secs(60)), secs(1));
        assert_eq!(b.after_exit(secs(0)), secs(2));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_millis(500), secs(30), secs(60));
        let mut last = Duration::ZERO;
        for _ in 0..100 {
            last = b.after_exit(Duration::ZERO);
        }
        assert_eq!(last, secs(30));
    }
}
