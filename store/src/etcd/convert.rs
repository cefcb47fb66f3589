//! From etcd's messages to the store's types.

use ros_etcd_api::etcdserverpb::ResponseHeader;
use ros_etcd_api::mvccpb;

use crate::{EventKind, KeyValue, Revision, StoreError, WatchEvent, prefix_end};

pub(super) fn key_value(kv: &mvccpb::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key.clone())
            .map_err(|e| StoreError::other("etcd key is not UTF-8", e))?,
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease,
    })
}

/// Like [`key_value`], taking the message apart instead of copying the value.
pub(super) fn into_key_value(kv: mvccpb::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key)
            .map_err(|e| StoreError::other("etcd key is not UTF-8", e))?,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease,
    })
}

pub(super) fn header_revision(header: Option<&ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision)
        .ok_or_else(|| StoreError::Other("etcd response without a header".into()))
}

/// The etcd key range `[key, range_end)` for a prefix; `"\0"` as range_end means "no end".
pub(super) fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (
        key,
        prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]),
    )
}

pub(super) fn event(event: mvccpb::Event) -> Result<WatchEvent, StoreError> {
    let kind = match mvccpb::event::EventType::try_from(event.r#type) {
        Ok(mvccpb::event::EventType::Put) => EventKind::Put,
        Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
        Err(_) => {
            return Err(StoreError::Other(format!(
                "etcd watch event of unknown type {}",
                event.r#type
            )));
        }
    };
    let kv = event
        .kv
        .ok_or_else(|| StoreError::Other("etcd watch event without a key".into()))?;
    let prev = event.prev_kv.map(into_key_value).transpose()?;
    let kv = match (kind, &prev) {
        // etcd reports a delete with an empty value; carry the last value instead.
        (EventKind::Delete, Some(p)) => KeyValue {
            mod_revision: kv.mod_revision,
            ..p.clone()
        },
        _ => into_key_value(kv)?,
    };
    Ok(WatchEvent { kind, kv, prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: i64, modified: i64) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modified,
            version: 1,
            value: value.into(),
            lease: 0,
        }
    }

    #[test]
    fn a_delete_carries_the_last_value_at_the_delete_revision() {
        let converted = event(mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(kv("/a", "", 0, 9)),
            prev_kv: Some(kv("/a", "last", 3, 5)),
        })
        .unwrap();
        assert_eq!(converted.kind, EventKind::Delete);
        assert_eq!(converted.kv.value, b"last");
        assert_eq!(converted.revision(), 9);
        assert_eq!(converted.prev.unwrap().mod_revision, 5);
    }

    #[test]
    fn bad_events_are_errors() {
        let unknown = event(mvccpb::Event {
            r#type: 7,
            kv: Some(kv("/a", "v", 1, 1)),
            prev_kv: None,
        });
        assert!(unknown.unwrap_err().to_string().contains("unknown type 7"));
        let keyless = event(mvccpb::Event::default());
        assert!(keyless.unwrap_err().to_string().contains("without a key"));
    }

    #[test]
    fn prefixes_become_ranges() {
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(prefix_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
    }
}
