//! watch: a chunked stream of `{"type": ..., "object": ...}` lines.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Call;
use super::read::{Filter, list_objects};
use crate::apiserver::http::{Body, streaming};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{storage, table};
use ros_store::{EventKind, StoreError, WatchEvent};

const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

struct Encoder {
    table: Option<Value>,
    metadata_only: bool,
    def: &'static crate::apiserver::registry::ResourceDef,
    query: crate::apiserver::request::Query,
}

impl Encoder {
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let object = match &self.table {
            Some(_) if kind != "ERROR" && kind != "BOOKMARK" => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                table::table(self.def, std::slice::from_ref(obj), &self.query, &rv, None)
            }
            _ if self.metadata_only && kind != "ERROR" => super::partial(obj),
            _ => obj.clone(),
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(
            "BOOKMARK",
            &json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta}),
        )
    }
}

/// The watch event a store event becomes for this filter, if any: objects that stop
/// matching are DELETED, objects that start matching are ADDED.
fn translate(ev: &WatchEvent, filter: &Filter) -> ApiResult<Option<(&'static str, Value)>> {
    let mut obj = storage::decode(&ev.kv)?;
    let prev_matches = match &ev.prev {
        Some(p) => filter.matches(&storage::decode(p)?),
        None => false,
    };
    Ok(match ev.kind {
        EventKind::Delete => {
            if !prev_matches && !filter.matches(&obj) {
                return Ok(None);
            }
            obj["metadata"]["resourceVersion"] = json!(ev.kv.mod_revision.to_string());
            Some(("DELETED", obj))
        }
        EventKind::Put => match (prev_matches, filter.matches(&obj)) {
            (true, true) => Some(("MODIFIED", obj)),
            (false, true) => Some(("ADDED", obj)),
            (true, false) => Some(("DELETED", obj)),
            (false, false) => None,
        },
    })
}

fn expired(rev: i64, e: &StoreError) -> Value {
    let msg = match e {
        StoreError::Compacted { compacted } => {
            format!("too old resource version: {rev} ({compacted})")
        }
        other => other.to_string(),
    };
    let mut s = ApiError::gone(msg).to_status();
    if !matches!(e, StoreError::Compacted { .. }) {
        s = ApiError::internal(e.to_string()).to_status();
    }
    s
}

pub async fn watch(call: Call) -> ApiResult<Response<Body>> {
    let filter = Filter::from_call(&call)?;
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let timeout = Duration::from_secs(
        call.query
            .int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .unwrap_or(1800) as u64,
    );
    let send_initial = call.query.flag("sendInitialEvents");
    let rv = call
        .query
        .get("resourceVersion")
        .map(storage::parse_rv)
        .transpose()?;
    if let Some(r) = rv.filter(|r| *r > 0) {
        super::read::wait_for_revision(&call.api, r).await?;
    }
    let enc = Encoder {
        table: call.wants_table().then(|| json!({})),
        metadata_only: call.wants_metadata(),
        def: call.def,
        query: call.query_clone(),
    };

    // Unset or "0": start with the current objects as ADDED events.
    let mut initial = Vec::new();
    let start = match rv {
        Some(r) if r > 0 && !send_initial => r,
        _ => {
            let (items, rev, _) = list_objects(&call, &filter).await?;
            initial = items;
            rev
        }
    };
    let prefix = storage::prefix(call.def, call.ns());
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let api = call.api.clone();
    tokio::spawn(async move {
        for obj in &initial {
            if tx.send(enc.line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(enc.bookmark(start, true)).await.is_err() {
            return;
        }
        let mut stream = match api.store.watch(&prefix, start).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(enc.line("ERROR", &expired(start, &e))).await;
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = start;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => {
                        last = ev.revision();
                        match translate(&ev, &filter) {
                            Ok(Some((kind, obj))) => {
                                if tx.send(enc.line(kind, &obj)).await.is_err() { return; }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!("watch {prefix}: {}", e.message),
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(enc.line("ERROR", &expired(start, &e))).await;
                        return;
                    }
                    None => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(last, false)).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(streaming("application/json", rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::selectors::{FieldSelector, LabelSelector};
    use ros_store::KeyValue;

    fn kv(labels: Value, rev: i64) -> KeyValue {
        let v = json!({"metadata": {"name": "a", "labels": labels}});
        KeyValue {
            key: "/registry/pods/ns/a".into(),
            value: serde_json::to_vec(&v).unwrap(),
            create_revision: 1,
            mod_revision: rev,
            lease: 0,
        }
    }

    #[test]
    fn label_changes_turn_into_added_and_deleted() {
        let f = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            fields: FieldSelector::default(),
        };
        let leave = WatchEvent {
            kind: EventKind::Put,
            kv: kv(json!({"app": "db"}), 3),
            prev: Some(kv(json!({"app": "web"}), 2)),
        };
        assert_eq!(translate(&leave, &f).unwrap().unwrap().0, "DELETED");
        let join = WatchEvent {
            kind: EventKind::Put,
            kv: kv(json!({"app": "web"}), 4),
            prev: Some(kv(json!({"app": "db"}), 3)),
        };
        assert_eq!(translate(&join, &f).unwrap().unwrap().0, "ADDED");
        let other = WatchEvent {
            kind: EventKind::Put,
            kv: kv(json!({"app": "db"}), 5),
            prev: None,
        };
        assert!(translate(&other, &f).unwrap().is_none());
        let del = WatchEvent {
            kind: EventKind::Delete,
            kv: kv(json!({"app": "web"}), 6),
            prev: Some(kv(json!({"app": "web"}), 4)),
        };
        let (t, o) = translate(&del, &f).unwrap().unwrap();
        assert_eq!(
            (t, o["metadata"]["resourceVersion"].as_str()),
            ("DELETED", Some("6"))
        );
    }
}
