//! machined entry point. On a node init starts it without arguments; on a development host
//! `machined --state-dir DIR` runs it in dev mode (system effects recorded, not performed).

use clap::Parser;
use machined::intake::{self, Cmdline};
use machined::machine::{Machine, MachineOptions};
use machined::paths::Paths;
use machined::system::{DevSystem, LinuxSystem, System};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "machined", version, about = "The ros machine daemon")]
struct Args {
    /// Dev mode: keep STATE and EPHEMERAL under DIR and record system effects instead of
    /// performing them.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Address of the machine API (default 127.0.0.1:50000 in dev mode, 0.0.0.0:50000 on a node).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the trust port (default 127.0.0.1:50001 in dev mode, 0.0.0.0:50001 on a node).
    #[arg(long, value_name = "ADDR")]
    trust_listen: Option<SocketAddr>,
    /// Where a node without the machine CA key gets its API certificate signed
    /// [default: the host of cluster.controlPlane.endpoint, port 50001].
    #[arg(long, value_name = "HOST:PORT")]
    trust_endpoint: Option<String>,
    /// Dev mode: the config the platform offers at boot (like `ros.config=` on a node).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dev mode: extra services to supervise (YAML list of {id, command, args, env, dependsOn,
    /// restart, stopTimeoutSeconds, health: {url, caFile, intervalSeconds}}).
    #[arg(long, value_name = "FILE")]
    services: Option<PathBuf>,
    /// Dev mode: the hostname the fake system starts with.
    #[arg(long, value_name = "NAME", default_value = "ros-dev")]
    node_name: String,
    /// The `cluster` binary the cluster role runs (`server`, `agent`).
    #[arg(long, value_name = "FILE", default_value = "/usr/bin/cluster")]
    cluster_bin: String,
    /// The containerd binary workers run.
    #[arg(long, value_name = "FILE", default_value = "/usr/bin/containerd")]
    containerd_bin: String,
    /// Where `cluster server` listens on a bootstrapped control plane (default 0.0.0.0:6443
    /// on a node, 127.0.0.1:6443 in dev mode).
    #[arg(long, value_name = "ADDR")]
    cluster_listen: Option<SocketAddr>,
    /// Dev mode: an extra argument for `cluster agent` (repeatable), e.g.
    /// `--agent-arg=--kubelet-port=0`.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let log = machined::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("machined: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args, log)) {
        tracing::error!("{e:#}");
        eprintln!("machined: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args, log: machined::logbuf::LogBuffer) -> anyhow::Result<()> {
    let dev = args.state_dir.is_some();
    let cmdline = Cmdline::read();
    let (paths, system, platform): (Paths, Arc<dyn System>, String) = match &args.state_dir {
        Some(dir) => (
            Paths::dev(dir),
            Arc::new(DevSystem::new(&args.node_name)),
            "dev".into(),
        ),
        None => {
            let paths = Paths::node();
            // STATE and EPHEMERAL from disk partitions when there are any (system/disks.rs).
            machined::system::disks::mount_and_log();
            let system = Arc::new(LinuxSystem::new(paths.init_socket.clone()));
            (
                paths,
                system,
                cmdline.get("ros.platform").unwrap_or("metal").to_string(),
            )
        }
    };
    paths
        .create()
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", paths.state.display()))?;
    let listen = args.listen.unwrap_or_else(|| {
        if dev {
            "127.0.0.1:50000".parse().expect("addr")
        } else {
            "0.0.0.0:50000".parse().expect("addr")
        }
    });

    let platform_config = if dev {
        match &args.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?,
            ),
            None => None,
        }
    } else {
        match intake::fetch(&platform, &cmdline) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("platform {platform}: {e}");
                None
            }
        }
    };

    let trust_listen = args.trust_listen.unwrap_or_else(|| {
        let port = if listen.port() == 0 {
            0
        } else {
            ros_api::TRUST_PORT
        };
        SocketAddr::new(listen.ip(), port)
    });
    let machine = Machine::new(MachineOptions {
        dev,
        platform,
        listen,
        paths,
        system,
        log,
        trust_endpoint: args.trust_endpoint.clone(),
        programs: machined::cluster::Programs {
            cluster: args.cluster_bin.clone(),
            containerd: args.containerd_bin.clone(),
            agent_args: if dev { args.agent_args.clone() } else { vec![] },
            pod_network: !dev,
            server_listen: args.cluster_listen.unwrap_or_else(|| {
                if dev {
                    "127.0.0.1:6443".parse().expect("addr")
                } else {
                    "0.0.0.0:6443".parse().expect("addr")
                }
            }),
        },
    })?;
    if let Some(path) = &args.services {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--services {}: {e}", path.display()))?;
        for spec in machined::services::load_specs(&text)
            .map_err(|e| anyhow::anyhow!("--services {}: {e}", path.display()))?
        {
            machine.supervisor.add(spec)?;
        }
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
    // Tests and scripts read the bound address (useful with port 0) from this line.
    let bound = listener.local_addr()?;
    let trust = tokio::net::TcpListener::bind(trust_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--trust-listen {trust_listen}: {e}"))?;
    // One write, errors ignored: whoever started us may stop reading stdout at any time.
    let banner = format!(
        "machined: listening on {bound}\nmachined: trust on {}\n",
        trust.local_addr()?
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    tracing::info!(dev, "machine API on {bound}");

    machined::logship::spawn(machine.clone());
    machined::controllers::spawn(machine.clone());
    machined::cluster::spawn(machine.clone());
    machine.boot(platform_config).await;

    let server = tokio::spawn(machined::api::serve(machine.clone(), listener));
    let trust_server = tokio::spawn(machined::api::serve_trust(machine.clone(), trust));
    shutdown_signal().await;
    tracing::info!("stopping services");
    machine.supervisor.stop_all().await;
    server.abort();
    trust_server.abort();
    Ok(())
}

/// SIGTERM (init on shutdown) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
