//! Deployment: one ReplicaSet per pod template (named by the template's hash), rolled
//! forward by RollingUpdate (maxSurge / maxUnavailable) or Recreate, with revision
//! annotations (so `kubectl rollout history/undo` work), a history limit, pause, and the
//! status `kubectl rollout status` reads (observedGeneration, updated/available replicas,
//! Progressing and Available conditions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{Ctx, Error};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";

pub async fn run(client: Client) {
    let ctx = Ctx::new(client.clone());
    let stream = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, ctx);
    super::drain("deployment", stream).await;
}

fn error_policy(d: Arc<Deployment>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!("deployment {}: {e}", super::key_of(&d.metadata));
    ctx.backoff.failed(&super::key_of(&d.metadata))
}

/// Kubernetes' encoding of a hash: its decimal digits mapped to consonants and digits that
/// cannot spell words.
fn safe_encode(n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    n.to_string()
        .bytes()
        .map(|b| ALPHABET[(b - b'0') as usize * 3 % ALPHABET.len()] as char)
        .collect()
}

/// FNV-1a over the template's JSON (maps serialise in key order) and the collision count.
pub fn template_hash(t: &PodTemplateSpec, collisions: i32) -> String {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    prune(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes.iter().chain(collisions.to_string().as_bytes()) {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    safe_encode(h)
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Drops nulls and empty maps and lists, so `resources: {}` (what Go clients such as
/// `kubectl rollout undo` write for an empty struct) compares equal to no field at all.
fn prune(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !prune(x));
            m.is_empty()
        }
        serde_json::Value::Array(a) => {
            for x in a.iter_mut() {
                prune(x);
            }
            a.is_empty()
        }
        _ => false,
    }
}

fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    prune(&mut v);
    if let Some(labels) = v["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    v
}

/// maxSurge / maxUnavailable as counts of `total` (surge rounds up, unavailable down).
fn resolve(v: Option<&IntOrString>, default_pct: i32, total: i32, round_up: bool) -> i32 {
    let pct = |p: i32| {
        let x = (total as i64) * (p as i64);
        (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
    };
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s
            .trim_end_matches('%')
            .parse::<i32>()
            .map(pct)
            .unwrap_or_else(|_| pct(default_pct)),
        None => pct(default_pct),
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

struct Plan<'a> {
    api: Api<ReplicaSet>,
    rss: &'a mut [ReplicaSet],
}

impl Plan<'_> {
    /// Sets `spec.replicas` of the ReplicaSet at `i` (API and local copy).
    async fn scale(&mut self, i: usize, n: i32, d: &Deployment, surge: i32) -> Result<(), Error> {
        if spec_replicas(&self.rss[i]) == n {
            return Ok(());
        }
        let name = self.rss[i].metadata.name.clone().unwrap_or_default();
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let patch = json!({
            "metadata": {"annotations": {
                "deployment.kubernetes.io/desired-replicas": want.to_string(),
                "deployment.kubernetes.io/max-replicas": (want + surge).to_string(),
            }},
            "spec": {"replicas": n},
        });
        self.rss[i] = self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = super::key_of(&d.metadata);
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec: DeploymentSpec = d
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("spec: Required value".into()))?;
    let selector = super::selector_string(&spec.selector)?;
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut rss: Vec<ReplicaSet> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|rs| super::controlled_by(&rs.metadata, &uid))
        .collect();
    rss.sort_by_key(|rs| revision(&rs.metadata));

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let paused = spec.paused == Some(true);
    let collisions = d
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let hash = template_hash(&spec.template, collisions);
    let wanted = without_hash(&spec.template);
    let find_new = |rss: &[ReplicaSet]| {
        rss.iter()
            .position(|rs| {
                rs.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HASH_LABEL))
                    .is_some_and(|h| *h == hash)
            })
            .or_else(|| {
                rss.iter().position(|rs| {
                    rs.spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| without_hash(t) == wanted)
                })
            })
    };
    let mut new_idx = find_new(&rss);
    let max_old_rev = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, rs)| revision(&rs.metadata))
        .max()
        .unwrap_or(0);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    let mut surge = if recreate {
        0
    } else {
        resolve(rolling.max_surge.as_ref(), 25, replicas, true)
    };
    let mut unavail = if recreate {
        replicas
    } else {
        resolve(rolling.max_unavailable.as_ref(), 25, replicas, false)
    };
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    surge = surge.max(0);
    let mut created = false;

    if new_idx.is_none() && !paused {
        let rs = new_replicaset(&d, &spec, &hash, max_old_rev + 1, replicas, surge);
        match api.create(&PostParams::default(), &rs).await {
            Ok(rs) => {
                rss.push(rs);
                new_idx = Some(rss.len() - 1);
                created = true;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // The name is taken by a ReplicaSet with another template: count a collision
                // so the next hash differs.
                let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
                dapi.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}})),
                )
                .await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            Err(e) => return Err(e.into()),
        }
    } else if let Some(i) = new_idx
        && revision(&rss[i].metadata) <= max_old_rev
        && !paused
    {
        // A rollback (or a template seen before): the old ReplicaSet becomes the newest revision.
        let rs_name = rss[i].metadata.name.clone().unwrap_or_default();
        rss[i] = api
            .patch(
                &rs_name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {REVISION: (max_old_rev + 1).to_string()}}}),
                ),
            )
            .await?;
    }

    let mut plan = Plan {
        api: api.clone(),
        rss: &mut rss,
    };
    let olds: Vec<usize> = (0..plan.rss.len())
        .filter(|i| Some(*i) != new_idx)
        .collect();
    let old_spec: i32 = olds.iter().map(|&i| spec_replicas(&plan.rss[i])).sum();
    let old_pods: i32 = olds.iter().map(|&i| status_of(&plan.rss[i]).0).sum();
    if paused {
        // Paused: only scaling, and only when there is no rollout in flight.
        if let Some(n) = new_idx
            && old_spec == 0
        {
            plan.scale(n, replicas, &d, surge).await?;
        }
    } else if let Some(n) = new_idx {
        if old_spec == 0 {
            if !recreate || old_pods == 0 {
                plan.scale(n, replicas, &d, surge).await?;
            }
        } else if recreate {
            for &i in &olds {
                plan.scale(i, 0, &d, surge).await?;
            }
        } else {
            roll(&mut plan, n, &olds, &d, replicas, surge, unavail).await?;
        }
    }

    if !paused {
        cleanup_history(
            &api,
            plan.rss,
            new_idx,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
    }
    write_status(&ctx, &d, &rss, new_idx, replicas, unavail, paused, created).await?;
    ctx.backoff.ok(&key);
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// One step of a rolling update: surge the new ReplicaSet, else scale old ones down as far
/// as maxUnavailable allows (unhealthy replicas first).
async fn roll(
    plan: &mut Plan<'_>,
    n: usize,
    olds: &[usize],
    d: &Deployment,
    replicas: i32,
    surge: i32,
    unavail: i32,
) -> Result<(), Error> {
    let all_spec: i32 = plan.rss.iter().map(spec_replicas).sum();
    let new_spec = spec_replicas(&plan.rss[n]);
    if new_spec > replicas {
        plan.scale(n, replicas, d, surge).await?;
        return Ok(());
    }
    if new_spec < replicas {
        let room = replicas + surge - all_spec;
        if room > 0 {
            let target = replicas.min(new_spec + room);
            plan.scale(n, target, d, surge).await?;
            return Ok(());
        }
    }
    let min_available = replicas - unavail;
    let new_unavailable = spec_replicas(&plan.rss[n]) - status_of(&plan.rss[n]).2;
    let mut budget = all_spec - min_available - new_unavailable;
    if budget <= 0 {
        return Ok(());
    }
    // Replicas of old sets that are not available cost nothing to remove.
    for &i in olds {
        if budget <= 0 {
            break;
        }
        let cur = spec_replicas(&plan.rss[i]);
        let unhealthy = (cur - status_of(&plan.rss[i]).2).max(0).min(budget);
        if unhealthy > 0 {
            plan.scale(i, cur - unhealthy, d, surge).await?;
            budget -= unhealthy;
        }
    }
    let available: i32 = plan.rss.iter().map(|rs| status_of(rs).2).sum();
    let mut can_remove = (available - min_available).min(budget);
    for &i in olds {
        if can_remove <= 0 {
            break;
        }
        let cur = spec_replicas(&plan.rss[i]);
        let take = cur.min(can_remove);
        if take > 0 {
            plan.scale(i, cur - take, d, surge).await?;
            can_remove -= take;
        }
    }
    Ok(())
}

fn new_replicaset(
    d: &Deployment,
    spec: &DeploymentSpec,
    hash: &str,
    rev: i64,
    replicas: i32,
    surge: i32,
) -> ReplicaSet {
    let name = d.metadata.name.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    tmeta
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = tmeta.labels.clone();
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    // The Deployment's own annotations travel with the revision (change-cause for history).
    let mut annotations: BTreeMap<String, String> = d
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != REVISION && k != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    annotations.insert(REVISION.into(), rev.to_string());
    annotations.insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        replicas.to_string(),
    );
    annotations.insert(
        "deployment.kubernetes.io/max-replicas".into(),
        (replicas + surge).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![super::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond the history limit.
async fn cleanup_history(
    api: &Api<ReplicaSet>,
    rss: &[ReplicaSet],
    new_idx: Option<usize>,
    limit: i32,
) -> Result<(), Error> {
    let idle: Vec<&ReplicaSet> = rss
        .iter()
        .enumerate()
        .filter(|(i, rs)| Some(*i) != new_idx && spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .map(|(_, rs)| rs)
        .collect();
    let excess = idle.len().saturating_sub(limit.max(0) as usize);
    for rs in idle.iter().take(excess) {
        let name = rs.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn condition(
    old: Option<&DeploymentStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Time(jiff::Timestamp::now());
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let same = prev.is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(&message)
    });
    if same && let Some(p) = prev {
        return p.clone();
    }
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now),
        last_transition_time: transition,
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    ctx: &Ctx,
    d: &Deployment,
    rss: &[ReplicaSet],
    new_idx: Option<usize>,
    replicas: i32,
    unavail: i32,
    paused: bool,
    created: bool,
) -> Result<(), Error> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let total: i32 = rss.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = rss.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = rss.iter().map(|rs| status_of(rs).2).sum();
    let new_rs = new_idx.map(|i| &rss[i]);
    let updated = new_rs.map(|rs| status_of(rs).0).unwrap_or(0);
    let new_name = new_rs
        .and_then(|rs| rs.metadata.name.clone())
        .unwrap_or_default();
    let old = d.status.as_ref();
    let complete = new_rs.is_some()
        && updated == replicas
        && total == updated
        && available == updated
        && new_rs.is_some_and(|rs| spec_replicas(rs) == replicas);
    let available_cond = if available >= replicas - unavail {
        condition(
            old,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            old,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if paused {
        condition(
            old,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if complete {
        condition(
            old,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if created {
        condition(
            old,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else {
        condition(
            old,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![available_cond, progressing]),
        collision_count: old.and_then(|s| s.collision_count),
        terminating_replicas: None,
    };
    let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(rs) = new_rs {
        let rev = revision(&rs.metadata);
        if revision(&d.metadata) != rev {
            dapi.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev.to_string()}}})),
            )
            .await?;
        }
    }
    if old != Some(&status) {
        dapi.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(())
}
