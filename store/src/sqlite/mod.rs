//! The embedded SQLite backend: an MVCC log with one group-committing writer thread, pooled
//! snapshot readers, in-process watch fan-out, automatic compaction and lease expiry.
//! See `schema.rs` for the data layout and `writer.rs` for the write path.

mod maintenance;
mod reader;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};

use self::reader::Readers;
use self::writer::{Committed, Op, Reply, Request};
use super::{KeyValue, RangeResult, Revision, Store, StoreError, WatchStream};

/// Requests queued for the writer before senders wait.
const WRITE_QUEUE: usize = 8192;

/// Tuning of the background work. The defaults suit a control plane.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How often the automatic compactor runs (`None`: never; compact by hand).
    pub compaction_interval: Option<Duration>,
    /// History younger than this is kept (Kubernetes clients expect about 5 minutes)...
    pub retention: Duration,
    /// ...unless there are more than this many revisions of history, which bounds the size.
    pub max_history: i64,
    /// How often expired leases are looked for.
    pub lease_check_interval: Duration,
    /// Committed transactions buffered for live watchers; a watcher further behind catches up
    /// from the log instead.
    pub watch_buffer: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            compaction_interval: Some(Duration::from_secs(30)),
            retention: Duration::from_secs(5 * 60),
            max_history: 100_000,
            lease_check_interval: Duration::from_millis(500),
            watch_buffer: 1024,
        }
    }
}

/// The SQLite store. Cheap to share through `Arc<dyn Store>`; background tasks stop when the
/// last handle is dropped.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Request>,
    readers: Arc<Readers>,
    events: broadcast::Sender<Arc<Committed>>,
}

impl SqliteStore {
    /// Opens or creates the database at `path` with default options. Must be called inside a
    /// tokio runtime (it starts the compactor and lease expiry tasks).
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer_path = path.clone();
        let (lock, conn) = tokio::task::spawn_blocking(move || {
            let lock = schema::lock_writer(&writer_path)?;
            Ok::<_, StoreError>((lock, schema::open_writer(&writer_path)?))
        })
        .await
        .map_err(|e| StoreError::other("open", e))??;
        let (writer, requests) = mpsc::channel(WRITE_QUEUE);
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let thread_events = events.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer::run(conn, requests, thread_events);
                // Released only now, after the writer connection is closed.
                drop(lock);
            })
            .map_err(|e| StoreError::other("start writer thread", e))?;
        let inner = Arc::new(Inner {
            readers: Arc::new(Readers::new(path.clone())),
            path,
            writer,
            events,
        });
        let store = SqliteStore { inner };
        // Fail now, not on first use, if the database cannot be read.
        store.current_revision().await?;
        maintenance::spawn(Arc::downgrade(&store.inner), options);
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The revision below which history has been compacted.
    pub async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.readers.read(|_, snap| Ok(snap.compacted)).await
    }
}

impl Inner {
    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Other("store writer stopped".into());
        self.writer
            .send(Request { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Compacts to `target` in bounded steps, then checkpoints and shrinks the files.
    async fn compact(&self, target: Revision) -> Result<(), StoreError> {
        loop {
            match self.write(Op::CompactStep { target }).await? {
                Reply::Compacted(done) if done >= target => break,
                Reply::Compacted(_) => tokio::task::yield_now().await,
                _ => return Err(unexpected()),
            }
        }
        self.write(Op::Maintenance).await.map(|_| ())
    }
}

fn unexpected() -> StoreError {
    StoreError::Other("store writer gave an unexpected reply".into())
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.readers.read(|_, snap| Ok(snap.revision)).await
    }

    async fn get(&self, key: &str, at: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.inner
            .readers
            .read(move |tx, snap| reader::get(tx, snap, &key, at))
            .await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<RangeResult, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.inner
            .readers
            .read(move |tx, snap| {
                reader::range(tx, snap, &prefix, start_after.as_deref(), limit, at)
            })
            .await
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<Revision, StoreError> {
        let op = Op::Create {
            key: key.to_string(),
            value,
            lease: lease.unwrap_or(0),
        };
        match self.inner.write(op).await? {
            Reply::Revision(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected: expected_mod_revision,
        };
        match self.inner.write(op).await? {
            Reply::Revision(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(Revision, KeyValue), StoreError> {
        let op = Op::Delete {
            key: key.to_string(),
            expected: expected_mod_revision,
        };
        match self.inner.write(op).await? {
            Reply::Deleted(r, kv) => Ok((r, kv)),
            _ => Err(unexpected()),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::start(
            self.inner.readers.clone(),
            &self.inner.events,
            prefix,
            from_revision,
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn lease_grant(&self, ttl_seconds: i64) -> Result<i64, StoreError> {
        let op = Op::LeaseGrant {
            ttl_seconds,
            now_ms: now_ms(),
        };
        match self.inner.write(op).await? {
            Reply::Lease(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        self.inner.write(Op::LeaseRevoke { id }).await.map(|_| ())
    }
}
