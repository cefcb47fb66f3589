//! The etcd v3 gRPC API, as much of it as ros uses: our own protos (see `proto/`) compiled to
//! tonic clients. The package names are etcd's, so the service paths are the ones etcd serves
//! (`/etcdserverpb.KV/Range`, ...).

/// Stored values and watch events (`mvccpb.KeyValue`, `mvccpb.Event`).
pub mod mvccpb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("mvccpb");
}

/// The services: `kv_client`, `watch_client`, `lease_client`, `cluster_client`,
/// `maintenance_client`, and their messages.
pub mod etcdserverpb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{Compare, RequestOp, TxnRequest, compare, request_op};
    use prost::Message;

    /// The bytes etcd expects for a CAS guard: field numbers are the wire contract.
    #[test]
    fn compare_encodes_with_etcds_field_numbers() {
        let guard = Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(7)),
            range_end: Vec::new(),
        };
        // target=MOD (field 2, varint 2), key (field 3, "k"), mod_revision (field 6, 7).
        assert_eq!(
            guard.encode_to_vec(),
            vec![0x10, 0x02, 0x1a, 0x01, b'k', 0x30, 0x07]
        );
    }

    #[test]
    fn nested_txn_round_trips() {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
            }],
            failure: vec![],
        };
        let bytes = txn.encode_to_vec();
        assert_eq!(TxnRequest::decode(bytes.as_slice()).unwrap(), txn);
    }

    #[test]
    fn service_paths_are_etcds() {
        // The generated client names the path it calls; etcd serves exactly these.
        let source = include_str!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
        for path in [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.KV/Compact",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Cluster/MemberPromote",
            "/etcdserverpb.Maintenance/Status",
        ] {
            assert!(
                source.contains(path),
                "{path} missing from the generated client"
            );
        }
    }
}
