//! Job: runs pods from the template until `completions` of them succeed (NonIndexed), or one
//! per index 0..completions succeeds (Indexed), at most `parallelism` at a time. Failed pods
//! (and container restarts under restartPolicy OnFailure) count against `backoffLimit`, with
//! an exponential delay before each replacement; `activeDeadlineSeconds` bounds the run.
//! A finished Job gets a `Complete` or `Failed` condition (what `kubectl wait` reads), its
//! remaining pods are deleted, and after `ttlSecondsAfterFinished` the Job itself.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{Backoff, Error};

/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// The first delay before replacing a failed pod, doubled per further failure (upstream
/// uses 10 s; shorter here so a retry is seen in seconds), capped at `BACKOFF_MAX`.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Status fields this controller may clear (a merge patch must name them to remove them).
const JOB_STATUS_FIELDS: [&str; 6] = [
    "active",
    "succeeded",
    "failed",
    "conditions",
    "completionTime",
    "completedIndexes",
];

struct JobCtx {
    client: Client,
    backoff: Backoff,
    /// Per job uid: the failure count last seen and when it last grew.
    failures: Mutex<HashMap<String, (i32, Instant)>>,
}

pub async fn run(client: Client) {
    let ctx = Arc::new(JobCtx {
        client: client.clone(),
        backoff: Backoff::default(),
        failures: Mutex::default(),
    });
    let stream = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client), watcher::Config::default())
        .run(reconcile, error_policy, ctx);
    super::drain("job", stream).await;
}

fn error_policy(job: Arc<Job>, e: &Error, ctx: Arc<JobCtx>) -> Action {
    tracing::warn!("job {}: {e}", super::key_of(&job.metadata));
    ctx.backoff.failed(&super::key_of(&job.metadata))
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .and_then(|v| v.parse().ok())
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// "0-2,5" for the indexes {0,1,2,5}.
pub fn compress_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn finished(status: &JobStatus) -> Option<&JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// `conditions` with `type_` set to True (kept as is, with its transition time, when it
/// already is).
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) {
    if conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
    {
        return;
    }
    conditions.retain(|c| c.type_ != type_);
    conditions.push(JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// What the pods say about the Job.
#[derive(Default)]
struct Counts<'a> {
    active: Vec<&'a Pod>,
    succeeded: i32,
    failed: i32,
    ready: i32,
    succeeded_indexes: BTreeSet<i32>,
    /// Failures counted against backoffLimit: failed pods, plus container restarts of
    /// active pods under restartPolicy OnFailure.
    failures: i32,
}

fn count(pods: &[Pod]) -> Counts<'_> {
    let mut c = Counts::default();
    for p in pods {
        match phase(p) {
            Some("Succeeded") => {
                c.succeeded += 1;
                if let Some(i) = index_of(p) {
                    c.succeeded_indexes.insert(i);
                }
            }
            Some("Failed") => {
                c.failed += 1;
                c.failures += 1;
            }
            _ if p.metadata.deletion_timestamp.is_none() => {
                c.active.push(p);
                if super::pod_ready(p) {
                    c.ready += 1;
                }
                let on_failure =
                    p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
                if on_failure {
                    c.failures += restarts(p);
                }
            }
            _ => {}
        }
    }
    c
}

async fn delete_pods(api: &Api<Pod>, pods: &[&Pod]) -> Result<(), Error> {
    for p in pods {
        let name = p.metadata.name.as_deref().unwrap_or("");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<JobCtx>) -> Result<Action, Error> {
    let key = super::key_of(&job.metadata);
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("spec: Required value".into()))?;
    let selector = spec
        .selector
        .as_ref()
        .ok_or_else(|| Error::Invalid("spec.selector: Required value".into()))?;
    let selector = super::selector_string(selector)?;
    let old = job.status.clone().unwrap_or_default();
    let pods = super::replicaset::owned_pods(&ctx.client, &ns, &selector, &uid).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let now = jiff::Timestamp::now();
    let counts = count(&pods);

    if let Some(done) = finished(&old) {
        delete_pods(&api, &counts.active).await?;
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        return after_finish(&job, &spec, &old, done, &ctx).await;
    }

    let mut status = old.clone();
    let start = old.start_time.clone().unwrap_or(Time(now));
    let suspended = spec.suspend == Some(true);
    if !suspended {
        status.start_time = Some(start.clone());
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut requeue: Option<Duration> = None;

    let succeeded_enough = match (indexed, spec.completions) {
        (true, Some(n)) => counts.succeeded_indexes.len() as i32 >= n,
        (_, Some(n)) => counts.succeeded >= n,
        (_, None) => counts.succeeded > 0 && counts.active.is_empty(),
    };
    let restarts = counts.failures - counts.failed;
    let past_backoff = counts.failed > backoff_limit || (restarts > 0 && restarts >= backoff_limit);
    let deadline = spec
        .active_deadline_seconds
        .filter(|_| !suspended)
        .map(|d| start.0.as_second() + d - now.as_second());

    let mut active_after = counts.active.len() as i32;
    if succeeded_enough {
        delete_pods(&api, &counts.active).await?;
        active_after = 0;
        set_condition(
            &mut conditions,
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        );
        set_condition(
            &mut conditions,
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        );
        status.completion_time = Some(Time(now));
    } else if past_backoff || deadline.is_some_and(|left| left <= 0) {
        let (reason, message) = if past_backoff {
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        } else {
            (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        };
        delete_pods(&api, &counts.active).await?;
        active_after = 0;
        set_condition(&mut conditions, "FailureTarget", reason, message, now);
        set_condition(&mut conditions, "Failed", reason, message, now);
    } else if suspended {
        delete_pods(&api, &counts.active).await?;
        active_after = 0;
        set_condition(
            &mut conditions,
            "Suspended",
            "JobSuspended",
            "Job suspended",
            now,
        );
    } else {
        conditions.retain(|c| c.type_ != "Suspended");
        if let Some(left) = deadline {
            requeue = Some(Duration::from_secs(left.max(1) as u64));
        }
        // Before replacing failed pods, wait BACKOFF_BASE * 2^(failures-1) since the last one.
        let wait = {
            let mut seen = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry(uid.clone()).or_insert((0, Instant::now()));
            if counts.failures > entry.0 {
                *entry = (counts.failures, Instant::now());
            }
            if counts.failures == 0 {
                Duration::ZERO
            } else {
                let delay = BACKOFF_BASE
                    .saturating_mul(1 << (counts.failures - 1).min(16))
                    .min(BACKOFF_MAX);
                delay.saturating_sub(entry.1.elapsed())
            }
        };
        let creates = plan_creates(&spec, indexed, parallelism, &counts);
        let surplus = counts.active.len() as i32 - parallelism;
        if surplus > 0 {
            let mut newest = counts.active.clone();
            newest.sort_by_key(|p| {
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            delete_pods(&api, &newest[..surplus as usize]).await?;
            active_after -= surplus;
        }
        if !creates.is_empty() && !wait.is_zero() {
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        } else {
            for index in &creates {
                let pod = new_pod(&job, &spec, *index);
                api.create(&PostParams::default(), &pod).await?;
                active_after += 1;
            }
        }
    }

    status.active = Some(active_after).filter(|n| *n > 0);
    status.succeeded = Some(counts.succeeded).filter(|n| *n > 0);
    status.failed = Some(counts.failed).filter(|n| *n > 0);
    status.ready = Some(counts.ready);
    status.conditions = Some(conditions).filter(|c| !c.is_empty());
    if indexed {
        status.completed_indexes = Some(compress_indexes(&counts.succeeded_indexes));
    }
    if job.status.as_ref() != Some(&status) {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": super::merge_nulls(&status, &JOB_STATUS_FIELDS)})),
        )
        .await?;
    }
    ctx.backoff.ok(&key);
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// The pods to create now: `None` per NonIndexed pod, `Some(i)` per missing index.
fn plan_creates(
    spec: &JobSpec,
    indexed: bool,
    parallelism: i32,
    counts: &Counts<'_>,
) -> Vec<Option<i32>> {
    let active = counts.active.len() as i32;
    let room = (parallelism - active).max(0);
    if indexed {
        let Some(completions) = spec.completions else {
            return Vec::new();
        };
        let running: BTreeSet<i32> = counts.active.iter().filter_map(|p| index_of(p)).collect();
        return (0..completions)
            .filter(|i| !counts.succeeded_indexes.contains(i) && !running.contains(i))
            .take(room as usize)
            .map(Some)
            .collect();
    }
    let want_active = match spec.completions {
        Some(n) => parallelism.min(n - counts.succeeded).max(0),
        // A work queue: once one pod succeeded, no new pods start.
        None if counts.succeeded > 0 => 0,
        None => parallelism,
    };
    vec![None; (want_active - active).max(0) as usize]
}

fn new_pod(job: &Job, spec: &JobSpec, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX_KEY.into(), i.to_string());
            annotations.insert(INDEX_KEY.into(), i.to_string());
            if pod_spec.hostname.is_none() {
                pod_spec.hostname = Some(format!("{name}-{i}"));
            }
            for c in &mut pod_spec.containers {
                c.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: Some(i.to_string()),
                    value_from: None,
                });
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            owner_references: Some(vec![super::controller_ref(
                "batch/v1",
                "Job",
                &job.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// A finished Job: delete it `ttlSecondsAfterFinished` after it finished.
async fn after_finish(
    job: &Job,
    spec: &JobSpec,
    status: &JobStatus,
    done: &JobCondition,
    ctx: &JobCtx,
) -> Result<Action, Error> {
    let key = super::key_of(&job.metadata);
    let Some(ttl) = spec.ttl_seconds_after_finished else {
        ctx.backoff.ok(&key);
        return Ok(Action::await_change());
    };
    let finished_at = status
        .completion_time
        .as_ref()
        .or(done.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    let left = finished_at + ttl as i64 - jiff::Timestamp::now().as_second();
    if left > 0 {
        ctx.backoff.ok(&key);
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    let jobs: Api<Job> = Api::namespaced(
        ctx.client.clone(),
        job.metadata.namespace.as_deref().unwrap_or(""),
    );
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        // Only this Job, not a newer one of the same name.
        preconditions: Some(kube::api::Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs
        .delete(job.metadata.name.as_deref().unwrap_or(""), &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.backoff.ok(&key);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, index: Option<i32>) -> Pod {
        let mut v = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"phase": phase}});
        if let Some(i) = index {
            v["metadata"]["annotations"] = json!({INDEX_KEY: i.to_string()});
        }
        serde_json::from_value(v).unwrap()
    }

    fn spec(v: serde_json::Value) -> JobSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn indexes_compress_to_ranges() {
        let s: BTreeSet<i32> = [0, 1, 2, 5, 7, 8].into();
        assert_eq!(compress_indexes(&s), "0-2,5,7-8");
        assert_eq!(compress_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn creates_respect_parallelism_and_completions() {
        let sp = spec(json!({"template": {}, "completions": 3, "parallelism": 2}));
        let none: Vec<Pod> = vec![];
        assert_eq!(plan_creates(&sp, false, 2, &count(&none)).len(), 2);
        let pods = vec![
            pod("Succeeded", None),
            pod("Succeeded", None),
            pod("Running", None),
        ];
        assert_eq!(plan_creates(&sp, false, 2, &count(&pods)).len(), 0);
        let pods = vec![pod("Succeeded", None), pod("Failed", None)];
        let c = count(&pods);
        assert_eq!((c.succeeded, c.failed, c.failures), (1, 1, 1));
        assert_eq!(plan_creates(&sp, false, 2, &c).len(), 2);
        let ix = spec(
            json!({"template": {}, "completions": 4, "parallelism": 2, "completionMode": "Indexed"}),
        );
        let pods = vec![pod("Succeeded", Some(0)), pod("Running", Some(2))];
        assert_eq!(
            plan_creates(&ix, true, 2, &count(&pods)),
            vec![Some(1)],
            "the lowest missing index not running"
        );
        let queue = spec(json!({"template": {}, "parallelism": 3}));
        assert_eq!(plan_creates(&queue, false, 3, &count(&none)).len(), 3);
        assert!(plan_creates(&queue, false, 3, &count(&[pod("Succeeded", None)])).is_empty());
    }
}
