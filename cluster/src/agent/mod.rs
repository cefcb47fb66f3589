//! The node agent (`cluster agent`): registers the Node, renews its Lease, and runs the
//! pods bound to it through containerd.
//!
//! Images are pulled from OCI registries (`images/`); init containers, probes (`probes/`)
//! and preStop hooks run as in the kubelet; volumes, including projected service account
//! tokens renewed before they expire, are in `volumes/`. Not yet: image garbage
//! collection, postStart hooks.

pub mod dns_config;
pub mod exec;
pub mod images;
pub mod logs;
pub mod network;
pub mod node;
pub mod pods;
pub mod probes;
pub mod runtime;
pub mod spec;
pub mod status;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// containerd namespace holding the pods' containers and images.
pub const CONTAINERD_NAMESPACE: &str = "k8s.io";
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig with the agent's credentials for the API server.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Name of this node (default: the machine's hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address reported as the node's InternalIP (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_socket: PathBuf,
    /// containerd snapshotter for the containers' root filesystems.
    #[arg(long, default_value = "overlayfs")]
    pub snapshotter: String,
    /// Directory for the agent's state and the containers' log files.
    #[arg(long, default_value = "/var/lib/ros-agent")]
    pub root_dir: PathBuf,
    /// Node labels, key=value (repeatable). As the kubelet's --node-labels, labels in the
    /// kubernetes.io and k8s.io namespaces are refused unless the kubelet sets them itself.
    #[arg(long = "node-label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// This node is a control plane: its Node gets the label
    /// node-role.kubernetes.io/control-plane (the API server accepts it only from a control
    /// plane's node identity), and the taint of that key is kept as --node-taint says (given:
    /// added; not given: removed, so pods may be scheduled there).
    #[arg(long)]
    pub control_plane: bool,
    /// Node taints, key=value:Effect or key:Effect (repeatable); merged into the Node's.
    #[arg(long = "node-taint", value_parser = node::parse_taint)]
    pub taints: Vec<node::Taint>,
    /// Port of the node's HTTPS log endpoint (the kubelet port), on the node IP (0: any free).
    #[arg(long, default_value_t = node::KUBELET_PORT)]
    pub kubelet_port: u16,
    /// Registry mirrors and credentials: YAML of the machine config's `machine.registries`.
    #[arg(long)]
    pub registries_config: Option<PathBuf>,
    /// First delay in seconds before a failed image pull is retried (doubles, up to 300 s).
    #[arg(long, default_value_t = 10)]
    pub image_pull_backoff_seconds: u64,
    /// First CrashLoopBackOff delay in seconds (doubles per restart, up to 300 s).
    #[arg(long, default_value_t = 10)]
    pub crash_backoff_seconds: u64,
    /// Pod network: `host` shares the node's network namespace; `bridge` gives each pod its
    /// own namespace and IP from the node's pod CIDR on the bridge ros0.
    #[arg(long, value_enum, default_value = "host")]
    pub pod_network: network::Kind,
    /// All pods' addresses (traffic from it to elsewhere is masqueraded; bridge network).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Where the pods' network namespaces are mounted (bridge network).
    #[arg(long, default_value = "/run/ros/netns")]
    pub netns_dir: PathBuf,
    /// Run the service proxy (ClusterIP, NodePort, LoadBalancer) in nftables table `ip ros`.
    #[arg(long)]
    pub service_proxy: bool,
    /// The cluster DNS server pods with dnsPolicy ClusterFirst use (repeatable; none: the
    /// node's resolv.conf).
    #[arg(long = "cluster-dns", value_name = "IP")]
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain, in pods' DNS search path.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's resolv.conf (for dnsPolicy Default and host-network pods).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--node-label {s:?}: expected key=value"))?;
    if !crate::node_labels::node_may_set(k, false) {
        return Err(format!(
            "--node-label {s:?}: {k:?} is in a reserved namespace (kubernetes.io, k8s.io) and not \
             one the node may set on itself{}",
            if k == crate::node_labels::CONTROL_PLANE_LABEL {
                "; use --control-plane"
            } else {
                ""
            }
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The address of the interface the default route would use; no packet is sent.
fn default_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client> {
    let kc =
        Kubeconfig::read_from(path).with_context(|| format!("--kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

pub async fn run(opts: Options) -> Result<()> {
    let machine = node::MachineInfo::read()?;
    let name = opts
        .node_name
        .clone()
        .unwrap_or_else(|| machine.hostname.clone());
    anyhow::ensure!(
        !name.is_empty(),
        "--node-name: empty and the hostname is unknown"
    );
    let ip = opts
        .node_ip
        .or_else(default_ip)
        .context("--node-ip: not given and no default route to take it from")?
        .to_string();
    std::fs::create_dir_all(&opts.root_dir)
        .with_context(|| format!("--root-dir {}", opts.root_dir.display()))?;
    dns_config::init(dns_config::Settings {
        cluster_dns: opts.cluster_dns.clone(),
        cluster_domain: opts.cluster_domain.clone(),
        host_resolv_conf: opts.resolv_conf.clone(),
        host_hosts: "/etc/hosts".into(),
        root_dir: opts.root_dir.clone(),
    });
    let client = client_from_kubeconfig(&opts.kubeconfig).await?;
    let runtime = runtime::ContainerRuntime::connect(
        &opts.containerd_socket,
        CONTAINERD_NAMESPACE,
        &opts.snapshotter,
    )
    .await?;
    let listen = std::net::SocketAddr::new(ip.parse()?, opts.kubelet_port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--kubelet-port: listening on {listen}"))?;
    let cluster_ca = exec::auth::cluster_ca(&opts.kubeconfig).await?;
    let tls = logs::self_signed(vec![ip.clone(), name.clone()], &cluster_ca)?;
    let port = listener.local_addr()?.port();
    let exec = std::sync::Arc::new(exec::ExecEndpoint::new(runtime.clone(), &opts.root_dir));
    let log_server = tokio::spawn(logs::serve(listener, tls, opts.root_dir.clone(), exec));
    let agent = node::NodeAgent {
        client: client.clone(),
        name: name.clone(),
        ip: ip.clone(),
        port,
        labels: opts.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        taints: opts.taints.clone(),
        control_plane: opts.control_plane,
        machine,
    };
    agent.register().await?;
    tracing::info!(node = %name, %ip, "node registered");
    let rt = runtime.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            let version = rt.version().await;
            if let Err(e) = agent.post_status(&version).await {
                tracing::warn!(error = format!("{e:#}"), "node status");
            }
            if let Err(e) = agent.renew_lease().await {
                tracing::warn!(error = format!("{e:#}"), "node lease");
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
    let registries = match &opts.registries_config {
        Some(path) => images::registry::load(path)?,
        None => ros_config::Registries::default(),
    };
    // reqwest (under oci-client) takes the process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let images = images::Images::new(
        runtime.clone(),
        registries,
        &opts.snapshotter,
        Duration::from_secs(opts.image_pull_backoff_seconds.max(1)),
    );
    let probes = probes::Probes::new(runtime.clone());
    let (pod_network, _network_tasks) = network_for(&opts, &client, &name);
    let _proxy = opts
        .service_proxy
        .then(|| AbortOnDrop(tokio::spawn(crate::proxy::run(client.clone()))));
    let worker = pods::PodWorker {
        network: pod_network,
        images,
        probes,
        client,
        runtime,
        node_name: name,
        host_ip: ip,
        root_dir: opts.root_dir.clone(),
        backoff_base: Duration::from_secs(opts.crash_backoff_seconds.max(1)),
        backoff_max: Duration::from_secs(300),
        terminating: HashMap::new(),
    };
    let result = tokio::select! {
        r = worker.run() => r,
        r = heartbeat => r.context("node heartbeat task").map(|_| ()),
        r = tokio::signal::ctrl_c() => r.context("waiting for a signal"),
    };
    log_server.abort();
    tracing::info!("agent stopping; containers keep running");
    result
}

/// The pod network `--pod-network` asks for, and its background tasks (node routes).
fn network_for(
    opts: &Options,
    client: &kube::Client,
    node: &str,
) -> (
    std::sync::Arc<dyn network::PodNetwork>,
    Vec<AbortOnDrop<anyhow::Result<()>>>,
) {
    match opts.pod_network {
        network::Kind::Host => (std::sync::Arc::new(network::HostNetwork), Vec::new()),
        network::Kind::Bridge => {
            let bridge = network::bridge::BridgeNetwork::new(
                network::bridge::Config {
                    node_name: node.to_string(),
                    netns_dir: opts.netns_dir.clone(),
                    ipam_path: opts.root_dir.join("network").join("ipam.json"),
                    cluster_cidr: opts.cluster_cidr,
                },
                client.clone(),
            );
            let routes = AbortOnDrop(bridge.spawn_routes());
            (std::sync::Arc::new(bridge), vec![routes])
        }
    }
}

/// Stops a background task when the agent stops (so the proxy's table guard runs).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
