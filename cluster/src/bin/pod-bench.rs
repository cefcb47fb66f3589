//! Pod start benchmark: the latency from a pod's create call to `status.phase: Running`
//! through the whole path (API server on SQLite, `cluster agent` on containerd), against
//! `ctr run -d` of the same container on the same containerd in the same run; and the
//! agent's memory (VmRSS) with the pods running.
//!
//! Everything runs inside a network namespace the bench makes (lo up; with
//! `--pod-network bridge` also a veth holding the node address), with a private containerd,
//! `cluster server` and `cluster agent` as child processes (stopped by PID, also on Ctrl-C or
//! failure). The image (Debian's busybox-static) is imported and unpacked before any timing;
//! each side gets one untimed warm-up start first. Everything made is removed at the end.
//!
//! `cargo build --release -p cluster --bins && sudo target/release/pod-bench [--pods 100]
//! [--concurrency 1] [--pod-network host|bridge] [-o json]`. Needs root and the Debian
//! packages containerd, runc, busybox-static, iproute2 (and nftables for bridge).
//! Prints figures; asserts nothing about time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

use cluster::agent::network::netns;
use cluster::bench::containerd::{self, Containerd};
use cluster::bench::procs::{self, Process};
use cluster::bench::report::{Comparison, Format};
use cluster::bench::stats::{Summary, ms};

const IMAGE: &str = "docker.io/library/pod-bench:1";
const NAMESPACE: &str = "pod-bench";
const NODE: &str = "bench-node";
/// The node's address inside the bench's namespace with `--pod-network bridge`.
const BRIDGE_NODE_IP: &str = "10.99.0.1";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum PodNetwork {
    /// Agent `--pod-network host` against `ctr run --net-host`.
    Host,
    /// Agent `--pod-network bridge` (netns, veth, IP per pod) against `ctr run` with its
    /// default: a new network namespace holding only lo.
    Bridge,
}

#[derive(Parser, Debug)]
#[command(about = "Pod start latency (create to Running) against ctr run, and agent memory")]
struct Args {
    /// Pods (and ctr containers) to start.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Starts in flight at once, the same on both sides.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Pod network of the agent (and the matching ctr network mode).
    #[arg(long, value_enum, default_value = "host")]
    pod_network: PodNetwork,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
    /// The `cluster` binary (default: next to this one).
    #[arg(long, value_name = "PATH")]
    cluster_bin: Option<PathBuf>,
    /// Seconds the agent's memory is sampled with every pod running.
    #[arg(long, default_value_t = 10)]
    steady_seconds: u64,
    /// Seconds one start may take before the run fails.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

/// The bench's directory: what is mounted under it is unmounted, then it is removed.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let left = procs::unmount_all_under(&self.0);
        if !left.is_empty() {
            eprintln!("cleanup: mounts that stayed (not removing the dir): {left:?}");
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: removing {}: {e}", self.0.display());
        }
    }
}

/// Everything the bench started. Fields drop in order: the agent stops before the server,
/// both before containerd removes what is left, and the directory goes last.
struct Env {
    agent: Option<Process>,
    server: Option<Process>,
    containerd: Option<Containerd>,
    cluster_bin: PathBuf,
    node_ip: &'static str,
    dir: PathBuf,
    _workdir: Workdir,
}

impl Env {
    fn ctrd(&self) -> &Containerd {
        self.containerd.as_ref().expect("containerd runs")
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template")
}

fn bar(len: usize, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64).with_style(
        style("{prefix:>18} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}").progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_style(style("{spinner} {msg} {elapsed}"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (Debian package iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Moves this (still single-threaded) process into a new network namespace mounted at
/// `path`: every thread and child made afterwards lives there, none of it on the host's
/// network. lo comes up; for the bridge network a veth `eth0` gets the node's address.
fn enter_network_namespace(path: &Path, bridge: bool) -> Result<()> {
    netns::create(path).context("creating the bench's network namespace (needs root)")?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the bench's network namespace")?;
    run_ip(&["link", "set", "lo", "up"])?;
    if bridge {
        run_ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])?;
        run_ip(&[
            "addr",
            "add",
            &format!("{BRIDGE_NODE_IP}/24"),
            "dev",
            "eth0",
        ])?;
        run_ip(&["link", "set", "eth0p", "up"])?;
        run_ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(())
}

fn cluster_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("cluster"),
    };
    anyhow::ensure!(
        path.exists(),
        "--cluster-bin: {} does not exist (build it: cargo build --release -p cluster --bins)",
        path.display()
    );
    Ok(path)
}

/// Before the runtime (and any thread) starts: the directory and the network namespace.
fn prepare(args: &Args) -> Result<Env> {
    anyhow::ensure!(
        // SAFETY: geteuid(2) cannot fail.
        unsafe { nix::libc::geteuid() } == 0,
        "pod-bench needs root (containerd, mounts, network namespaces)"
    );
    let cluster_bin = cluster_binary(args.cluster_bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("pod-bench-")
        .tempdir_in("/tmp")
        .context("creating the bench directory")?
        .keep();
    let workdir = Workdir(dir.clone());
    let bridge = args.pod_network == PodNetwork::Bridge;
    if bridge {
        containerd::need("/usr/sbin/nft", "nftables")?;
    }
    enter_network_namespace(&dir.join("node.netns"), bridge)?;
    Ok(Env {
        agent: None,
        server: None,
        containerd: None,
        cluster_bin,
        node_ip: if bridge { BRIDGE_NODE_IP } else { "127.0.0.1" },
        dir,
        _workdir: workdir,
    })
}

/// One `ctr run -d` (returns once the task has started): its duration.
async fn ctr_run(env: &Env, id: &str, host_net: bool, timeout: Duration) -> Result<Duration> {
    let mut cmd = tokio::process::Command::from(env.ctrd().ctr());
    cmd.args(["run", "-d"]);
    if host_net {
        cmd.arg("--net-host");
    }
    cmd.args([IMAGE, id, "/bin/sleep", "3600"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("ctr run {id}: no answer within {timeout:?}"))?
        .context("running ctr")?;
    let took = t0.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "ctr run {id}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

/// The baseline: `n` `ctr run -d`, `concurrency` at a time; all checked running, then removed.
async fn baseline(env: &Env, args: &Args) -> Result<Summary> {
    let host_net = args.pod_network == PodNetwork::Host;
    let timeout = Duration::from_secs(args.timeout_seconds);
    ctr_run(env, "ctr-warmup", host_net, timeout).await?;
    let pb = bar(args.pods, "ctr run");
    let start = Instant::now();
    let latencies: Vec<Duration> = stream::iter(0..args.pods)
        .map(|i| {
            let pb = pb.clone();
            async move {
                let d = ctr_run(env, &format!("ctr-bench-{i:04}"), host_net, timeout).await?;
                pb.inc(1);
                anyhow::Ok(d)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await?;
    let wall = start.elapsed();
    pb.finish();
    let running = env
        .ctrd()
        .ctr_ok(&["tasks", "ls"])?
        .lines()
        .filter(|l| l.starts_with("ctr-bench-") && l.contains("RUNNING"))
        .count();
    anyhow::ensure!(
        running == args.pods,
        "{running} of {} ctr tasks are running",
        args.pods
    );
    let sp = spinner("removing the ctr containers");
    let ctrd = env.ctrd();
    tokio::task::block_in_place(|| ctrd.remove_all())?;
    sp.finish_and_clear();
    Ok(Summary::of(latencies, wall))
}

/// Starts `cluster server` (SQLite, 127.0.0.1, controllers on) and returns an admin client.
async fn start_server(env: &mut Env) -> Result<Client> {
    let data = env.dir.join("server");
    let mut cmd = Command::new(&env.cluster_bin);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let log = env.dir.join("server.log");
    env.server = Some(Process::spawn(
        "cluster server",
        cmd,
        &log,
        Duration::from_secs(10),
    )?);
    let kubeconfig = data.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists()
            && let Ok(c) = cluster::controllers::manager::client_from_kubeconfig(&kubeconfig).await
            && c.apiserver_version().await.is_ok()
        {
            return Ok(c);
        }
        if let Some(s) = env.server.as_mut() {
            s.check_alive()?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "cluster server did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `cluster agent` for [`NODE`] and waits until its Node is Ready.
async fn start_agent(env: &mut Env, client: &Client, args: &Args) -> Result<()> {
    let mut cmd = Command::new(&env.cluster_bin);
    cmd.arg("agent")
        .arg("--kubeconfig")
        .arg(env.dir.join("server/kubeconfig"))
        .args(["--node-name", NODE, "--node-ip", env.node_ip])
        .arg("--containerd-socket")
        .arg(&env.ctrd().socket)
        .arg("--root-dir")
        .arg(env.dir.join("agent"))
        .arg("--netns-dir")
        .arg(env.dir.join("netns"))
        .args(["--kubelet-port", "0", "--pod-network"])
        .arg(match args.pod_network {
            PodNetwork::Host => "host",
            PodNetwork::Bridge => "bridge",
        })
        .env("RUST_LOG", "warn");
    let log = env.dir.join("agent.log");
    env.agent = Some(Process::spawn(
        "cluster agent",
        cmd,
        &log,
        Duration::from_secs(10),
    )?);
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok(());
        }
        if let Some(a) = env.agent.as_mut() {
            a.check_alive()?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {NODE} not Ready within 60 s:\n{}",
            env.agent
                .as_ref()
                .map(|a| a.log_tail(30))
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bench_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "pod-bench"}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sleep", "3600"]}],
        },
    }))
    .expect("a valid pod")
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Instant, String>>>>>;

/// Why a pod will not get to Running by itself, if it says so.
fn failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        return Some(format!("phase {phase}"));
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| r != "ContainerCreating")
        })
        .map(|w| {
            format!(
                "{}: {}",
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            )
        })
}

/// Watches the bench namespace and tells each waiter when its pod is first seen Running
/// (or why it will not be). Returns once the watch has its initial list.
async fn watch_running(client: &Client, waiters: Waiters) -> Result<tokio::task::JoinHandle<()>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
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
            let seen = Instant::now();
            let outcome = if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                Ok(seen)
            } else if let Some(why) = failure(&pod) {
                Err(why)
            } else {
                continue;
            };
            let waiter = waiters.lock().expect("waiters").remove(&pod.name_any());
            if let Some(w) = waiter {
                let _ = w.send(outcome);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .context("the pod watch did not list within 30 s")?
        .context("the pod watch ended")?;
    Ok(task)
}

/// Creates pod `name` and waits until it is Running: the time from the create call.
async fn start_pod(
    api: &Api<Pod>,
    waiters: &Waiters,
    name: &str,
    timeout: Duration,
) -> Result<Duration> {
    let (tx, rx) = oneshot::channel();
    waiters
        .lock()
        .expect("waiters")
        .insert(name.to_string(), tx);
    let t0 = Instant::now();
    api.create(&PostParams::default(), &bench_pod(name))
        .await
        .with_context(|| format!("creating pod {name}"))?;
    let at = tokio::time::timeout(timeout, rx)
        .await
        .with_context(|| format!("pod {name} not Running within {timeout:?}"))?
        .context("the pod watch ended")?
        .map_err(|why| anyhow::anyhow!("pod {name}: {why}"))?;
    Ok(at.saturating_duration_since(t0))
}

/// Deletes the bench's pods and waits until the API and containerd hold none.
async fn delete_pods(env: &Env, api: &Api<Pod>, names: &[String]) -> Result<()> {
    let pb = bar(names.len(), "deleting pods");
    stream::iter(names)
        .map(|n| async move {
            match api.delete(n, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting pod {n}")),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = api.list(&ListParams::default()).await?.items.len();
        let containers = env.ctrd().ctr_lines(&["containers", "ls", "-q"])?.len();
        pb.set_position((names.len().saturating_sub(left)) as u64);
        pb.set_message(format!("{containers} containers left"));
        if left == 0 && containers == 0 {
            pb.finish();
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} pods and {containers} containers still there after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Agent memory: before any pod, steady with every pod running, and the high-water mark.
struct Memory {
    idle: u64,
    steady: u64,
    peak: u64,
}

/// Median VmRSS of `pid` sampled every 200 ms for `seconds`.
async fn steady_rss(pid: u32, seconds: u64) -> Result<u64> {
    let pb = spinner(&format!("sampling the agent's memory for {seconds} s"));
    let end = Instant::now() + Duration::from_secs(seconds.max(1));
    let mut samples = Vec::new();
    while Instant::now() < end {
        samples.push(procs::status_bytes(pid, "VmRSS").context("the agent's VmRSS")?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pb.finish_and_clear();
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// Ours: `n` pods through the API, `concurrency` at a time, each to Running.
async fn ours(env: &mut Env, args: &Args) -> Result<(Summary, Memory)> {
    let sp = spinner("starting cluster server and cluster agent");
    let client = start_server(env).await?;
    start_agent(env, &client, args).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await
        .context("creating the bench namespace")?;
    let waiters: Waiters = Default::default();
    let watch = watch_running(&client, waiters.clone()).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let timeout = Duration::from_secs(args.timeout_seconds);
    sp.set_message("warm-up pod");
    start_pod(&api, &waiters, "warmup", timeout).await?;
    delete_pods(env, &api, &["warmup".to_string()]).await?;
    sp.finish_and_clear();
    let agent_pid = env.agent.as_ref().map(Process::pid).context("the agent")?;
    let idle = procs::status_bytes(agent_pid, "VmRSS").context("the agent's VmRSS")?;

    let names: Vec<String> = (0..args.pods).map(|i| format!("pod-{i:04}")).collect();
    let pb = bar(args.pods, "pods to Running");
    let start = Instant::now();
    let latencies: Vec<Duration> = stream::iter(&names)
        .map(|name| {
            let (api, waiters, pb) = (&api, &waiters, pb.clone());
            async move {
                let d = start_pod(api, waiters, name, timeout).await?;
                pb.inc(1);
                anyhow::Ok(d)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await
        .map_err(|e| {
            let log = env
                .agent
                .as_ref()
                .map(|a| a.log_tail(30))
                .unwrap_or_default();
            e.context(format!("agent log (tail):\n{log}"))
        })?;
    let wall = start.elapsed();
    pb.finish();
    watch.abort();

    let steady = steady_rss(agent_pid, args.steady_seconds).await?;
    let peak = procs::status_bytes(agent_pid, "VmHWM").context("the agent's VmHWM")?;
    if let Some(a) = env.agent.as_mut() {
        a.check_alive()?;
    }
    delete_pods(env, &api, &names).await?;
    if let Some(mut a) = env.agent.take() {
        a.stop();
    }
    if let Some(mut s) = env.server.take() {
        s.stop();
    }
    Ok((Summary::of(latencies, wall), Memory { idle, steady, peak }))
}

fn report(args: &Args, version: &str, ctr: &Summary, ours: &Summary, mem: &Memory) -> Comparison {
    let mut c = Comparison::new("pod start latency (create -> Running)", "ours", "ctr");
    c.context("pods", args.pods)
        .context("concurrency", args.concurrency)
        .context(
            "network",
            match args.pod_network {
                PodNetwork::Host => "agent --pod-network host vs ctr run --net-host (both share the node's namespace)",
                PodNetwork::Bridge => "agent --pod-network bridge (netns + veth + IP per pod) vs ctr run default (new netns, lo only)",
            },
        )
        .context("image", format!("{IMAGE} (busybox-static, imported and unpacked before timing)"))
        .context("containerd", version.trim())
        .context(
            "ours",
            "kube-rs create of a pod with spec.nodeName, to the first watch event with phase Running; cluster server on SQLite + cluster agent",
        )
        .context("ctr", "duration of `ctr run -d <image> <id> sleep 3600` (returns once the task runs)");
    c.row("p50", ms(ours.p50), ms(ctr.p50), "ms");
    c.row("p99", ms(ours.p99), ms(ctr.p99), "ms");
    c.row("max", ms(ours.max), ms(ctr.max), "ms");
    c.row(
        "total wall",
        ours.wall.as_secs_f64(),
        ctr.wall.as_secs_f64(),
        "s",
    );
    c.row("starts/s", ours.per_second(), ctr.per_second(), "/s");
    c.figure("agent RSS, no pods", mem.idle as f64 / MIB, "MiB");
    c.figure(
        format!("agent RSS, {} pods (median)", args.pods),
        mem.steady as f64 / MIB,
        "MiB",
    );
    c.figure("agent RSS peak (VmHWM)", mem.peak as f64 / MIB, "MiB");
    c.figure(
        "agent RSS per pod",
        (mem.steady as f64 - mem.idle as f64) / args.pods.max(1) as f64 / 1024.0,
        "KiB",
    );
    c.note("(for times lower is better; for starts/s higher is better)");
    c
}

/// Starts containerd and imports (and unpacks) the image: untimed.
fn start_containerd(env: &mut Env) -> Result<()> {
    let sp = spinner("starting containerd and importing the image");
    env.containerd = Some(Containerd::start(
        &env.dir.join("containerd"),
        cluster::agent::CONTAINERD_NAMESPACE,
    )?);
    let archive = cluster::bench::image::build(&env.dir.join("image"), IMAGE)?;
    env.ctrd().import(&archive)?;
    sp.finish_and_clear();
    Ok(())
}

async fn bench(env: &mut Env, args: &Args) -> Result<Comparison> {
    tokio::task::block_in_place(|| start_containerd(env))?;
    let version = env.ctrd().ctr_ok(&["version"]).unwrap_or_default();
    let version = version
        .lines()
        .find(|l| l.trim_start().starts_with("Version:"))
        .map(|l| {
            l.trim_start()
                .trim_start_matches("Version:")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let ctr = baseline(env, args).await?;
    eprintln!(
        "ctr run:  p50 {:.1} ms, p99 {:.1} ms over {} starts",
        ms(ctr.p50),
        ms(ctr.p99),
        ctr.count
    );
    let (pods, mem) = ours(env, args).await?;
    eprintln!(
        "pods:     p50 {:.1} ms, p99 {:.1} ms over {} starts",
        ms(pods.p50),
        ms(pods.p99),
        pods.count
    );
    Ok(report(args, &version, &ctr, &pods, &mem))
}

async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            return tokio::signal::ctrl_c()
                .await
                .map(|_| "Ctrl-C")
                .unwrap_or("a signal");
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.pods == 0 || args.concurrency == 0 {
        eprintln!("pod-bench: --pods and --concurrency must be at least 1");
        return ExitCode::FAILURE;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The namespace is entered before any thread exists, so all threads share it.
    let mut env = match prepare(&args) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("pod-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(async {
        tokio::select! {
            r = bench(&mut env, &args) => r,
            why = interrupted() => Err(anyhow::anyhow!("interrupted by {why}")),
        }
    });
    drop(rt);
    let sp = spinner("cleaning up");
    drop(env);
    sp.finish_and_clear();
    match result {
        Ok(report) => {
            report.print(args.output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pod-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
