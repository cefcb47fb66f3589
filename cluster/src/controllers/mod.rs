//! The controller manager: each controller is a kube-runtime `Controller` (or a watch-driven
//! loop) over our API server, requeued with exponential backoff on error. The whole set runs
//! while this process holds the `kube-controller-manager` Lease.

pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod manager;
pub mod nodelifecycle;
pub mod podcidr;
pub mod replicaset;
pub mod revisions;
pub mod rootca;
pub mod serviceaccount;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Client;
use kube::runtime::controller::Action;

/// An error a reconcile returns; it is logged and the object requeued with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Per-object failure counts, for exponential backoff (100 ms doubling up to 30 s).
#[derive(Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    pub fn failed(&self, key: &str) -> Action {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_string()).or_default();
        *n = (*n + 1).min(20);
        let delay = Duration::from_millis(100u64.saturating_mul(1 << (*n - 1).min(9)));
        Action::requeue(delay.min(Duration::from_secs(30)))
    }

    pub fn ok(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// What every controller gets.
pub struct Ctx {
    pub client: Client,
    pub backoff: Backoff,
}

impl Ctx {
    pub fn new(client: Client) -> std::sync::Arc<Ctx> {
        std::sync::Arc::new(Ctx {
            client,
            backoff: Backoff::default(),
        })
    }
}

/// "namespace/name" of an object.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The controller reference from `owner` (kind in `api_version`) to its dependents.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// A label selector in the query syntax (`a=b,c in (d)`).
pub fn selector_string(sel: &LabelSelector) -> Result<String, Error> {
    let s: kube::core::Selector = sel
        .clone()
        .try_into()
        .map_err(|e| Error::Invalid(format!("spec.selector: {e}")))?;
    Ok(s.to_string())
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready` seconds (as of now); with the time left when not yet.
pub fn pod_available(p: &Pod, min_ready: i32) -> (bool, Option<Duration>) {
    if !pod_ready(p) {
        return (false, None);
    }
    if min_ready <= 0 {
        return (true, None);
    }
    let since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let left = since + min_ready as i64 - jiff::Timestamp::now().as_second();
    if left <= 0 {
        (true, None)
    } else {
        (false, Some(Duration::from_secs(left as u64)))
    }
}

/// Pods that count: not being deleted and not finished.
pub fn pod_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// `status` as JSON for a merge patch, with each of `fields` it lacks set to null (so the
/// patch removes a value the new status omits).
pub fn merge_nulls<T: serde::Serialize>(status: &T, fields: &[&str]) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for f in fields {
            m.entry(f.to_string()).or_insert(serde_json::Value::Null);
        }
    }
    v
}

/// Drives a kube-runtime controller stream, logging failures.
pub async fn drain<S, T, E>(name: &'static str, stream: S)
where
    S: futures_util::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    stream
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(controller = name, "{e}");
            }
            futures_util::future::ready(())
        })
        .await;
}

/// Options of the controller manager.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where node pod CIDRs come from.
    pub cluster_cidr: ipnet::Ipv4Net,
    pub node_cidr_prefix: u8,
    pub node_lifecycle: nodelifecycle::Timing,
    /// The cluster CA (PEM) published in every namespace as `kube-root-ca.crt`; without
    /// it that controller does not run.
    pub root_ca: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_cidr: "10.244.0.0/16".parse().expect("a valid CIDR"),
            node_cidr_prefix: 24,
            node_lifecycle: Default::default(),
            root_ca: None,
        }
    }
}

/// Runs every controller until the future is dropped.
pub async fn run(client: Client, opts: Options) {
    tokio::join!(
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        daemonset::run(client.clone()),
        job::run(client.clone()),
        gc::run(client.clone()),
        endpoints::run(client.clone()),
        serviceaccount::run(client.clone()),
        async {
            if let Some(ca) = opts.root_ca.clone() {
                rootca::run(client.clone(), ca).await;
            }
        },
        podcidr::run(client.clone(), opts.cluster_cidr, opts.node_cidr_prefix),
        nodelifecycle::run(client.clone(), opts.node_lifecycle),
    );
}
