//! The etcd backend: the [`Store`] trait mapped onto a real etcd cluster through the gRPC
//! clients generated from our own etcd protos (`ros-etcd-api`).
//! Conditional writes are transactions comparing `create_revision`/`mod_revision`; prefixes
//! are `[prefix, prefix_end)` ranges; watches start at `from_revision + 1`.

mod convert;
mod members;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ros_etcd_api::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, Member,
    MemberListRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, StatusRequest,
    StatusResponse, TxnRequest, TxnResponse, cluster_client::ClusterClient, compare,
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    request_op, response_op,
};
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::{KeyValue, RangeResult, Revision, Store, StoreError, WatchStream};
use convert::{header_revision, key_value, prefix_range};
use members::Members;

pub use members::EtcdTls;

/// Largest response accepted (a list of many large objects easily exceeds gRPC's 4 MiB
/// default; the Kubernetes apiserver lifts the limit the same way).
const MAX_RESPONSE: usize = i32::MAX as usize;

pub struct EtcdStore {
    members: Arc<Members>,
    /// The highest compaction point this client has seen, reported with `Compacted` (etcd's
    /// "compacted" error does not carry it).
    compacted: AtomicI64,
}

fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE)
}

/// A gRPC error as text: code, message, and the causes below it (a refused connection or a
/// TLS failure shows its reason).
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl EtcdStore {
    /// A client for the etcd cluster at `endpoints` (`http://host:port`, or `https://` with
    /// `tls`; several endpoints fail over, see `members.rs`). Connects lazily: an unreachable
    /// etcd shows at the first call.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<EtcdTls>,
    ) -> Result<EtcdStore, StoreError> {
        Ok(EtcdStore {
            members: Arc::new(Members::new(endpoints, tls)?),
            compacted: AtomicI64::new(0),
        })
    }

    /// The status of the member in use: its version, the leader, raft indexes, alarms.
    pub async fn status(&self) -> Result<StatusResponse, StoreError> {
        self.members
            .read(|channel| async move {
                MaintenanceClient::new(channel)
                    .status(StatusRequest {})
                    .await
                    .map(Response::into_inner)
            })
            .await
            .map_err(|e| self.map_err("status", e, 0))
    }

    /// The members of the etcd cluster (learners included).
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        self.members
            .read(|channel| async move {
                ClusterClient::new(channel)
                    .member_list(MemberListRequest { linearizable: true })
                    .await
                    .map(|r| r.into_inner().members)
            })
            .await
            .map_err(|e| self.map_err("member list", e, 0))
    }

    fn map_err(&self, context: &str, status: Status, requested: Revision) -> StoreError {
        let message = status.message();
        if message.contains("required revision has been compacted") {
            let known = self.compacted.load(Ordering::Relaxed);
            StoreError::Compacted {
                compacted: known.max(requested + 1),
            }
        } else if message.contains("required revision is a future revision") {
            StoreError::FutureRevision
        } else {
            StoreError::Other(format!("etcd {context}: {}", describe(&status)))
        }
    }

    async fn range_request(
        &self,
        request: RangeRequest,
        context: &str,
    ) -> Result<RangeResponse, StoreError> {
        let requested = request.revision;
        self.members
            .read(|channel| {
                let request = request.clone();
                async move { kv(channel).range(request).await.map(Response::into_inner) }
            })
            .await
            .map_err(|e| self.map_err(context, e, requested))
    }

    async fn txn(&self, request: TxnRequest, context: &str) -> Result<TxnResponse, StoreError> {
        self.members
            .write(
                |channel| async move { kv(channel).txn(request).await.map(Response::into_inner) },
            )
            .await
            .map_err(|e| self.map_err(context, e, 0))
    }

    /// The current value of `key` from the `else` branch of a failed transaction.
    fn current_from(resp: &TxnResponse) -> Result<Option<KeyValue>, StoreError> {
        for op in &resp.responses {
            if let Some(response_op::Response::ResponseRange(range)) = &op.response {
                return range.kvs.first().map(key_value).transpose();
            }
        }
        Ok(None)
    }
}

fn guard(key: &str, target: compare::TargetUnion, result: compare::CompareResult) -> Compare {
    let target_kind = match target {
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: target_kind as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(target),
        range_end: Vec::new(),
    }
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// Reads `key` (in a transaction's failure branch: the value that made it fail).
fn get_op(key: &str) -> RequestOp {
    op(request_op::Request::RequestRange(RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }))
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let request = RangeRequest {
            key: vec![0],
            count_only: true,
            ..Default::default()
        };
        let resp = self.range_request(request, "get revision").await?;
        header_revision(resp.header.as_ref())
    }

    async fn get(&self, key: &str, at: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            revision: at.unwrap_or(0),
            ..Default::default()
        };
        let resp = self.range_request(request, "get").await?;
        resp.kvs.first().map(key_value).transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<RangeResult, StoreError> {
        let (mut key, range_end) = prefix_range(prefix);
        if let Some(after) = start_after {
            let mut next = after.as_bytes().to_vec();
            next.push(0);
            if next > key {
                key = next;
            }
        }
        let request = RangeRequest {
            key,
            range_end,
            limit: i64::try_from(limit)
                .map_err(|_| StoreError::Other(format!("range limit {limit} is too large")))?,
            revision: at.unwrap_or(0),
            ..Default::default()
        };
        let resp = self.range_request(request, "range").await?;
        Ok(RangeResult {
            revision: match at {
                Some(rev) => rev,
                None => header_revision(resp.header.as_ref())?,
            },
            more: resp.more,
            kvs: resp
                .kvs
                .into_iter()
                .map(convert::into_key_value)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<Revision, StoreError> {
        let request = TxnRequest {
            compare: vec![guard(
                key,
                compare::TargetUnion::CreateRevision(0),
                compare::CompareResult::Equal,
            )],
            success: vec![op(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease: lease.unwrap_or(0),
                ..Default::default()
            }))],
            failure: vec![],
        };
        let resp = self.txn(request, "create").await?;
        if resp.succeeded {
            header_revision(resp.header.as_ref())
        } else {
            Err(StoreError::AlreadyExists)
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let request = TxnRequest {
            compare: vec![guard(
                key,
                compare::TargetUnion::ModRevision(expected_mod_revision),
                compare::CompareResult::Equal,
            )],
            success: vec![op(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                ignore_lease: true,
                ..Default::default()
            }))],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(request, "update").await?;
        if resp.succeeded {
            return header_revision(resp.header.as_ref());
        }
        match Self::current_from(&resp)? {
            None => Err(StoreError::NotFound),
            current => Err(StoreError::Conflict { current }),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<(Revision, KeyValue), StoreError> {
        let condition = match expected_mod_revision {
            Some(rev) => guard(
                key,
                compare::TargetUnion::ModRevision(rev),
                compare::CompareResult::Equal,
            ),
            None => guard(
                key,
                compare::TargetUnion::CreateRevision(0),
                compare::CompareResult::Greater,
            ),
        };
        let request = TxnRequest {
            compare: vec![condition],
            success: vec![op(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.as_bytes().to_vec(),
                    prev_kv: true,
                    ..Default::default()
                },
            ))],
            failure: vec![get_op(key)],
        };
        let resp = self.txn(request, "delete").await?;
        if !resp.succeeded {
            return match Self::current_from(&resp)? {
                None => Err(StoreError::NotFound),
                current => Err(StoreError::Conflict { current }),
            };
        }
        let revision = header_revision(resp.header.as_ref())?;
        for op in &resp.responses {
            if let Some(response_op::Response::ResponseDeleteRange(del)) = &op.response
                && let Some(prev) = del.prev_kvs.first()
            {
                return Ok((revision, key_value(prev)?));
            }
        }
        Err(StoreError::Other(format!(
            "etcd delete of {key}: no previous value returned"
        )))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Answer "too old" here rather than on the stream: a read at from_revision fails
        // exactly when history after it may be gone.
        if from_revision > 0 {
            match self.get("\0", Some(from_revision)).await {
                Ok(_) | Err(StoreError::FutureRevision) => {}
                Err(e) => return Err(e),
            }
        }
        watch::start(&self.members, prefix, from_revision)
            .await
            .map_err(|e| self.map_err("watch", e, from_revision))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let request = CompactionRequest {
            revision,
            physical: true,
        };
        // Safe to repeat on another member: compacting again is answered "compacted".
        let result = self
            .members
            .read(|channel| async move { kv(channel).compact(request).await })
            .await;
        match result {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => match self.map_err("compact", e, revision) {
                // Already compacted at or past `revision`: nothing to do.
                StoreError::Compacted { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn lease_grant(&self, ttl_seconds: i64) -> Result<i64, StoreError> {
        if ttl_seconds <= 0 {
            return Err(StoreError::Other(format!(
                "lease ttl_seconds must be positive, got {ttl_seconds}"
            )));
        }
        let request = LeaseGrantRequest {
            ttl: ttl_seconds,
            id: 0,
        };
        let resp = self
            .members
            .write(|channel| async move {
                LeaseClient::new(channel)
                    .lease_grant(request)
                    .await
                    .map(Response::into_inner)
            })
            .await
            .map_err(|e| self.map_err("lease grant", e, 0))?;
        if !resp.error.is_empty() {
            return Err(StoreError::Other(format!(
                "etcd lease grant: {}",
                resp.error
            )));
        }
        Ok(resp.id)
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        self.members
            .write(|channel| async move {
                LeaseClient::new(channel)
                    .lease_revoke(LeaseRevokeRequest { id })
                    .await
            })
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(&format!("revoke lease {id}"), e, 0))
    }
}
