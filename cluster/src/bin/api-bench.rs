//! API benchmark: the whole API server (HTTPS, authentication, authorization, validation,
//! storage) driven by a real Kubernetes client (kube-rs), on the SQLite backend and on a real
//! etcd side by side in one run, with ratios.
//! `cargo run --release -p cluster --bin api-bench [-- --quick] [-o json]`. Needs `etcd` on PATH
//! (Debian `etcd-server`) or in `$ETCD_BIN`. Prints figures; asserts nothing about time.
//!
//! Measured: pod creates per second and create latency p50/p99 with 1, 16 and 64 concurrent
//! clients; a list of 10,000 pods (one response, and pages of 500); the delay from a create
//! to its delivery on 1,000 concurrent watches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use serde_json::json;

use cluster::apiserver;
use cluster::bench::report::{Comparison, Format};
use cluster::bench::stats::{ms, percentile};
use ros_store::Store;
use ros_store::etcd::EtcdStore;
use ros_store::etcd_process::EtcdProcess;
use ros_store::sqlite::SqliteStore;

struct Scale {
    /// (concurrent clients, total creates) for the create benchmark.
    creates: Vec<(usize, usize)>,
    list_pods: usize,
    watchers: usize,
    watch_creates: usize,
}

/// One backend behind its own API server.
struct Backend {
    label: &'static str,
    client: Client,
    /// Keeps the API server task alive for the run.
    _server: apiserver::Running,
}

fn pod(name: &str, sent_nanos: u128) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"},
            "annotations": {"bench/sent": sent_nanos.to_string()}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1",
            "ports": [{"containerPort": 8080}], "env": [{"name": "MODE", "value": "bench"}]}]},
    }))
    .expect("a valid pod")
}

async fn start(label: &'static str, store: Arc<dyn Store>, dir: &std::path::Path) -> Backend {
    let opts = apiserver::Options {
        data_dir: dir.join(label),
        listen: "127.0.0.1:0".parse().expect("an address"),
        service_cidr: "10.96.0.0/12".parse().expect("a CIDR"),
        tls_sans: vec![],
        connections: Default::default(),
    };
    let server = apiserver::start(opts, store)
        .await
        .unwrap_or_else(|e| panic!("{label}: starting the API server: {e:#}"));
    let client = cluster::controllers::manager::client_from_kubeconfig(&server.kubeconfig)
        .await
        .expect("a client from the admin kubeconfig");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["bench-create", "bench-list", "bench-watch"] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &obj)
            .await
            .expect("create a benchmark namespace");
    }
    Backend {
        label,
        client,
        _server: server,
    }
}

/// `total` pod creates from `clients` concurrent clients: (creates/s, p50, p99).
async fn bench_creates(
    b: &Backend,
    ns: &str,
    prefix: &str,
    clients: usize,
    total: usize,
) -> (f64, Duration, Duration) {
    let per_client = total / clients;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let api: Api<Pod> = Api::namespaced(b.client.clone(), ns);
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let p = pod(&format!("{prefix}-{c}-{i}"), 0);
                    let t = Instant::now();
                    api.create(&PostParams::default(), &p)
                        .await
                        .expect("create a pod");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    (
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

/// Fills `pods` pods, then times a full list and a list in pages of 500 (medians of 5).
async fn bench_list(b: &Backend, pods: usize) -> (Duration, Duration) {
    bench_creates(b, "bench-list", "listed", 64, pods).await;
    let api: Api<Pod> = Api::namespaced(b.client.clone(), "bench-list");
    let (mut full, mut paged) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let all = api.list(&ListParams::default()).await.expect("list");
        full.push(t.elapsed());
        assert_eq!(all.items.len(), pods / 64 * 64, "the list holds every pod");

        let t = Instant::now();
        let (mut seen, mut cont) = (0, None::<String>);
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(c) = &cont {
                lp = lp.continue_token(c);
            }
            let page = api.list(&lp).await.expect("list a page");
            seen += page.items.len();
            cont = page.metadata.continue_.filter(|c| !c.is_empty());
            if cont.is_none() {
                break;
            }
        }
        paged.push(t.elapsed());
        assert_eq!(seen, pods / 64 * 64, "the pages hold every pod");
    }
    full.sort();
    paged.sort();
    (full[2], paged[2])
}

/// `watchers` watches on one namespace, then `creates` paced creates carrying their send
/// time: (p50, p99) of the delay from the create call to delivery, over every watcher.
async fn bench_watch(b: &Backend, watchers: usize, creates: usize) -> (Duration, Duration) {
    let base = Instant::now();
    let api: Api<Pod> = Api::namespaced(b.client.clone(), "bench-watch");
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("list for a resourceVersion")
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut tasks = Vec::with_capacity(watchers);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    for _ in 0..watchers {
        let api = api.clone();
        let rv = rv.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let stream = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .expect("open a watch");
            let _ = ready.send(()).await;
            let mut stream = stream.boxed();
            let mut lat = Vec::with_capacity(creates);
            while lat.len() < creates {
                match stream.try_next().await.expect("watch event") {
                    Some(WatchEvent::Added(p)) => {
                        let sent: u64 = p
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("bench/sent"))
                            .and_then(|s| s.parse().ok())
                            .expect("the send time");
                        lat.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
                    }
                    Some(_) => {}
                    None => panic!("a watch ended early"),
                }
            }
            lat
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await.expect("every watch opens");
    }
    for i in 0..creates {
        let sent = base.elapsed().as_nanos();
        api.create(&PostParams::default(), &pod(&format!("watched-{i}"), sent))
            .await
            .expect("create a watched pod");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::with_capacity(watchers * creates);
    for t in tasks {
        lat.extend(t.await.expect("watcher task"));
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Runs step `step` (each create level, then the list, then the watch) on one backend.
/// The backends take turns step by step, so background noise hits both alike.
async fn run_step(b: &Backend, scale: &Scale, step: usize) -> Vec<(String, f64, &'static str)> {
    let label = b.label;
    let mut out = Vec::new();
    if let Some(&(clients, total)) = scale.creates.get(step) {
        eprintln!("{label}: {total} pod creates from {clients} clients...");
        let (rate, p50, p99) =
            bench_creates(b, "bench-create", &format!("c{clients}"), clients, total).await;
        out.push((format!("pod creates/s, {clients} clients"), rate, "/s"));
        out.push((format!("create p50, {clients} clients"), ms(p50), "ms"));
        out.push((format!("create p99, {clients} clients"), ms(p99), "ms"));
    } else if step == scale.creates.len() {
        let n = scale.list_pods;
        eprintln!("{label}: list of {n} pods...");
        let (full, paged) = bench_list(b, n).await;
        out.push((format!("list {n} pods, one response"), ms(full), "ms"));
        out.push((format!("list {n} pods, pages of 500"), ms(paged), "ms"));
    } else {
        let n = scale.watchers;
        eprintln!("{label}: watch delivery to {n} watchers...");
        let (p50, p99) = bench_watch(b, n, scale.watch_creates).await;
        out.push((format!("watch delivery p50, {n} watchers"), ms(p50), "ms"));
        out.push((format!("watch delivery p99, {n} watchers"), ms(p99), "ms"));
    }
    for (name, value, unit) in &out {
        eprintln!("{label}: {name}: {value:.2}{unit}");
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let format = Format::from_args(&args);
    let scale = if quick {
        Scale {
            creates: vec![(1, 100), (16, 320), (64, 640)],
            list_pods: 1000,
            watchers: 100,
            watch_creates: 10,
        }
    } else {
        Scale {
            creates: vec![(1, 500), (16, 2000), (64, 4096)],
            list_pods: 10_048,
            watchers: 1000,
            watch_creates: 30,
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the benchmark dir");

    let sqlite_store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.join("state.db"))
            .await
            .expect("open SQLite"),
    );
    let etcd_process = EtcdProcess::start(&dir.join("etcd"))
        .await
        .unwrap_or_else(|e| panic!("api-bench needs etcd: {e}"));
    let etcd_store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&[etcd_process.endpoint().to_string()], None)
            .await
            .expect("connect to etcd"),
    );
    let sqlite = start("sqlite", sqlite_store, &dir).await;
    let etcd = start("etcd", etcd_store, &dir).await;
    let (mut sqlite_rows, mut etcd_rows) = (Vec::new(), Vec::new());
    for step in 0..scale.creates.len() + 2 {
        sqlite_rows.extend(run_step(&sqlite, &scale, step).await);
        etcd_rows.extend(run_step(&etcd, &scale, step).await);
    }
    drop((sqlite, etcd, etcd_process));
    let _ = std::fs::remove_dir_all(&dir);

    let mut report = Comparison::new("API benchmark (kube-rs over HTTPS)", "sqlite", "etcd");
    for ((name, s, unit), (_, e, _)) in sqlite_rows.into_iter().zip(etcd_rows) {
        report.row(name, s, e, unit);
    }
    report.note("(for creates/s higher is better; for times lower is better)");
    report.print(format);
}
