//! DaemonSets and Jobs end to end against `cluster server` (its in-process scheduler and
//! controller manager) with simulated nodes; driven by the real kubectl.

mod controllers_support;
mod kubectl_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controllers_support::{Kubelet, active_pods, add_node, client, node_of, wait_for};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kubectl_support::Server;
use serde_json::json;

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: c
        image: busybox:1
";

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// Node -> images of the active daemon pods on it.
async fn placement(c: &Client) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in active_pods(c, "default", "app=agent").await {
        m.entry(node_of(&p).unwrap_or_default())
            .or_default()
            .push(image(&p));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_eligible_node_and_rolls_out() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "node-a", &[]).await;
    add_node(&c, "node-b", &[]).await;
    add_node(&c, "dedicated", &[]).await;
    let nodes: Api<Node> = Api::all(c.clone());
    nodes
        .patch(
            "dedicated",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let _kubelet = Kubelet::start(&c);

    s.ok_stdin(&["apply", "-f", "-"], DAEMONSET);
    s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let want: BTreeMap<String, Vec<String>> = [
        ("node-a".to_string(), vec!["busybox:1".to_string()]),
        ("node-b".to_string(), vec!["busybox:1".to_string()]),
    ]
    .into();
    assert_eq!(placement(&c).await, want, "the tainted node gets no pod");
    let pod = &active_pods(&c, "default", "app=agent").await[0];
    let tolerations = serde_json::to_string(&pod.spec.as_ref().unwrap().tolerations).unwrap();
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable")
            && tolerations.contains("node.kubernetes.io/not-ready"),
        "{tolerations}"
    );
    let table = s.ok(&["get", "ds", "agent"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..6], &["agent", "2", "2", "2", "2", "2"], "{table}");

    // A new node gets its pod.
    add_node(&c, "node-c", &[]).await;
    wait_for("a pod on node-c", || async {
        placement(&c).await.contains_key("node-c").then_some(())
    })
    .await;
    s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);

    // A template change replaces every pod, node by node.
    s.ok(&["set", "image", "ds/agent", "c=busybox:2"]);
    s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let placed = wait_for("only new pods, one per node", || async {
        let m = placement(&c).await;
        m.values()
            .all(|imgs| imgs == &["busybox:2".to_string()])
            .then_some(m)
    })
    .await;
    let nodes: BTreeSet<&str> = placed.keys().map(String::as_str).collect();
    assert_eq!(nodes, ["node-a", "node-b", "node-c"].into());

    // Tolerating the taint brings the dedicated node in.
    s.ok(&[
        "patch",
        "ds/agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}"#,
    ]);
    s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    wait_for("a pod on the dedicated node", || async {
        let m = placement(&c).await;
        (m.len() == 4 && m.values().all(|v| v.len() == 1)).then_some(())
    })
    .await;
}

/// Plays the kubelet for Job pods: a bound pod ends as its `sim/outcome` label says
/// (`succeed` or `fail`; `run` leaves it running), and a deleted pod is removed. Records the most pods of each job that
/// were active at once.
struct JobKubelet {
    task: tokio::task::JoinHandle<()>,
    max_active: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl JobKubelet {
    fn start(c: &Client) -> JobKubelet {
        let c = c.clone();
        let max_active: Arc<Mutex<BTreeMap<String, usize>>> = Default::default();
        let seen = max_active.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
            loop {
                let list = pods
                    .list(&ListParams::default().labels("job-name"))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                let mut active: BTreeMap<String, usize> = BTreeMap::new();
                for p in &list {
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    let job = labels.get("job-name").cloned().unwrap_or_default();
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    if p.metadata.deletion_timestamp.is_none()
                        && !matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
                    {
                        *active.entry(job).or_default() += 1;
                    }
                }
                {
                    let mut m = seen.lock().unwrap();
                    for (job, n) in active {
                        let e = m.entry(job).or_default();
                        *e = (*e).max(n);
                    }
                }
                // A deleted pod is finished at once (its containers "stopped").
                for p in list
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some())
                {
                    let _ = pods
                        .delete(
                            p.metadata.name.as_deref().unwrap(),
                            &kube::api::DeleteParams::default().grace_period(0),
                        )
                        .await;
                }
                // One pod per round, so the controller sees every step.
                let next = list.iter().find(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    node_of(p).is_some()
                        && p.metadata.deletion_timestamp.is_none()
                        && phase.as_deref() == Some("Pending")
                        && p.metadata.labels.as_ref().unwrap().get("sim/outcome")
                            != Some(&"run".to_string())
                });
                if let Some(p) = next {
                    let outcome = &p.metadata.labels.as_ref().unwrap()["sim/outcome"];
                    let phase = if outcome == "fail" {
                        "Failed"
                    } else {
                        "Succeeded"
                    };
                    let _ = pods
                        .patch_status(
                            p.metadata.name.as_deref().unwrap(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"phase": phase}})),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        JobKubelet { task, max_active }
    }
}

impl Drop for JobKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn job_yaml(name: &str, outcome: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    metadata:
      labels:
        sim/outcome: {outcome}
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: busybox
"
    )
}

async fn job_pods(c: &Client, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap()
        .items
}

fn condition_reason(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_fail_and_expire() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "node-a", &[]).await;
    add_node(&c, "node-b", &[]).await;
    let sim = JobKubelet::start(&c);
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");

    // completions=3, parallelism=2: three successes, never more than two at once.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &job_yaml("work", "succeed", "  completions: 3\n  parallelism: 2"),
    );
    // backoffLimit=1: the second failed pod fails the Job.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &job_yaml("flaky", "fail", "  backoffLimit: 1"),
    );
    // A pod that never ends is stopped by activeDeadlineSeconds.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &job_yaml("slow", "run", "  activeDeadlineSeconds: 2"),
    );
    // A finished Job with ttlSecondsAfterFinished goes away.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &job_yaml("brief", "succeed", "  ttlSecondsAfterFinished: 1"),
    );

    s.ok(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=60s",
    ]);
    let work = jobs.get("work").await.unwrap();
    let st = work.status.clone().unwrap();
    assert_eq!(st.succeeded, Some(3), "{st:?}");
    assert_eq!(st.active.unwrap_or(0), 0, "{st:?}");
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    assert_eq!(job_pods(&c, "work").await.len(), 3, "exactly 3 pods made");
    assert_eq!(sim.max_active.lock().unwrap()["work"], 2);
    let table = s.ok(&["get", "job", "work"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    s.ok(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=60s",
    ]);
    let flaky = jobs.get("flaky").await.unwrap();
    assert_eq!(
        condition_reason(&flaky, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(flaky.status.as_ref().unwrap().failed, Some(2));
    assert_eq!(job_pods(&c, "flaky").await.len(), 2);
    assert!(condition_reason(&flaky, "Complete").is_none());

    s.ok(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=60s",
    ]);
    let slow = jobs.get("slow").await.unwrap();
    assert_eq!(
        condition_reason(&slow, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );
    wait_for("the slow job's pod deleted", || async {
        job_pods(&c, "slow")
            .await
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;

    wait_for("the brief job deleted after its TTL", || async {
        jobs.get_opt("brief").await.unwrap().is_none().then_some(())
    })
    .await;
}
