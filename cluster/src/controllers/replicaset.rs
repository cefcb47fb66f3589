//! ReplicaSet: keeps `spec.replicas` active pods from the template, owned by the ReplicaSet,
//! and reports replicas / fullyLabeled / ready / available and observedGeneration.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{Ctx, Error};

pub async fn run(client: Client) {
    let ctx = Ctx::new(client.clone());
    let stream = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, ctx);
    super::drain("replicaset", stream).await;
}

fn error_policy(rs: Arc<ReplicaSet>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!("replicaset {}: {e}", super::key_of(&rs.metadata));
    ctx.backoff.failed(&super::key_of(&rs.metadata))
}

/// The pods of `owner` matching `selector` in `ns`, straight from the API (no stale cache).
pub async fn owned_pods(
    client: &Client,
    ns: &str,
    selector: &str,
    uid: &str,
) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|p| super::controlled_by(&p.metadata, uid))
        .collect())
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = super::key_of(&rs.metadata);
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("spec: Required value".into()))?;
    let selector = super::selector_string(&spec.selector)?;
    let pods = owned_pods(&ctx.client, &ns, &selector, &uid).await?;
    let active: Vec<&Pod> = pods.iter().filter(|p| super::pod_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    if active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let tmeta = template.metadata.unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: tmeta.labels,
                annotations: tmeta.annotations,
                owner_references: Some(vec![super::controller_ref(
                    "apps/v1",
                    "ReplicaSet",
                    &rs.metadata,
                )]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        let pp = PostParams::default();
        let creates = (0..want - active.len()).map(|_| api.create(&pp, &pod));
        for r in join_all(creates).await {
            r?;
        }
    } else if active.len() > want {
        let mut victims = active.clone();
        // Unscheduled first, then pending, then not ready, then the newest.
        victims.sort_by_key(|p| {
            let unscheduled = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty);
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            (
                !unscheduled,
                running,
                super::pod_ready(p),
                std::cmp::Reverse(created),
            )
        });
        let deletes = victims[..active.len() - want].iter().map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            async move { api.delete(&name, &DeleteParams::default()).await }
        });
        for r in join_all(deletes).await {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut recheck: Option<Duration> = None;
    let mut available = 0;
    for p in &active {
        let (ok, left) = super::pod_available(p, min_ready);
        if ok {
            available += 1;
        }
        if let Some(l) = left {
            recheck = Some(recheck.map_or(l, |r: Duration| r.min(l)));
        }
    }
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(active.iter().filter(|p| super::pod_ready(p)).count() as i32),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        let rsapi: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        rsapi
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    ctx.backoff.ok(&key);
    Ok(match recheck {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}
