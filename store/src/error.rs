//! Store errors. Callers map them to API errors (AlreadyExists -> 409, Conflict -> 409,
//! NotFound -> 404, Compacted -> 410 Gone).

use super::types::KeyValue;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists")]
    AlreadyExists,
    #[error("key not found")]
    NotFound,
    /// An update or delete expected another mod_revision; `current` is the key's value now
    /// (`None` if it no longer exists).
    #[error("the key was modified (current mod_revision {})", current.as_ref().map_or(0, |kv| kv.mod_revision))]
    Conflict { current: Option<KeyValue> },
    /// The requested revision is older than the compaction point `compacted`.
    #[error("required revision has been compacted (compacted revision {compacted})")]
    Compacted { compacted: i64 },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision is a future revision")]
    FutureRevision,
    /// Anything else: I/O, the backend being unreachable, a lease that does not exist...
    #[error("store: {0}")]
    Other(String),
}

impl StoreError {
    pub(crate) fn other(context: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Other(format!("{context}: {err}"))
    }
}
