//! The single writer: one thread owns the only write connection, takes every queued request,
//! applies them all in one transaction (group commit), commits (fsync), publishes the
//! committed events to watchers and only then acknowledges each request.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;
/// Most revisions one compaction step processes, so writers are not held up for long.
pub(super) const COMPACT_BATCH: i64 = 1000;
/// Pages handed back to the file system per maintenance step.
const VACUUM_PAGES: i64 = 4096;

pub(super) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// One step of compaction towards `target`; answers the new compaction point.
    CompactStep {
        target: Revision,
    },
    LeaseGrant {
        ttl_seconds: i64,
        now_ms: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    ExpireLeases {
        now_ms: i64,
    },
    /// Checkpoint the WAL and return free pages (run outside any transaction).
    Maintenance,
}

pub(super) enum Reply {
    Revision(Revision),
    Deleted(Revision, KeyValue),
    Compacted(Revision),
    Lease(i64),
    Done,
}

pub(super) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The events of one committed transaction, in revision order.
pub(super) struct Committed {
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}

struct State {
    revision: Revision,
    compacted: Revision,
    lease_seq: i64,
}

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::other(context, e)
}

pub(super) fn read_meta(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)))
        .map_err(|e| StoreError::other(&format!("read meta {name}"), e))
}

/// Runs the writer until every request sender is gone.
pub(super) fn run(
    mut conn: Connection,
    mut requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<Committed>>,
) {
    let mut state = match load_state(&conn) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("store writer cannot start: {e}");
            return;
        }
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (maintenance, writes): (Vec<Request>, Vec<Request>) = batch
            .drain(..)
            .partition(|r| matches!(r.op, Op::Maintenance));
        if !writes.is_empty() {
            commit_batch(&mut conn, &mut state, writes, &events);
        }
        for r in maintenance {
            let _ = r.reply.send(maintain(&conn).map(|()| Reply::Done));
        }
    }
}

fn load_state(conn: &Connection) -> Result<State, StoreError> {
    Ok(State {
        revision: read_meta(conn, "revision")?,
        compacted: read_meta(conn, "compacted")?,
        lease_seq: read_meta(conn, "lease_seq")?,
    })
}

fn commit_batch(
    conn: &mut Connection,
    state: &mut State,
    writes: Vec<Request>,
    events: &broadcast::Sender<Arc<Committed>>,
) {
    let before = (state.revision, state.compacted, state.lease_seq);
    let mut results = Vec::with_capacity(writes.len());
    let mut committed = Vec::new();
    let outcome = (|| -> Result<(), StoreError> {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin"))?;
        for w in &writes {
            results.push(apply(&tx, state, &w.op, &mut committed)?);
        }
        if state.revision != before.0 {
            set_meta(&tx, "revision", state.revision)?;
        }
        if state.compacted != before.1 {
            set_meta(&tx, "compacted", state.compacted)?;
        }
        if state.lease_seq != before.2 {
            set_meta(&tx, "lease_seq", state.lease_seq)?;
        }
        tx.commit().map_err(sql("commit"))
    })();
    match outcome {
        Ok(()) => {
            if !committed.is_empty() {
                // No receivers is fine: nobody is watching.
                let _ = events.send(Arc::new(Committed {
                    revision: state.revision,
                    events: committed,
                }));
            }
            for (w, r) in writes.into_iter().zip(results) {
                let _ = w.reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!("store transaction failed, rolled back: {e}");
            (state.revision, state.compacted, state.lease_seq) = before;
            for w in writes {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
    }
}

fn set_meta(tx: &Connection, name: &str, value: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, value]))
        .map(|_| ())
        .map_err(|e| StoreError::other(&format!("write meta {name}"), e))
}

/// Applies one request. The outer `Err` is a database failure (aborts the whole batch); the
/// inner one is the request's own answer (conflict, not found...), which writes nothing.
fn apply(
    tx: &Connection,
    state: &mut State,
    op: &Op,
    events: &mut Vec<WatchEvent>,
) -> Result<Result<Reply, StoreError>, StoreError> {
    Ok(match op {
        Op::Create { key, value, lease } => {
            if current(tx, key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists));
            }
            if *lease != 0 && !lease_exists(tx, *lease)? {
                return Ok(Err(StoreError::Other(format!("lease {lease} not found"))));
            }
            let rev = state.revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
                lease: *lease,
            };
            append(tx, &kv, 0, false)?;
            state.revision = rev;
            events.push(WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: None,
            });
            Ok(Reply::Revision(rev))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let Some(cur) = current(tx, key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            if cur.mod_revision != *expected {
                return Ok(Err(StoreError::Conflict { current: Some(cur) }));
            }
            let rev = state.revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: cur.create_revision,
                mod_revision: rev,
                lease: cur.lease,
            };
            append(tx, &kv, cur.mod_revision, false)?;
            state.revision = rev;
            events.push(WatchEvent {
                kind: EventKind::Put,
                kv,
                prev: Some(cur),
            });
            Ok(Reply::Revision(rev))
        }
        Op::Delete { key, expected } => {
            let Some(cur) = current(tx, key)? else {
                return Ok(Err(StoreError::NotFound));
            };
            if expected.is_some_and(|e| e != cur.mod_revision) {
                return Ok(Err(StoreError::Conflict { current: Some(cur) }));
            }
            let rev = delete_key(tx, state, cur.clone(), events)?;
            Ok(Reply::Deleted(rev, cur))
        }
        Op::CompactStep { target } => {
            if *target > state.revision {
                return Ok(Err(StoreError::FutureRevision));
            }
            if *target > state.compacted {
                let next = (*target).min(state.compacted + COMPACT_BATCH);
                compact_range(tx, state.compacted, next)?;
                state.compacted = next;
            }
            Ok(Reply::Compacted(state.compacted))
        }
        Op::LeaseGrant {
            ttl_seconds,
            now_ms,
        } => {
            if *ttl_seconds <= 0 {
                return Ok(Err(StoreError::Other(format!(
                    "lease ttl_seconds must be positive, got {ttl_seconds}"
                ))));
            }
            let id = state.lease_seq + 1;
            tx.prepare_cached("INSERT INTO leases(id, ttl, expires_at_ms) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![id, ttl_seconds, now_ms + ttl_seconds * 1000]))
                .map_err(sql("insert lease"))?;
            state.lease_seq = id;
            Ok(Reply::Lease(id))
        }
        Op::LeaseRevoke { id } => {
            if !lease_exists(tx, *id)? {
                return Ok(Err(StoreError::Other(format!("lease {id} not found"))));
            }
            revoke(tx, state, *id, events)?;
            Ok(Reply::Done)
        }
        Op::ExpireLeases { now_ms } => {
            let expired: Vec<i64> = tx
                .prepare_cached("SELECT id FROM leases WHERE expires_at_ms <= ?1 ORDER BY id")
                .and_then(|mut s| s.query_map([now_ms], |r| r.get(0))?.collect())
                .map_err(sql("find expired leases"))?;
            for id in expired {
                revoke(tx, state, id, events)?;
            }
            Ok(Reply::Done)
        }
        Op::Maintenance => Ok(Reply::Done),
    })
}

fn current(tx: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    tx.prepare_cached(
        "SELECT l.revision, l.create_revision, l.lease, l.value
         FROM current c JOIN log l ON l.revision = c.revision WHERE c.key = ?1",
    )
    .and_then(|mut s| {
        s.query_row([key.as_bytes()], |r| {
            Ok(KeyValue {
                key: key.to_string(),
                mod_revision: r.get(0)?,
                create_revision: r.get(1)?,
                lease: r.get(2)?,
                value: r.get(3)?,
            })
        })
        .optional()
    })
    .map_err(sql("read current key"))
}

fn lease_exists(tx: &Connection, id: i64) -> Result<bool, StoreError> {
    tx.prepare_cached("SELECT 1 FROM leases WHERE id = ?1")
        .and_then(|mut s| s.exists([id]))
        .map_err(sql("read lease"))
}

/// Appends a log row for `kv` at `kv.mod_revision` and points `current` at it (or removes
/// the key from `current` for a tombstone).
fn append(tx: &Connection, kv: &KeyValue, prev: Revision, deleted: bool) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO log(revision, key, create_revision, prev_revision, deleted, lease, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            kv.mod_revision,
            kv.key.as_bytes(),
            kv.create_revision,
            prev,
            deleted,
            kv.lease,
            kv.value
        ])
    })
    .map_err(sql("append log row"))?;
    if deleted {
        tx.prepare_cached("DELETE FROM current WHERE key = ?1")
            .and_then(|mut s| s.execute([kv.key.as_bytes()]))
            .map_err(sql("remove current key"))?;
    } else {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO current(key, revision, lease) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![kv.key.as_bytes(), kv.mod_revision, kv.lease]))
        .map_err(sql("update current key"))?;
    }
    Ok(())
}

fn delete_key(
    tx: &Connection,
    state: &mut State,
    cur: KeyValue,
    events: &mut Vec<WatchEvent>,
) -> Result<Revision, StoreError> {
    let rev = state.revision + 1;
    let tombstone = KeyValue {
        mod_revision: rev,
        ..cur.clone()
    };
    append(tx, &tombstone, cur.mod_revision, true)?;
    state.revision = rev;
    events.push(WatchEvent {
        kind: EventKind::Delete,
        kv: tombstone,
        prev: Some(cur),
    });
    Ok(rev)
}

/// Deletes the keys attached to lease `id` (one revision each) and the lease.
fn revoke(
    tx: &Connection,
    state: &mut State,
    id: i64,
    events: &mut Vec<WatchEvent>,
) -> Result<(), StoreError> {
    let keys: Vec<Vec<u8>> = tx
        .prepare_cached("SELECT key FROM current WHERE lease = ?1 ORDER BY key")
        .and_then(|mut s| s.query_map([id], |r| r.get(0))?.collect())
        .map_err(sql("find lease keys"))?;
    for key in keys {
        let key = String::from_utf8(key).map_err(|e| StoreError::other("stored key", e))?;
        if let Some(cur) = current(tx, &key)? {
            delete_key(tx, state, cur, events)?;
        }
    }
    tx.prepare_cached("DELETE FROM leases WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(sql("delete lease"))?;
    Ok(())
}

/// Removes the history that no read at or after `to` can need, for the writes in
/// `(from, to]`: the rows those writes superseded, and tombstones themselves.
fn compact_range(tx: &Connection, from: Revision, to: Revision) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM log WHERE revision IN (
            SELECT prev_revision FROM log
            WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
    )
    .and_then(|mut s| s.execute([from, to]))
    .map_err(sql("compact superseded rows"))?;
    tx.prepare_cached("DELETE FROM log WHERE revision > ?1 AND revision <= ?2 AND deleted = 1")
        .and_then(|mut s| s.execute([from, to]))
        .map_err(sql("compact tombstones"))?;
    Ok(())
}

/// Copies the WAL into the database (without waiting for readers) and returns free pages to
/// the file system, so the files shrink after compaction.
fn maintain(conn: &Connection) -> Result<(), StoreError> {
    drain(conn, "PRAGMA wal_checkpoint(PASSIVE)")?;
    drain(conn, &format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
    drain(conn, "PRAGMA wal_checkpoint(PASSIVE)")
}

fn drain(conn: &Connection, pragma: &str) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare(pragma)
        .map_err(|e| StoreError::other(pragma, e))?;
    let mut rows = stmt.query([]).map_err(|e| StoreError::other(pragma, e))?;
    while rows
        .next()
        .map_err(|e| StoreError::other(pragma, e))?
        .is_some()
    {}
    Ok(())
}
