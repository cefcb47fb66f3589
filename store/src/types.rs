//! The values the store hands out.

/// A global store revision. Every successful write gets a new, larger one.
pub type Revision = i64;

/// One key and its value at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created this key (in its current lifetime, since the last delete).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A committed change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For `Put`: the new value. For `Delete`: the last value, with `mod_revision` set to the
    /// delete's revision.
    pub kv: KeyValue,
    /// The value before this change (for `Delete`, the deleted value with its own revisions);
    /// `None` for a create.
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// The answer to a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// The store revision the read was served at.
    pub revision: Revision,
}
