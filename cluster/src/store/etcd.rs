//! The etcd backend: the [`Store`] trait mapped onto a real etcd cluster through etcd-client.
//! Conditional writes are transactions comparing `create_revision`/`mod_revision`; prefixes
//! are `[prefix, prefix_end)` ranges; watches start at `from_revision + 1`.

use std::sync::atomic::{AtomicI64, Ordering};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    EventKind, KeyValue, RangeResult, Revision, Store, StoreError, WatchEvent, WatchStream,
    prefix_end,
};

/// Events buffered between the etcd watch and the consumer.
const OUT_BUFFER: usize = 256;
/// Largest response accepted (a list of many large objects easily exceeds gRPC's 4 MiB
/// default; the Kubernetes apiserver lifts the limit the same way).
const MAX_RESPONSE: usize = i32::MAX as usize;

/// TLS material for talking to etcd (PEM text).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate.
    pub ca_pem: String,
    /// A client certificate and key, when etcd requires client authentication.
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    /// The name to check in the server certificate, if not the endpoint's host.
    pub server_name: Option<String>,
}

pub struct EtcdStore {
    client: Client,
    /// The highest compaction point this client has seen, reported with `Compacted` (etcd's
    /// "compacted" error does not carry it).
    compacted: AtomicI64,
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`, or `https://` with
    /// `tls`).
    pub async fn connect(
        endpoints: &[String],
        tls: Option<EtcdTls>,
    ) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Other("etcd endpoints: none given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(10))
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(10),
            );
        if let Some(tls) = tls {
            let mut config = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(tls.ca_pem));
            match (tls.client_cert_pem, tls.client_key_pem) {
                (Some(cert), Some(key)) => {
                    config = config.identity(etcd_client::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Other(
                        "etcd tls: client_cert_pem and client_key_pem must be given together"
                            .into(),
                    ));
                }
            }
            if let Some(name) = tls.server_name {
                config = config.domain_name(name);
            }
            options = options.with_tls(config);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| {
                StoreError::other(&format!("connect to etcd {}", endpoints.join(",")), e)
            })?;
        Ok(EtcdStore {
            client,
            compacted: AtomicI64::new(0),
        })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE)
    }

    fn map_err(&self, context: &str, err: etcd_client::Error, requested: Revision) -> StoreError {
        let text = err.to_string();
        if text.contains("required revision has been compacted") {
            let known = self.compacted.load(Ordering::Relaxed);
            StoreError::Compacted {
                compacted: known.max(requested + 1),
            }
        } else if text.contains("required revision is a future revision") {
            StoreError::FutureRevision
        } else {
            StoreError::Other(format!("etcd {context}: {text}"))
        }
    }

    /// The current value of `key` from the `else` branch of a failed transaction.
    fn current_from(resp: &etcd_client::TxnResponse) -> Result<Option<KeyValue>, StoreError> {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                return get.kvs().first().map(convert).transpose();
            }
        }
        Ok(None)
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::other("etcd key is not UTF-8", e))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Other("etcd response without a header".into()))
}

/// The etcd key range `[key, range_end)` for a prefix; `"\0"` as range_end means "no end".
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
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

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self
            .kv()
            .get(vec![0], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.map_err("get revision", e, 0))?;
        header_revision(resp.header())
    }

    async fn get(&self, key: &str, at: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        let mut options = GetOptions::new();
        if let Some(rev) = at {
            options = options.with_revision(rev);
        }
        let resp = self
            .kv()
            .get(key, Some(options))
            .await
            .map_err(|e| self.map_err("get", e, at.unwrap_or(0)))?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<RangeResult, StoreError> {
        let (mut key, end) = prefix_range(prefix);
        if let Some(after) = start_after {
            let mut next = after.as_bytes().to_vec();
            next.push(0);
            if next > key {
                key = next;
            }
        }
        let mut options = GetOptions::new().with_range(end).with_limit(limit as i64);
        if let Some(rev) = at {
            options = options.with_revision(rev);
        }
        let resp = self
            .kv()
            .get(key, Some(options))
            .await
            .map_err(|e| self.map_err("range", e, at.unwrap_or(0)))?;
        let kvs = resp
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResult {
            kvs,
            more: resp.more(),
            revision: match at {
                Some(rev) => rev,
                None => header_revision(resp.header())?,
            },
        })
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<Revision, StoreError> {
        let mut put = PutOptions::new();
        if let Some(id) = lease {
            put = put.with_lease(id);
        }
        let txn = etcd_client::Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, Some(put))]);
        let resp = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.map_err("create", e, 0))?;
        if resp.succeeded() {
            header_revision(resp.header())
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
        let txn = etcd_client::Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                expected_mod_revision,
            )])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_ignore_lease()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.map_err("update", e, 0))?;
        if resp.succeeded() {
            return header_revision(resp.header());
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
        let guard = match expected_mod_revision {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = etcd_client::Txn::new()
            .when([guard])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.map_err("delete", e, 0))?;
        if !resp.succeeded() {
            return match Self::current_from(&resp)? {
                None => Err(StoreError::NotFound),
                current => Err(StoreError::Conflict { current }),
            };
        }
        let revision = header_revision(resp.header())?;
        for op in resp.op_responses() {
            if let TxnOpResponse::Delete(del) = op
                && let Some(prev) = del.prev_kvs().first()
            {
                return Ok((revision, convert(prev)?));
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
        let (key, end) = prefix_range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from_revision + 1)
            .with_prev_key();
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
            .watch(key, Some(options))
            .await
            .map_err(|e| self.map_err("watch", e, from_revision))?;
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let task = tokio::spawn(async move {
            let fail = |tx: mpsc::Sender<_>, e| async move {
                let _ = tx.send(Err(e)).await;
            };
            loop {
                let resp = match stream.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        return fail(tx, StoreError::Other("etcd watch ended".into())).await;
                    }
                    Err(e) => return fail(tx, StoreError::other("etcd watch", e)).await,
                };
                if resp.canceled() {
                    let err = if resp.compact_revision() > 0 {
                        StoreError::Compacted {
                            compacted: resp.compact_revision(),
                        }
                    } else {
                        StoreError::Other(format!("etcd watch canceled: {}", resp.cancel_reason()))
                    };
                    return fail(tx, err).await;
                }
                for event in resp.events() {
                    let converted = convert_event(event);
                    let failed = converted.is_err();
                    if tx.send(converted).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(WatchStream::new(rx, Some(task.abort_handle())))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self
            .kv()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
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
        let resp = self
            .client
            .lease_client()
            .grant(ttl_seconds, None)
            .await
            .map_err(|e| self.map_err("lease grant", e, 0))?;
        Ok(resp.id())
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), StoreError> {
        self.client
            .lease_client()
            .revoke(id)
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(&format!("revoke lease {id}"), e, 0))
    }
}

fn convert_event(event: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Other("etcd watch event without a key".into()))?;
    let prev = event.prev_kv().map(convert).transpose()?;
    match event.event_type() {
        EventType::Put => Ok(WatchEvent {
            kind: EventKind::Put,
            kv: convert(kv)?,
            prev,
        }),
        EventType::Delete => {
            // etcd reports a delete with an empty value; carry the last value instead.
            let kv = match &prev {
                Some(p) => KeyValue {
                    mod_revision: kv.mod_revision(),
                    ..p.clone()
                },
                None => convert(kv)?,
            };
            Ok(WatchEvent {
                kind: EventKind::Delete,
                kv,
                prev,
            })
        }
    }
}
