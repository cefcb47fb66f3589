//! Scheduling benchmark: pods bound per second and create-to-bound latency (p50/p99), with
//! the API server on SQLite in this process, simulated nodes (Node objects and Lease
//! heartbeats) and pods created by a bounded pool of clients.
//!
//! Two runs, each on a fresh server with the same nodes and pods:
//! - `naive`: a first-fit binder that binds each pending pod to the next node with room
//!   (the API server's cost of a bind, no scheduling work);
//! - `scheduler`: our scheduler (filters, scores, assumes, binds).
//!
//! Both keep the same number of binds in flight (`scheduler::BIND_PARALLELISM`).
//!
//! The ratio shows the scheduler's own overhead over the bind path. kube-scheduler's
//! scheduler_perf figure is printed as a reference, not measured here.
//!
//! `cargo run --release -p cluster --bin sched-bench [-- --nodes 1000 --pods 10000 --clients 16] [-o json]`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use cluster::bench::report::{Comparison, Format};
use cluster::bench::stats::{ms, percentile};
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

/// kube-scheduler's scheduler_perf throughput for 5,000 nodes (a reference, not measured).
const UPSTREAM_PODS_PER_SEC: f64 = 270.0;
const NAMESPACE: &str = "bench";
const PODS_PER_NODE: usize = 110;

#[derive(Parser, Debug, Clone)]
#[command(about = "Scheduling throughput and latency against the in-process API server")]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to schedule.
    #[arg(long, default_value_t = 10000)]
    pods: usize,
    /// Concurrent clients creating pods (and nodes).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds between a node's Lease renewals (kubelet's default is 10).
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Binder {
    Naive,
    Scheduler,
}

struct Figures {
    pods_per_sec: f64,
    p50: Duration,
    p99: Duration,
    create_per_sec: f64,
}

/// A fresh API server on SQLite in a temporary directory, and an admin client for it.
async fn start_server(dir: &std::path::Path) -> Result<Client> {
    let store = ros_store::sqlite::SqliteStore::open(&dir.join("state.db"))
        .await
        .context("opening the SQLite store")?;
    let opts = cluster::apiserver::Options {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        service_cidr: "10.96.0.0/12".parse()?,
        tls_sans: Vec::new(),
        connections: Default::default(),
    };
    let running = cluster::apiserver::start(opts, Arc::new(store)).await?;
    let client = cluster::controllers::manager::client_from_kubeconfig(&running.kubeconfig).await?;
    // The server task runs until the process ends.
    tokio::spawn(running.wait());
    Ok(client)
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

async fn create_nodes(c: &Client, args: &Args) -> Result<()> {
    let nodes: Api<Node> = Api::all(c.clone());
    stream::iter(0..args.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = node_name(i);
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
                    "spec": {},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                let now = jiff::Timestamp::now().to_string();
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                            "capacity": {"cpu": "4", "memory": "8Gi", "pods": PODS_PER_NODE.to_string()},
                            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": PODS_PER_NODE.to_string()},
                            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                        }})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.clients)
        .try_collect::<()>()
        .await
}

/// Renews every node's Lease each `heartbeat_seconds`, spread over the period.
fn heartbeats(c: &Client, args: &Args) -> tokio::task::JoinHandle<()> {
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let n = args.nodes;
    let period = Duration::from_secs(args.heartbeat_seconds.max(1));
    tokio::spawn(async move {
        let gap = period / n.max(1) as u32;
        let mut tick = tokio::time::interval(gap.max(Duration::from_micros(100)));
        let mut i = 0;
        loop {
            tick.tick().await;
            let name = node_name(i % n);
            i += 1;
            let leases = leases.clone();
            tokio::spawn(async move {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                             "renewTime": jiff::Timestamp::now().to_string()}});
                let _ = leases
                    .patch(
                        &name,
                        &PatchParams::apply("sched-bench").force(),
                        &Patch::Apply(lease),
                    )
                    .await;
            });
        }
    })
}

fn bench_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))
    .expect("a valid pod")
}

async fn bind(pods: &Api<Pod>, pod: &Pod, node: &str) -> kube::Result<()> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = pods
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The naive binder: every pending pod in the namespace goes to the first node (from a
/// moving cursor) with room, one bind at a time.
fn naive_binder(c: &Client, nodes: usize) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NAMESPACE);
    tokio::spawn(async move {
        let mut count = vec![0usize; nodes];
        let mut cursor = 0;
        // As many binds in flight as the scheduler allows itself.
        let slots = Arc::new(tokio::sync::Semaphore::new(
            cluster::scheduler::BIND_PARALLELISM,
        ));
        let mut done: std::collections::HashSet<String> = Default::default();
        let mut events = std::pin::pin!(watcher(pods.clone(), watcher::Config::default()));
        while let Some(ev) = events.next().await {
            let pod = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            let unbound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty);
            if !unbound || !done.insert(pod.name_any()) {
                continue;
            }
            let Some(i) = (0..nodes)
                .map(|k| (cursor + k) % nodes)
                .find(|&i| count[i] < PODS_PER_NODE)
            else {
                continue;
            };
            cursor = (i + 1) % nodes;
            count[i] += 1;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let pods = pods.clone();
            tokio::spawn(async move {
                if let Err(e) = bind(&pods, &pod, &node_name(i)).await {
                    eprintln!("naive bind {}: {e}", pod.name_any());
                }
                drop(permit);
            });
        }
    })
}

/// Records when each pod is first seen bound; sends once `total` pods are.
fn bound_watch(
    c: &Client,
    total: usize,
    bound_at: Arc<Mutex<HashMap<String, Instant>>>,
    ready: oneshot::Sender<()>,
    all_bound: oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NAMESPACE);
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut all_bound = Some(all_bound);
        let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
        while let Some(ev) = events.next().await {
            let pod = match ev {
                Ok(watcher::Event::InitDone) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
            {
                let now = Instant::now();
                let mut m = bound_at.lock().await;
                m.entry(pod.name_any()).or_insert(now);
                if m.len() >= total
                    && let Some(s) = all_bound.take()
                {
                    let _ = s.send(());
                }
            }
        }
    })
}

async fn run(binder: Binder, args: &Args) -> Result<Figures> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let c = start_server(dir.path()).await?;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let t = Instant::now();
    create_nodes(&c, args).await?;
    eprintln!(
        "  {binder:?}: {} nodes ready in {:.1}s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let beats = heartbeats(&c, args);
    let worker = match binder {
        Binder::Naive => naive_binder(&c, args.nodes),
        Binder::Scheduler => tokio::spawn(cluster::scheduler::run(
            c.clone(),
            Arc::new(cluster::scheduler::Stats::default()),
        )),
    };
    let pods: Api<Pod> = Api::namespaced(c.clone(), NAMESPACE);

    // Warm up: one pod through the whole path before measuring.
    pods.create(&PostParams::default(), &bench_pod("warmup"))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("warmup").await?;
        if p.spec.and_then(|s| s.node_name).is_some() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the warm-up pod was never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let bound_at: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    // The warm-up pod is bound already: count it in the total.
    let watch = bound_watch(&c, args.pods + 1, bound_at.clone(), ready_tx, done_tx);
    ready_rx.await.context("the pod watch ended")?;

    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let creators: Vec<_> = (0..args.clients)
        .map(|_| {
            let pods = pods.clone();
            let next = next.clone();
            let created_at = created_at.clone();
            let total = args.pods;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return anyhow::Ok(());
                    }
                    let name = format!("pod-{i:06}");
                    created_at.lock().await.insert(name.clone(), Instant::now());
                    pods.create(&PostParams::default(), &bench_pod(&name))
                        .await
                        .with_context(|| format!("creating {name}"))?;
                }
            })
        })
        .collect();
    for c in creators {
        c.await??;
    }
    let created = start.elapsed();
    tokio::time::timeout(Duration::from_secs(1800), done_rx)
        .await
        .context("not every pod was bound within 30 minutes")?
        .context("the pod watch ended")?;
    let end = Instant::now();
    worker.abort();
    beats.abort();
    watch.abort();

    let created_at = created_at.lock().await;
    let bound_at = bound_at.lock().await;
    let mut lat: Vec<Duration> = created_at
        .iter()
        .filter_map(|(n, t0)| bound_at.get(n).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    lat.sort();
    let last = bound_at
        .iter()
        .filter(|(n, _)| created_at.contains_key(*n))
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(end);
    Ok(Figures {
        pods_per_sec: args.pods as f64 / last.duration_since(start).as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        create_per_sec: args.pods as f64 / created.as_secs_f64(),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes > 0, "--nodes: must be at least 1");
    anyhow::ensure!(
        args.pods <= args.nodes * (PODS_PER_NODE - 1),
        "--pods: at most {} fit on {} nodes",
        args.nodes * (PODS_PER_NODE - 1),
        args.nodes
    );
    anyhow::ensure!(args.clients > 0, "--clients: must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        eprintln!(
            "sched-bench: {} nodes, {} pods, {} creating clients, API server on SQLite in-process",
            args.nodes, args.pods, args.clients
        );
        let naive = run(Binder::Naive, &args).await?;
        let ours = run(Binder::Scheduler, &args).await?;
        let mut report = Comparison::new("scheduling benchmark", "scheduler", "naive");
        report
            .context("nodes", args.nodes)
            .context("pods", args.pods)
            .context("creating clients", args.clients)
            .context("API server", "SQLite, in-process")
            .context("naive", "first-fit binder (baseline): the bind path without scheduling work");
        report.row("pods bound/s", ours.pods_per_sec, naive.pods_per_sec, "/s");
        report.row("create-to-bound p50", ms(ours.p50), ms(naive.p50), "ms");
        report.row("create-to-bound p99", ms(ours.p99), ms(naive.p99), "ms");
        report.row("pods created/s", ours.create_per_sec, naive.create_per_sec, "/s");
        report.figure(
            "kube-scheduler reference (not measured)",
            UPSTREAM_PODS_PER_SEC,
            "/s",
        );
        report.note(format!(
            "reference (not measured here): kube-scheduler scheduler_perf ~{UPSTREAM_PODS_PER_SEC:.0} pods/s on 5,000 nodes; scheduler / reference: {:.2}x",
            ours.pods_per_sec / UPSTREAM_PODS_PER_SEC
        ));
        report.print(args.output);
        anyhow::Ok(())
    })
}
