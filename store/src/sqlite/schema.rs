//! The SQLite schema and connection settings.
//!
//! `log` is the MVCC history: every write appends one row whose `revision` (the primary key) is
//! the global store revision. A delete appends a tombstone (`deleted = 1`) carrying the last value.
//! `prev_revision` points at the row this write superseded (0 for a create), which lets
//! compaction find superseded rows from the rows that replaced them. `current` maps each live
//! key to its latest log row, so reads at the latest revision never scan history. `meta` keeps
//! the current and compacted revisions (the newest log row may itself be compacted away, so the
//! revision cannot be derived from `log`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log(key, revision);
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    revision INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS current_lease ON current(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0), ('compacted', 0), ('lease_seq', 0);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases(expires_at_ms);
";

/// How long a reader waits for a lock before failing. Readers never block on the writer in WAL
/// mode; this only covers WAL recovery and checkpoint hand-offs.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn sql_err(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::other(context, e)
}

/// How long opening waits for another writer of the same database to go away (e.g. a store
/// that was just dropped and whose writer thread is still closing).
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the exclusive lock that makes this process the database's only writer (the writer
/// keeps the revision counter in memory, so two writers must never share a database).
/// The lock is `<path>.lock`, held until the returned file is dropped or the process dies.
pub(super) fn lock_writer(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::other(&format!("open {}", lock_path.display()), e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Other(format!(
                    "{} is in use by another store (lock {} is held)",
                    path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::other(
                    &format!("lock {}", lock_path.display()),
                    e,
                ));
            }
        }
    }
}

/// Opens (creating if needed) the database for the single writer and sets it up.
///
/// `synchronous = FULL` in WAL mode fsyncs the WAL at every commit, so a write acknowledged
/// after its commit survives `kill -9` and power loss; group commit amortises the fsync.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::other(&format!("open {}", path.display()), e))?;
    // Only takes effect on a new, empty database: lets compaction return pages to the OS.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(sql_err("auto_vacuum"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql_err("journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "{}: journal_mode is {mode}, WAL is required",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err("synchronous"))?;
    // After a checkpoint resets the WAL, shrink the file back to this size.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sql_err("journal_size_limit"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("busy_timeout"))?;
    conn.execute_batch(SCHEMA)
        .map_err(sql_err("create schema"))?;
    Ok(conn)
}

/// Opens a read-only connection; readers see a consistent snapshot per transaction and never
/// take the write lock, so they cannot cause "database is locked" for the writer.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::other(&format!("open reader {}", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_err("busy_timeout"))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sql_err("query_only"))?;
    Ok(conn)
}
