//! Background work: lease expiry and the automatic compactor. Both hold only a weak handle,
//! so they end when the store is dropped.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::Instant;

use super::writer::Op;
use super::{Inner, SqliteOptions, now_ms};
use crate::Revision;

pub(super) fn spawn(inner: Weak<Inner>, options: SqliteOptions) {
    let leases = inner.clone();
    let every = options.lease_check_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = leases.upgrade() else {
                return;
            };
            if let Err(e) = inner.write(Op::ExpireLeases { now_ms: now_ms() }).await {
                tracing::warn!("store lease expiry: {e}");
            }
        }
    });
    if let Some(every) = options.compaction_interval {
        tokio::spawn(async move {
            let mut history = RevisionHistory::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let current = match inner.readers.read(|_, snap| Ok(snap)).await {
                    Ok(snap) => snap,
                    Err(e) => {
                        tracing::warn!("store compactor: {e}");
                        continue;
                    }
                };
                history.record(Instant::now(), current.revision);
                let target = history
                    .target(Instant::now(), &options, current.revision)
                    .max(current.compacted);
                if target > current.compacted {
                    match inner.compact(target).await {
                        Ok(()) => tracing::debug!("store compacted to revision {target}"),
                        Err(e) => tracing::warn!("store compactor: {e}"),
                    }
                }
            }
        });
    }
}

/// Samples of (time, revision) to find the newest revision that is older than the retention.
#[derive(Default)]
struct RevisionHistory {
    samples: VecDeque<(Instant, Revision)>,
}

impl RevisionHistory {
    fn record(&mut self, now: Instant, revision: Revision) {
        self.samples.push_back((now, revision));
    }

    /// The revision to compact to: the newest one seen at least `retention` ago, or more
    /// recent when history exceeds `max_history` revisions.
    fn target(&mut self, now: Instant, options: &SqliteOptions, current: Revision) -> Revision {
        // Keep only the newest sample older than the retention, and the younger ones.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= options.retention)
        {
            self.samples.pop_front();
        }
        let by_age = match self.samples.front() {
            Some((t, rev)) if now.duration_since(*t) >= options.retention => *rev,
            _ => 0,
        };
        by_age.max(current - options.max_history).max(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn options(retention_secs: u64, max_history: i64) -> SqliteOptions {
        SqliteOptions {
            retention: Duration::from_secs(retention_secs),
            max_history,
            ..SqliteOptions::default()
        }
    }

    #[test]
    fn keeps_history_younger_than_the_retention() {
        let start = Instant::now();
        let mut h = RevisionHistory::default();
        h.record(start, 10);
        h.record(start + Duration::from_secs(60), 50);
        h.record(start + Duration::from_secs(120), 90);
        let opts = options(100, 1_000_000);
        assert_eq!(h.target(start + Duration::from_secs(120), &opts, 90), 10);
        // After 170 s the sample at 60 s is the newest one older than 100 s.
        assert_eq!(h.target(start + Duration::from_secs(170), &opts, 90), 50);
    }

    #[test]
    fn max_history_bounds_young_history() {
        let start = Instant::now();
        let mut h = RevisionHistory::default();
        h.record(start, 5_000);
        assert_eq!(h.target(start, &options(300, 1_000), 5_000), 4_000);
        assert_eq!(h.target(start, &options(300, 10_000), 5_000), 0);
    }
}
