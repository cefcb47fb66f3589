//! The cases of the store suite. Each takes a fresh, empty store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ros_store::{EventKind, Revision, Store, StoreError, WatchEvent, WatchStream};

type S = Arc<dyn Store>;

/// Guards against a hung test; never used to judge speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(PATIENCE, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {PATIENCE:?}"),
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub async fn revisions_increase(s: S) {
    let start = s.current_revision().await.unwrap();
    let r1 = s.create("/r/a", v("1"), None).await.unwrap();
    assert!(r1 > start, "create got revision {r1}, store was at {start}");
    let r2 = s.create("/r/b", v("1"), None).await.unwrap();
    let r3 = s.update("/r/a", v("2"), r1).await.unwrap();
    assert!(
        r1 < r2 && r2 < r3,
        "revisions {r1}, {r2}, {r3} must increase"
    );
    assert_eq!(s.current_revision().await.unwrap(), r3);
    let a = s.get("/r/a", None).await.unwrap().expect("/r/a exists");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.value),
        (r1, r3, v("2"))
    );
    assert_eq!(a.lease, 0);
    let (r4, _) = s.delete("/r/b", None).await.unwrap();
    assert!(r4 > r3);
    assert_eq!(s.current_revision().await.unwrap(), r4);
}

pub async fn get_at_revision(s: S) {
    let r1 = s.create("/g/k", v("one"), None).await.unwrap();
    let r2 = s.update("/g/k", v("two"), r1).await.unwrap();
    let (r3, _) = s.delete("/g/k", Some(r2)).await.unwrap();
    let r4 = s.create("/g/k", v("three"), None).await.unwrap();
    let at = |r| {
        let s = s.clone();
        async move { s.get("/g/k", Some(r)).await.unwrap().map(|kv| kv.value) }
    };
    assert_eq!(at(r1).await, Some(v("one")));
    assert_eq!(at(r2).await, Some(v("two")));
    assert_eq!(at(r3).await, None, "deleted at {r3}");
    assert_eq!(at(r4).await, Some(v("three")));
    assert_eq!(at(r1 - 1).await, None, "not yet created");
    let now = s.get("/g/k", None).await.unwrap().unwrap();
    assert_eq!(
        now.create_revision, r4,
        "a re-created key starts a new lifetime"
    );
    match s.get("/g/k", Some(r4 + 100)).await {
        Err(StoreError::FutureRevision) => {}
        other => panic!("get at a future revision: {other:?}"),
    }
}

pub async fn range_prefix_limit_continue(s: S) {
    for i in 0..25 {
        s.create(&format!("/p/items/{i:03}"), v(&i.to_string()), None)
            .await
            .unwrap();
    }
    // Neighbours that a prefix must not catch.
    s.create("/p/items", v("parent"), None).await.unwrap();
    s.create("/p/itemsX/1", v("x"), None).await.unwrap();
    s.create("/p/other/1", v("o"), None).await.unwrap();

    let all = s.range("/p/items/", None, 0, None).await.unwrap();
    assert_eq!(all.kvs.len(), 25);
    assert!(!all.more);
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "range is sorted by key");

    let p1 = s.range("/p/items/", None, 10, None).await.unwrap();
    assert_eq!(p1.kvs.len(), 10);
    assert!(p1.more);
    assert_eq!(p1.kvs[0].key, "/p/items/000");
    let list_rev = p1.revision;

    // Changes after the first page must not show in later pages read at the list revision.
    s.create("/p/items/0105", v("late"), None).await.unwrap();
    let victim = s.get("/p/items/020", None).await.unwrap().unwrap();
    s.delete("/p/items/020", None).await.unwrap();
    assert_ne!(s.current_revision().await.unwrap(), list_rev);

    let last = p1.kvs.last().unwrap().key.clone();
    let p2 = s
        .range("/p/items/", Some(&last), 10, Some(list_rev))
        .await
        .unwrap();
    assert_eq!(p2.revision, list_rev);
    assert_eq!(p2.kvs.len(), 10);
    assert!(p2.more);
    assert_eq!(p2.kvs[0].key, "/p/items/010");
    let last = p2.kvs.last().unwrap().key.clone();
    let p3 = s
        .range("/p/items/", Some(&last), 10, Some(list_rev))
        .await
        .unwrap();
    assert_eq!(p3.kvs.len(), 5);
    assert!(!p3.more);
    assert!(
        p3.kvs.contains(&victim),
        "deleted later, still in the list at {list_rev}"
    );
    let paged: Vec<_> = p1
        .kvs
        .iter()
        .chain(&p2.kvs)
        .chain(&p3.kvs)
        .map(|kv| kv.key.clone())
        .collect();
    assert_eq!(paged, keys, "pages at one revision equal the full list");

    // An exact page boundary: no `more`.
    let exact = s
        .range("/p/items/", Some("/p/items/014"), 10, Some(list_rev))
        .await
        .unwrap();
    assert_eq!(exact.kvs.len(), 10);
    assert!(!exact.more);

    let now = s.range("/p/items/", None, 0, None).await.unwrap();
    assert_eq!(now.kvs.len(), 25, "one created, one deleted");
    assert!(now.kvs.iter().any(|kv| kv.key == "/p/items/0105"));

    let everything = s.range("", None, 0, None).await.unwrap();
    assert_eq!(everything.kvs.len(), 28);
    assert_eq!(everything.revision, s.current_revision().await.unwrap());
}

pub async fn create_if_absent(s: S) {
    let r1 = s.create("/c/k", v("a"), None).await.unwrap();
    match s.create("/c/k", v("b"), None).await {
        Err(StoreError::AlreadyExists) => {}
        other => panic!("second create: {other:?}"),
    }
    assert_eq!(s.get("/c/k", None).await.unwrap().unwrap().value, v("a"));
    assert_eq!(
        s.current_revision().await.unwrap(),
        r1,
        "a failed create writes nothing"
    );
    s.delete("/c/k", None).await.unwrap();
    let r3 = s.create("/c/k", v("c"), None).await.unwrap();
    assert!(r3 > r1);
}

pub async fn cas_conflict(s: S) {
    let r1 = s.create("/cas/k", v("a"), None).await.unwrap();
    let r2 = s.update("/cas/k", v("b"), r1).await.unwrap();
    match s.update("/cas/k", v("stale"), r1).await {
        Err(StoreError::Conflict { current: Some(cur) }) => {
            assert_eq!((cur.mod_revision, cur.value), (r2, v("b")));
        }
        other => panic!("stale update: {other:?}"),
    }
    match s.delete("/cas/k", Some(r1)).await {
        Err(StoreError::Conflict { current: Some(cur) }) => assert_eq!(cur.mod_revision, r2),
        other => panic!("stale delete: {other:?}"),
    }
    match s.update("/cas/missing", v("x"), r1).await {
        Err(StoreError::NotFound) => {}
        other => panic!("update of a missing key: {other:?}"),
    }
    match s.delete("/cas/missing", None).await {
        Err(StoreError::NotFound) => {}
        other => panic!("delete of a missing key: {other:?}"),
    }
    assert_eq!(s.current_revision().await.unwrap(), r2);

    // Racing updates from one revision: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.update("/cas/k", v(&format!("w{i}")), r2).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("racing update: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one of the racing updates wins");
}

pub async fn delete_returns_value(s: S) {
    let r1 = s.create("/d/k", v("last"), None).await.unwrap();
    let mut w = s.watch("/d/", r1).await.unwrap();
    let (r2, old) = s.delete("/d/k", Some(r1)).await.unwrap();
    assert_eq!(
        (old.key.as_str(), old.value.clone(), old.mod_revision),
        ("/d/k", v("last"), r1)
    );
    assert_eq!(s.get("/d/k", None).await.unwrap(), None);
    let e = next_event(&mut w).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/d/k", r2));
    assert_eq!(e.prev.map(|p| p.value), Some(v("last")));
}

/// A write done by the suite: (revision, key, kind), to compare with watch events.
type Written = (Revision, String, EventKind);

async fn write_mix(s: &S, prefix: &str, n: usize) -> Vec<Written> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}{}", i % 7);
        let written = match s.get(&key, None).await.unwrap() {
            None => (
                s.create(&key, v(&i.to_string()), None).await.unwrap(),
                EventKind::Put,
            ),
            Some(kv) if i % 3 == 0 => (
                s.delete(&key, Some(kv.mod_revision)).await.unwrap().0,
                EventKind::Delete,
            ),
            Some(kv) => (
                s.update(&key, v(&i.to_string()), kv.mod_revision)
                    .await
                    .unwrap(),
                EventKind::Put,
            ),
        };
        out.push((written.0, key, written.1));
    }
    out
}

fn assert_events_match(events: &[WatchEvent], expected: &[Written]) {
    let got: Vec<Written> = events
        .iter()
        .map(|e| (e.revision(), e.kv.key.clone(), e.kind))
        .collect();
    for pair in got.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "events out of order or duplicated: {pair:?}"
        );
    }
    assert_eq!(got, expected, "watch events differ from the writes");
}

pub async fn watch_history_then_live(s: S) {
    let base = s.current_revision().await.unwrap();
    let mut expected = write_mix(&s, "/w/a/", 30).await;
    write_mix(&s, "/w/b/", 10).await; // not under the watched prefix
    let mut w = s.watch("/w/a/", base).await.unwrap();
    expected.extend(write_mix(&s, "/w/a/", 30).await);
    let mut events = Vec::new();
    while events.len() < expected.len() {
        events.push(next_event(&mut w).await);
    }
    assert_events_match(&events, &expected);
    // prev values: an update's prev is the value before it.
    for e in &events {
        if e.kind == EventKind::Put && e.kv.create_revision != e.kv.mod_revision {
            let prev = e
                .prev
                .as_ref()
                .expect("an update carries its previous value");
            assert_eq!(prev.key, e.kv.key);
            assert!(prev.mod_revision < e.kv.mod_revision);
        }
    }
    // Nothing more is pending.
    let r = s.create("/w/a/end", v("end"), None).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), r);
}

pub async fn watch_concurrent_writers(s: S) {
    // Watches starting while writers run must see every write after their start, once.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move { write_mix(&s, &format!("/wc/{t}/"), 40).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/wc/", from).await.unwrap();
    let mut all = Vec::new();
    for t in writers {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|w| w.0);
    let expected: Vec<Written> = all.into_iter().filter(|(r, _, _)| *r > from).collect();
    let mut events = Vec::new();
    while events.len() < expected.len() {
        events.push(next_event(&mut w).await);
    }
    assert_events_match(&events, &expected);
}

pub async fn watch_slow_consumer(s: S) {
    // The watcher does not read while many writes happen; it must still get all of them.
    let from = s.current_revision().await.unwrap();
    let mut w = s.watch("/slow/", from).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..400 {
                    let key = format!("/slow/{t}/{i}");
                    revs.push((
                        s.create(&key, v("x"), None).await.unwrap(),
                        key,
                        EventKind::Put,
                    ));
                }
                revs
            })
        })
        .collect();
    let mut expected = Vec::new();
    for t in writers {
        expected.extend(t.await.unwrap());
    }
    expected.sort_by_key(|w| w.0);
    let mut events = Vec::new();
    while events.len() < expected.len() {
        events.push(next_event(&mut w).await);
    }
    assert_events_match(&events, &expected);
}

pub async fn watch_after_compaction(s: S) {
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(s.create(&format!("/cp/{i}"), v("x"), None).await.unwrap());
    }
    for i in 0..20 {
        let key = format!("/cp/{i}");
        let kv = s.get(&key, None).await.unwrap().unwrap();
        revs.push(s.update(&key, v("y"), kv.mod_revision).await.unwrap());
    }
    let old = revs[4];
    let compact_at = revs[30];
    s.compact(compact_at).await.unwrap();
    match s.watch("/cp/", old).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("watch from a compacted revision: {e}"),
        Ok(mut w) => match tokio::time::timeout(PATIENCE, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("watch from a compacted revision gave {other:?}"),
        },
    }
    match s.get("/cp/1", Some(old)).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("get at a compacted revision: {other:?}"),
    }
    match s.range("/cp/", None, 0, Some(old)).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("range at a compacted revision: {other:?}"),
    }
    // At the compaction point the state is still readable and complete.
    let at = s.range("/cp/", None, 0, Some(compact_at)).await.unwrap();
    assert_eq!(at.kvs.len(), 20);
    let updated = at.kvs.iter().filter(|kv| kv.value == v("y")).count();
    assert_eq!(updated, 11, "updates up to the compaction point");
    // Watching from after the compaction point works and sees the later updates.
    let mut w = s.watch("/cp/", compact_at).await.unwrap();
    for &r in &revs[31..] {
        assert_eq!(next_event(&mut w).await.revision(), r);
    }
    // Compacting again at or below the compaction point changes nothing.
    s.compact(compact_at).await.unwrap();
    match s.compact(s.current_revision().await.unwrap() + 10).await {
        Err(StoreError::FutureRevision) => {}
        other => panic!("compact at a future revision: {other:?}"),
    }
}

pub async fn leases_expire(s: S) {
    let lease = s.lease_grant(2).await.unwrap();
    let r = s.create("/l/event", v("e"), Some(lease)).await.unwrap();
    s.create("/l/keep", v("k"), None).await.unwrap();
    assert_eq!(s.get("/l/event", None).await.unwrap().unwrap().lease, lease);
    let mut w = s.watch("/l/", r).await.unwrap();
    // The watch skips the /l/keep create and then reports the expiry's delete.
    let mut e = next_event(&mut w).await;
    if e.kv.key == "/l/keep" {
        e = next_event(&mut w).await;
    }
    assert_eq!((e.kind, e.kv.key.as_str()), (EventKind::Delete, "/l/event"));
    assert_eq!(s.get("/l/event", None).await.unwrap(), None);
    assert!(s.get("/l/keep", None).await.unwrap().is_some());
    match s.create("/l/late", v("x"), Some(lease)).await {
        Err(StoreError::Other(_)) => {}
        other => panic!("create with an expired lease: {other:?}"),
    }
}

pub async fn lease_revoke_deletes_keys(s: S) {
    let lease = s.lease_grant(600).await.unwrap();
    let from = s.current_revision().await.unwrap();
    for i in 0..3 {
        s.create(&format!("/lr/{i}"), v("x"), Some(lease))
            .await
            .unwrap();
    }
    let mut w = s.watch("/lr/", from).await.unwrap();
    s.lease_revoke(lease).await.unwrap();
    let mut deleted = BTreeSet::new();
    while deleted.len() < 3 {
        let e = next_event(&mut w).await;
        if e.kind == EventKind::Delete {
            deleted.insert(e.kv.key);
        }
    }
    assert_eq!(s.range("/lr/", None, 0, None).await.unwrap().kvs.len(), 0);
    assert!(
        s.lease_revoke(lease).await.is_err(),
        "a revoked lease is gone"
    );
}
