//! Reads on a small pool of read-only connections, each in its own snapshot transaction, run
//! on the blocking thread pool so they never stall the async runtime or the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use crate::{EventKind, KeyValue, RangeResult, Revision, StoreError, WatchEvent, prefix_end};

/// Idle reader connections kept open.
const MAX_IDLE: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// One page of history for a watch.
pub(super) struct HistoryPage {
    pub events: Vec<WatchEvent>,
    /// True when the page reached the snapshot's current revision.
    pub complete: bool,
    /// The revision up to which history was read (the snapshot's revision when complete).
    pub scanned_to: Revision,
}

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::other(context, e)
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` in a read transaction on a pooled connection, off the async runtime.
    pub(super) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, Snapshot) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.read_blocking(f))
            .await
            .map_err(|e| StoreError::other("reader task", e))?
    }

    fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, Snapshot) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("reader pool poisoned").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => super::schema::open_reader(&self.path)?,
        };
        let result = (|| {
            let tx = conn.transaction().map_err(sql("begin read"))?;
            // The first read fixes the snapshot; everything after sees the same state.
            let snapshot = Snapshot {
                revision: super::writer::read_meta(&tx, "revision")?,
                compacted: super::writer::read_meta(&tx, "compacted")?,
            };
            let out = f(&tx, snapshot)?;
            tx.finish().map_err(sql("end read"))?;
            Ok(out)
        })();
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result
    }
}

/// The revisions of a read snapshot.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    pub revision: Revision,
    pub compacted: Revision,
}

impl Snapshot {
    /// The revision to read at, checked against the snapshot.
    pub(super) fn resolve(&self, at: Option<Revision>) -> Result<Revision, StoreError> {
        match at {
            None => Ok(self.revision),
            Some(r) if r > self.revision => Err(StoreError::FutureRevision),
            Some(r) if r < self.compacted => Err(StoreError::Compacted {
                compacted: self.compacted,
            }),
            Some(r) => Ok(r),
        }
    }
}

fn key_string(bytes: Vec<u8>) -> Result<String, rusqlite::Error> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// A KeyValue from columns `key, revision, create_revision, lease, value` starting at `at`.
fn kv_from(row: &Row<'_>, at: usize) -> Result<KeyValue, rusqlite::Error> {
    Ok(KeyValue {
        key: key_string(row.get(at)?)?,
        mod_revision: row.get(at + 1)?,
        create_revision: row.get(at + 2)?,
        lease: row.get(at + 3)?,
        value: row.get(at + 4)?,
    })
}

pub(super) fn get(
    tx: &Transaction<'_>,
    snap: Snapshot,
    key: &str,
    at: Option<Revision>,
) -> Result<Option<KeyValue>, StoreError> {
    let at = snap.resolve(at)?;
    if at == snap.revision {
        return tx
            .prepare_cached(
                "SELECT l.key, l.revision, l.create_revision, l.lease, l.value
                 FROM current c JOIN log l ON l.revision = c.revision WHERE c.key = ?1",
            )
            .and_then(|mut s| s.query_row([key.as_bytes()], |r| kv_from(r, 0)).optional())
            .map_err(sql("get"));
    }
    let row = tx
        .prepare_cached(
            "SELECT key, revision, create_revision, lease, value, deleted FROM log
             WHERE key = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(rusqlite::params![key.as_bytes(), at], |r| {
                Ok((kv_from(r, 0)?, r.get::<_, bool>(5)?))
            })
            .optional()
        })
        .map_err(sql("get at revision"))?;
    Ok(row.and_then(|(kv, deleted)| (!deleted).then_some(kv)))
}

pub(super) fn range(
    tx: &Transaction<'_>,
    snap: Snapshot,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    at: Option<Revision>,
) -> Result<RangeResult, StoreError> {
    let at = snap.resolve(at)?;
    let (lower, upper) = bounds(prefix, start_after);
    // Fetch one more than asked to learn whether there are more.
    let want = if limit == 0 { usize::MAX } else { limit + 1 };
    let upper_clause = if upper.is_some() {
        "AND key < ?2"
    } else {
        "AND ?2 IS NULL"
    };
    let mut kvs = Vec::new();
    if at == snap.revision {
        let query = format!(
            "SELECT l.key, l.revision, l.create_revision, l.lease, l.value
             FROM current c JOIN log l ON l.revision = c.revision
             WHERE c.key >= ?1 {} ORDER BY c.key LIMIT ?3",
            upper_clause.replace("key", "c.key")
        );
        let sql_limit = if limit == 0 { -1 } else { limit as i64 + 1 };
        let mut stmt = tx.prepare_cached(&query).map_err(sql("range"))?;
        let rows = stmt
            .query_map(rusqlite::params![lower, upper, sql_limit], |r| {
                kv_from(r, 0)
            })
            .map_err(sql("range"))?;
        for kv in rows {
            kvs.push(kv.map_err(sql("range row"))?);
        }
    } else {
        // Latest row of each key at or before `at`, skipping keys deleted by then.
        let query = format!(
            "SELECT key, MAX(revision) FROM log
             WHERE key >= ?1 {upper_clause} AND revision <= ?3 GROUP BY key ORDER BY key"
        );
        let mut stmt = tx
            .prepare_cached(&query)
            .map_err(sql("range at revision"))?;
        let mut rows = stmt
            .query(rusqlite::params![lower, upper, at])
            .map_err(sql("range at revision"))?;
        let mut row_stmt = tx
            .prepare_cached(
                "SELECT key, revision, create_revision, lease, value FROM log
                 WHERE revision = ?1 AND deleted = 0",
            )
            .map_err(sql("range row"))?;
        while kvs.len() < want {
            let Some(row) = rows.next().map_err(sql("range at revision"))? else {
                break;
            };
            let rev: Revision = row.get(1).map_err(sql("range at revision"))?;
            if let Some(kv) = row_stmt
                .query_row([rev], |r| kv_from(r, 0))
                .optional()
                .map_err(sql("range row"))?
            {
                kvs.push(kv);
            }
        }
    }
    let more = limit != 0 && kvs.len() > limit;
    kvs.truncate(if limit == 0 { kvs.len() } else { limit });
    Ok(RangeResult {
        kvs,
        more,
        revision: at,
    })
}

/// The key bounds `[lower, upper)` for `prefix`, after `start_after`.
fn bounds(prefix: &str, start_after: Option<&str>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut lower = prefix.as_bytes().to_vec();
    if let Some(after) = start_after {
        // The smallest key strictly greater than `after`.
        let mut next = after.as_bytes().to_vec();
        next.push(0);
        if next > lower {
            lower = next;
        }
    }
    (lower, prefix_end(prefix.as_bytes()))
}

/// Events under `prefix` with revision in `(after, snapshot revision]`, at most `max` of them.
pub(super) fn history(
    tx: &Transaction<'_>,
    snap: Snapshot,
    prefix: &str,
    after: Revision,
    max: usize,
) -> Result<HistoryPage, StoreError> {
    if after < snap.compacted {
        return Err(StoreError::Compacted {
            compacted: snap.compacted,
        });
    }
    if after >= snap.revision {
        return Ok(HistoryPage {
            events: Vec::new(),
            complete: true,
            scanned_to: snap.revision.max(after),
        });
    }
    let (lower, upper) = bounds(prefix, None);
    let upper_clause = if upper.is_some() {
        "AND l.key < ?2"
    } else {
        "AND ?2 IS NULL"
    };
    let query = format!(
        "SELECT l.key, l.revision, l.create_revision, l.lease, l.value, l.deleted,
                p.key, p.revision, p.create_revision, p.lease, p.value, p.deleted
         FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
         WHERE l.revision > ?3 AND l.revision <= ?4 AND l.key >= ?1 {upper_clause}
         ORDER BY l.revision LIMIT ?5"
    );
    let mut stmt = tx.prepare_cached(&query).map_err(sql("watch history"))?;
    let rows = stmt
        .query_map(
            rusqlite::params![lower, upper, after, snap.revision, max as i64],
            |r| {
                let kv = kv_from(r, 0)?;
                let deleted: bool = r.get(5)?;
                let prev_live = r.get::<_, Option<bool>>(11)? == Some(false);
                let prev = if prev_live {
                    Some(kv_from(r, 6)?)
                } else {
                    None
                };
                Ok(WatchEvent {
                    kind: if deleted {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    },
                    kv,
                    prev,
                })
            },
        )
        .map_err(sql("watch history"))?;
    let mut events = Vec::new();
    for e in rows {
        events.push(e.map_err(sql("watch history row"))?);
    }
    let complete = events.len() < max;
    let scanned_to = if complete {
        snap.revision
    } else {
        events.last().map_or(after, |e| e.revision())
    };
    Ok(HistoryPage {
        events,
        complete,
        scanned_to,
    })
}
