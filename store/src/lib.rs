//! The state store: a revisioned key-value store with the semantics Kubernetes needs from etcd
//! (global revisions, reads at a revision, prefix ranges with continue, optimistic concurrency,
//! ordered gap-free watches, compaction and leases). Backends: [`sqlite`] (embedded default) and
//! [`etcd`] (the real etcd server, for HA control planes).
//!
//! API boundary: the [`Store`] trait. The crate knows nothing of Kubernetes (keys are strings,
//! values bytes); the API server in the `cluster` crate is its user. [`etcd_process`] runs a
//! local etcd for tests and benchmarks.

mod error;
mod types;
mod watch_stream;

pub mod etcd;
pub mod etcd_process;
pub mod sqlite;

pub use error::StoreError;
pub use types::{EventKind, KeyValue, RangeResult, Revision, WatchEvent};
pub use watch_stream::WatchStream;

/// A revisioned key-value store. Object safe: use it as `Arc<dyn Store>`.
///
/// Revisions are global and strictly increasing; every successful write gets a new one.
/// `at: None` reads the latest state; `at: Some(rev)` reads the state as of `rev`
/// ([`StoreError::Compacted`] if `rev` is older than the compaction point,
/// [`StoreError::FutureRevision`] if it is newer than the current revision).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest committed write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// The value of `key`, or `None` if it does not exist (at `at`, or now).
    async fn get(&self, key: &str, at: Option<Revision>) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix` (all keys for `""`), strictly after `start_after` (for
    /// continue tokens), sorted by key bytes, at most `limit` of them (0 = all). `more` tells
    /// whether keys were left out; `revision` is the store revision the read was served at
    /// (pass it back as `at` for the next page to get a consistent list).
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<RangeResult, StoreError>;

    /// Creates `key` if it does not exist ([`StoreError::AlreadyExists`] otherwise), optionally
    /// attached to a lease (the key is deleted when the lease expires or is revoked).
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<Revision, StoreError>;

    /// Replaces the value of `key` if its mod_revision is `expected_mod_revision`.
    /// [`StoreError::NotFound`] if the key does not exist, [`StoreError::Conflict`] (with the
    /// current value) if it was modified since. The key keeps its lease.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key` (if `expected_mod_revision` is given, only if it matches, else
    /// [`StoreError::Conflict`]). Returns the delete's revision and the deleted value.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(Revision, KeyValue), StoreError>;

    /// Events for keys under `prefix` with revision > `from_revision`, in revision order, with
    /// no gaps and no duplicates, first the history then live events.
    /// To watch "from now", pass [`Store::current_revision`] (or a list's `revision`).
    /// [`StoreError::Compacted`] (returned here or as the stream's item) if history
    /// after `from_revision` has been compacted away.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// Discards history older than `revision`: reads at revisions below it and watches from
    /// revisions below it answer [`StoreError::Compacted`]. Compacting to a revision at or
    /// below the current compaction point is a no-op.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Grants a lease that expires `ttl_seconds` from now; returns its id.
    async fn lease_grant(&self, ttl_seconds: i64) -> Result<i64, StoreError>;

    /// Revokes a lease now, deleting the keys attached to it (with delete events).
    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError>;
}

/// The exclusive upper bound of the keys starting with `prefix` (its last byte incremented,
/// dropping trailing 0xff bytes); `None` means "no upper bound" (empty or all-0xff prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
