//! The resource store: typed, versioned documents that controllers write and the API reads and
//! watches. A resource is identified by (type, id); its spec is a JSON document.

mod types;

pub use types::{ResourceTypeInfo, TYPES, canonical_type};

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// One stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: String,
    pub id: String,
    pub version: u64,
    pub spec: Value,
    pub updated: String,
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// A change notification sent to watchers.
#[derive(Debug, Clone)]
pub struct ResourceEvent {
    pub change: Change,
    pub resource: Resource,
}

#[derive(Default)]
struct Inner {
    items: BTreeMap<(String, String), Resource>,
}

/// Shared, cheaply clonable resource store with change notifications.
#[derive(Clone)]
pub struct ResourceStore {
    inner: Arc<RwLock<Inner>>,
    events: broadcast::Sender<ResourceEvent>,
}

impl Default for ResourceStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceStore {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(RwLock::new(Inner::default())),
            events,
        }
    }

    /// Creates or replaces a resource. Writing an identical spec is a no-op (no version bump,
    /// no event), which keeps controllers idempotent and watchers quiet.
    pub fn put(&self, kind: &str, id: &str, spec: Value) -> Resource {
        let mut inner = self.inner.write().expect("resource store lock");
        let key = (kind.to_string(), id.to_string());
        let (change, version) = match inner.items.get(&key) {
            Some(old) if old.spec == spec => return old.clone(),
            Some(old) => (Change::Updated, old.version + 1),
            None => (Change::Created, 1),
        };
        let resource = Resource {
            kind: kind.to_string(),
            id: id.to_string(),
            version,
            spec,
            updated: crate::clock::now_rfc3339(),
        };
        inner.items.insert(key, resource.clone());
        // Sending while holding the lock keeps event order equal to write order.
        let _ = self.events.send(ResourceEvent {
            change,
            resource: resource.clone(),
        });
        resource
    }

    pub fn delete(&self, kind: &str, id: &str) -> Option<Resource> {
        let mut inner = self.inner.write().expect("resource store lock");
        let removed = inner.items.remove(&(kind.to_string(), id.to_string()))?;
        let _ = self.events.send(ResourceEvent {
            change: Change::Deleted,
            resource: removed.clone(),
        });
        Some(removed)
    }

    /// Makes the set of resources of `kind` exactly `wanted` (by id): puts each, deletes the rest.
    pub fn replace_all(&self, kind: &str, wanted: Vec<(String, Value)>) {
        let keep: std::collections::BTreeSet<String> =
            wanted.iter().map(|(id, _)| id.clone()).collect();
        for (id, spec) in wanted {
            self.put(kind, &id, spec);
        }
        for existing in self.list(kind) {
            if !keep.contains(&existing.id) {
                self.delete(kind, &existing.id);
            }
        }
    }

    pub fn get(&self, kind: &str, id: &str) -> Option<Resource> {
        let inner = self.inner.read().expect("resource store lock");
        inner
            .items
            .get(&(kind.to_string(), id.to_string()))
            .cloned()
    }

    pub fn list(&self, kind: &str) -> Vec<Resource> {
        let inner = self.inner.read().expect("resource store lock");
        inner
            .items
            .range((kind.to_string(), String::new())..)
            .take_while(|((k, _), _)| k == kind)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The current resources of `kind` plus a receiver for every later change, taken atomically
    /// so no change falls between the snapshot and the subscription.
    pub fn watch(&self, kind: &str) -> (Vec<Resource>, broadcast::Receiver<ResourceEvent>) {
        let inner = self.inner.read().expect("resource store lock");
        let rx = self.events.subscribe();
        let snapshot = inner
            .items
            .range((kind.to_string(), String::new())..)
            .take_while(|((k, _), _)| k == kind)
            .map(|(_, r)| r.clone())
            .collect();
        (snapshot, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identical_put_does_not_bump_version() {
        let store = ResourceStore::new();
        assert_eq!(
            store
                .put("Hostname", "hostname", json!({"hostname": "a"}))
                .version,
            1
        );
        assert_eq!(
            store
                .put("Hostname", "hostname", json!({"hostname": "a"}))
                .version,
            1
        );
        assert_eq!(
            store
                .put("Hostname", "hostname", json!({"hostname": "b"}))
                .version,
            2
        );
    }

    #[tokio::test]
    async fn watch_sees_snapshot_then_changes_in_order() {
        let store = ResourceStore::new();
        store.put("Addresses", "eth0/10.0.0.2/24", json!({}));
        let (snapshot, mut rx) = store.watch("Addresses");
        assert_eq!(snapshot.len(), 1);
        store.replace_all("Addresses", vec![("eth0/10.0.0.3/24".into(), json!({}))]);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.change, Change::Created);
        assert_eq!(first.resource.id, "eth0/10.0.0.3/24");
        let second = rx.recv().await.unwrap();
        assert_eq!(second.change, Change::Deleted);
        assert_eq!(second.resource.id, "eth0/10.0.0.2/24");
        assert_eq!(store.list("Addresses").len(), 1);
    }

    #[test]
    fn list_is_limited_to_one_type() {
        let store = ResourceStore::new();
        store.put("A", "1", json!(1));
        store.put("AB", "1", json!(1));
        store.put("B", "1", json!(1));
        assert_eq!(store.list("A").len(), 1);
    }
}
