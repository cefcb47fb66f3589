//! The store suite on the SQLite backend, plus SQLite-only checks (reopen, bounded size).

use std::sync::Arc;

use ros_store::sqlite::{SqliteOptions, SqliteStore};
use ros_store::{Store, StoreError};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

crate::store_suite!(sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_never_reuses_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (r_keep, r_del) = {
        let s = SqliteStore::open(&path).await.unwrap();
        let r1 = s.create("/k/keep", b"v".to_vec(), None).await.unwrap();
        s.create("/k/gone", b"v".to_vec(), None).await.unwrap();
        let (r_del, _) = s.delete("/k/gone", None).await.unwrap();
        // Compacting removes the tombstone at the newest revision.
        s.compact(r_del).await.unwrap();
        (r1, r_del)
    };
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), r_del);
    assert_eq!(
        s.get("/k/keep", None).await.unwrap().unwrap().mod_revision,
        r_keep
    );
    assert_eq!(s.get("/k/gone", None).await.unwrap(), None);
    let r = s.create("/k/new", b"v".to_vec(), None).await.unwrap();
    assert_eq!(r, r_del + 1, "revisions continue after a reopen");
    match s.get("/k/keep", Some(r_keep)).await {
        Err(StoreError::Compacted { compacted }) => assert_eq!(compacted, r_del),
        other => panic!("read below the compaction point after reopen: {other:?}"),
    }
}

fn db_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_bounds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        compaction_interval: Some(std::time::Duration::from_millis(50)),
        retention: std::time::Duration::ZERO,
        max_history: 100,
        ..SqliteOptions::default()
    };
    let s = Arc::new(
        SqliteStore::open_with(dir.path().join("state.db"), options)
            .await
            .unwrap(),
    );
    // 20 writers rewrite their own key again and again: live data stays constant while
    // history grows by 2,000 revisions a round.
    let round = |s: Arc<SqliteStore>| async move {
        let writers: Vec<_> = (0..20)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    let key = format!("/churn/{w}");
                    for _ in 0..100 {
                        match s.get(&key, None).await.unwrap() {
                            None => s.create(&key, vec![7u8; 2048], None).await.unwrap(),
                            Some(kv) => s
                                .update(&key, vec![7u8; 2048], kv.mod_revision)
                                .await
                                .unwrap(),
                        };
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        // Let the compactor catch up with the round.
        let target = s.current_revision().await.unwrap() - 100;
        for _ in 0..600 {
            if s.compacted_revision().await.unwrap() >= target {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the automatic compactor did not reach revision {target}");
    };
    round(s.clone()).await;
    let after_one = db_bytes(dir.path());
    for _ in 0..3 {
        round(s.clone()).await;
    }
    let after_four = db_bytes(dir.path());
    // Four times the writes, not four times the size: history is bounded.
    assert!(
        after_four < after_one * 2,
        "database grew from {after_one} to {after_four} bytes with constant live data"
    );
    let live = s.range("/churn/", None, 0, None).await.unwrap();
    assert_eq!(live.kvs.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_the_log() {
    // A live buffer of 2 transactions: a watcher that does not read falls behind at once and
    // must switch back to the log, several times, without losing or repeating events.
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        watch_buffer: 2,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir.path().join("state.db"), options)
        .await
        .unwrap();
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/lag/", from).await.unwrap();
    let mut expected = Vec::new();
    for round in 0..5 {
        for i in 0..300 {
            let key = format!("/lag/{round}/{i}");
            expected.push((s.create(&key, b"x".to_vec(), None).await.unwrap(), key));
        }
        // Read only part of the backlog before the next burst.
        for _ in 0..100 {
            w.next().await.unwrap().unwrap();
        }
    }
    let mut got: Vec<(i64, String)> = Vec::new();
    let skipped = 5 * 100;
    while got.len() < expected.len() - skipped {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), w.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        got.push((e.revision(), e.kv.key));
    }
    // The unread tail is exactly the last writes, in order; nothing more is pending.
    assert_eq!(got, expected[skipped..].to_vec());
    let r = s.create("/lag/end", b"x".to_vec(), None).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = SqliteStore::open(&path).await.unwrap();
    // A second store on the same file in this or another process would be a second writer.
    let lock = std::fs::File::open(dir.path().join("state.db.lock")).unwrap();
    assert!(
        matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "the writer lock is held while the store is open"
    );
    drop(lock);
    let r = first.create("/one", b"1".to_vec(), None).await.unwrap();
    drop(first);
    // Once the first store is gone, the database opens again (waiting for its writer to stop).
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.current_revision().await.unwrap(), r);
}
