//! The services of the cluster roles, as pure functions of the config and the paths, so they
//! are easy to test: `cluster-server` (a bootstrapped control plane), `containerd` and
//! `cluster-agent` (every node; on a control plane with its role label and taint).

use crate::paths::ClusterPaths;
use crate::services::{HealthCheck, RestartPolicy, ServiceSpec};
use ros_config::MachineConfig;
use std::net::SocketAddr;
use std::path::Path;

pub const SERVER: &str = "cluster-server";
pub const CONTAINERD: &str = "containerd";
pub const AGENT: &str = "cluster-agent";
/// The control planes' role label and taint key (as kubeadm and Talos).
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// Programs and addresses the role uses (different in dev mode).
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `cluster` binary (`server` and `agent`).
    pub cluster: String,
    pub containerd: String,
    /// Where `cluster server` listens (0.0.0.0:6443 on a node).
    pub server_listen: SocketAddr,
    /// Extra `cluster agent` arguments (dev mode only).
    pub agent_args: Vec<String>,
    /// Give pods their own network (bridge) and run the service proxy: on a node, never in
    /// dev mode (both change the host's network).
    pub pod_network: bool,
}

/// The host of an `https://host:port/...` URL.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?.to_string(),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
            .to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// The node's first configured address (without its prefix length).
pub fn first_address(cfg: &MachineConfig) -> Option<String> {
    cfg.machine
        .network
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .next()
}

/// The serving certificate's names: the endpoint's host, `cluster.apiServer.certSANs`, the
/// hostname and the node's addresses.
pub fn server_sans(cfg: &MachineConfig, hostname: &str) -> Vec<String> {
    let mut sans = Vec::new();
    if let Some(host) = cfg
        .cluster
        .control_plane
        .as_ref()
        .and_then(|cp| url_host(&cp.endpoint))
    {
        sans.push(host);
    }
    sans.extend(cfg.cluster.api_server.cert_sans.iter().cloned());
    if !hostname.is_empty() {
        sans.push(hostname.to_string());
    }
    sans.extend(
        cfg.machine
            .network
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .map(|a| a.split('/').next().unwrap_or(a).to_string()),
    );
    let mut seen = Vec::new();
    // A name a certificate cannot carry (an unset hostname such as "(none)") is left out
    // rather than making the server fail to start.
    sans.retain(|s| {
        let new = ros_config::syntax::is_san(s) && !seen.contains(s);
        seen.push(s.clone());
        new
    });
    sans
}

/// The first IPv4 range of a list (the server allocates from one IPv4 range).
fn first_v4(ranges: &[String]) -> Option<&String> {
    ranges.iter().find(|r| {
        r.split('/')
            .next()
            .is_some_and(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
    })
}

/// The cluster DNS address: the 10th address of the first IPv4 service range (as k3s).
pub fn cluster_dns_ip(cfg: &MachineConfig) -> Option<std::net::Ipv4Addr> {
    let cidr = first_v4(&cfg.cluster.network.service_subnets)?;
    let (addr, len) = cidr.split_once('/')?;
    let (addr, len): (std::net::Ipv4Addr, u32) = (addr.parse().ok()?, len.parse().ok()?);
    if len > 28 {
        return None; // too small to hold a 10th address
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some(std::net::Ipv4Addr::from((u32::from(addr) & mask) + 10))
}

/// Where the server answers locally (for its health check and the local agent).
pub fn local_server_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    format!("https://{host}:{}", listen.port())
}

/// What of the config reaches `service` (its generated files included), per the consumer
/// table.
fn inputs(service: &str, cfg: &MachineConfig) -> serde_json::Value {
    let json = serde_json::to_value(cfg).unwrap_or_default();
    crate::consumers::service_inputs(service, &json)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `cluster server` with the CA and service-account key files written by the role.
pub fn server(
    cfg: &MachineConfig,
    paths: &ClusterPaths,
    programs: &Programs,
    hostname: &str,
    has_sa_key: bool,
) -> ServiceSpec {
    let mut args = vec![
        "server".to_string(),
        "--data-dir".into(),
        p(&paths.server_data),
        "--listen".into(),
        programs.server_listen.to_string(),
        "--ca-cert".into(),
        p(&paths.pki.join("ca.crt")),
        "--ca-key".into(),
        p(&paths.pki.join("ca.key")),
    ];
    if has_sa_key {
        args.extend(["--service-account-key".into(), p(&paths.pki.join("sa.key"))]);
    }
    if let Some(cidr) = first_v4(&cfg.cluster.network.service_subnets) {
        args.extend(["--service-cidr".into(), cidr.clone()]);
    }
    if let Some(cidr) = first_v4(&cfg.cluster.network.pod_subnets) {
        args.extend(["--cluster-cidr".into(), cidr.clone()]);
    }
    for san in server_sans(cfg, hostname) {
        args.extend(["--tls-san".into(), san]);
    }
    // Cluster DNS on port 53 of the node (never in dev mode, which has no pod network).
    if programs.pod_network {
        args.extend(["--dns-listen".into(), "0.0.0.0:53".into()]);
        args.extend([
            "--cluster-domain".into(),
            cfg.cluster.network.dns_domain.clone(),
        ]);
    }
    // The address in the endpoints of the `kubernetes` and kube-dns Services (a server on
    // one specific address, as in dev mode, advertises that one itself).
    if programs.server_listen.ip().is_unspecified()
        && let Some(ip) = first_address(cfg)
    {
        args.extend(["--advertise-address".into(), ip]);
    }
    ServiceSpec {
        id: SERVER.into(),
        command: programs.cluster.clone(),
        args,
        env: cfg.machine.env.clone(),
        depends_on: vec![],
        restart: RestartPolicy::Always,
        stop_timeout_seconds: 20,
        health: Some(HealthCheck {
            url: format!("{}/readyz", local_server_url(programs.server_listen)),
            ca_file: Some(p(&paths.pki.join("ca.crt"))),
            interval_seconds: 5,
        }),
        config_inputs: inputs(SERVER, cfg),
    }
}

/// containerd's config: its own root, state and socket, the overlayfs snapshotter, and no
/// CRI plugin (the agent talks to containerd's own API).
pub fn containerd_config(paths: &ClusterPaths) -> String {
    let sock = paths.containerd_socket();
    format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         \n\
         [grpc]\n  address = \"{sock}\"\n\
         \n\
         [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         \n\
         [plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\n  root_path = \"{root}/io.containerd.snapshotter.v1.overlayfs\"\n",
        root = p(&paths.containerd_root),
        state = p(&paths.containerd_state),
        sock = p(&sock),
    )
}

pub fn containerd(cfg: &MachineConfig, paths: &ClusterPaths, programs: &Programs) -> ServiceSpec {
    ServiceSpec {
        id: CONTAINERD.into(),
        command: programs.containerd.clone(),
        args: vec!["--config".into(), p(&paths.containerd_config)],
        env: cfg.machine.env.clone(),
        depends_on: vec![],
        restart: RestartPolicy::Always,
        stop_timeout_seconds: 20,
        health: None,
        config_inputs: inputs(CONTAINERD, cfg),
    }
}

/// Optional `cluster agent` flags, present only when the agent binary knows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFeatures {
    pub node_taint: bool,
    pub registries_config: bool,
    pub pod_network: bool,
    pub service_proxy: bool,
    pub cluster_dns: bool,
    pub control_plane: bool,
}

impl AgentFeatures {
    /// Reads them from `cluster agent --help`.
    pub fn from_help(help: &str) -> Self {
        AgentFeatures {
            node_taint: help.contains("--node-taint"),
            registries_config: help.contains("--registries-config"),
            pod_network: help.contains("--pod-network"),
            service_proxy: help.contains("--service-proxy"),
            cluster_dns: help.contains("--cluster-dns"),
            control_plane: help.contains("--control-plane"),
        }
    }
}

/// `key: "value:Effect"` or `key: Effect` (the config's form) as `key=value:Effect` /
/// `key:Effect` (kubelet's `--register-with-taints` form).
pub fn taint_arg(key: &str, value: &str) -> String {
    if value.contains(':') {
        format!("{key}={value}")
    } else {
        format!("{key}:{value}")
    }
}

pub fn agent(
    cfg: &MachineConfig,
    paths: &ClusterPaths,
    programs: &Programs,
    node_name: &str,
    features: &AgentFeatures,
    on_control_plane: bool,
) -> ServiceSpec {
    let mut args = vec![
        "agent".to_string(),
        "--kubeconfig".into(),
        p(&paths.agent_root.join("kubeconfig")),
        "--node-name".into(),
        node_name.to_string(),
        "--containerd-socket".into(),
        p(&paths.containerd_socket()),
        "--root-dir".into(),
        p(&paths.agent_root),
    ];
    if let Some(ip) = first_address(cfg) {
        args.extend(["--node-ip".into(), ip]);
    }
    for (k, v) in &cfg.machine.node_labels {
        args.extend(["--node-label".into(), format!("{k}={v}")]);
    }
    // A control plane is a Node too, labelled with its role (kubectl's ROLES) and, unless
    // pods may run there, tainted so only pods tolerating it do (DaemonSets that should run
    // everywhere, as log and metrics collectors).
    if on_control_plane && features.control_plane {
        args.push("--control-plane".into());
    }
    if features.node_taint {
        for (k, v) in &cfg.machine.node_taints {
            args.extend(["--node-taint".into(), taint_arg(k, v)]);
        }
        if on_control_plane && !cfg.cluster.allow_scheduling_on_control_planes {
            args.extend([
                "--node-taint".into(),
                format!("{CONTROL_PLANE_ROLE}:NoSchedule"),
            ]);
        }
    }
    if features.registries_config {
        args.extend([
            "--registries-config".into(),
            p(&paths.agent_root.join("registries.yaml")),
        ]);
    }
    if programs.pod_network && features.pod_network {
        args.extend(["--pod-network".into(), "bridge".into()]);
        if let Some(cidr) = first_v4(&cfg.cluster.network.pod_subnets) {
            args.extend(["--cluster-cidr".into(), cidr.clone()]);
        }
    }
    if programs.pod_network && features.service_proxy {
        args.push("--service-proxy".into());
    }
    if programs.pod_network && features.cluster_dns {
        if let Some(ip) = cluster_dns_ip(cfg) {
            args.extend(["--cluster-dns".into(), ip.to_string()]);
        }
        args.extend([
            "--cluster-domain".into(),
            cfg.cluster.network.dns_domain.clone(),
        ]);
    }
    args.extend(programs.agent_args.iter().cloned());
    let mut depends_on = vec![CONTAINERD.to_string()];
    if on_control_plane {
        depends_on.push(SERVER.to_string());
    }
    ServiceSpec {
        id: AGENT.into(),
        command: programs.cluster.clone(),
        args,
        env: cfg.machine.env.clone(),
        depends_on,
        restart: RestartPolicy::Always,
        stop_timeout_seconds: 30,
        health: None,
        config_inputs: inputs(AGENT, cfg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> MachineConfig {
        let secrets = ros_config::secrets::Secrets::generate().unwrap();
        let generated = ros_config::generate::generate(&ros_config::generate::GenOptions {
            cluster_name: "demo".into(),
            endpoint: "https://10.5.0.2:6443".into(),
            secrets,
            patches: vec![],
            patches_control_plane: vec![],
            patches_worker: vec![],
        })
        .unwrap();
        let mut cfg = generated.control_plane;
        if !extra.is_empty() {
            cfg.cluster.api_server.cert_sans = vec![extra.to_string()];
        }
        cfg
    }

    fn programs() -> Programs {
        Programs {
            cluster: "/usr/bin/cluster".into(),
            containerd: "/usr/bin/containerd".into(),
            server_listen: "0.0.0.0:6443".parse().unwrap(),
            agent_args: vec![],
            pod_network: true,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn server_gets_ca_files_sans_and_ranges() {
        let cfg = config("api.example.com");
        let paths = crate::paths::Paths::node().cluster;
        let s = server(&cfg, &paths, &programs(), "cp-1", true);
        assert_eq!(s.command, "/usr/bin/cluster");
        assert_eq!(s.args[0], "server");
        assert_eq!(after(&s.args, "--listen"), ["0.0.0.0:6443"]);
        assert_eq!(after(&s.args, "--data-dir"), ["/var/lib/ros/cluster"]);
        assert_eq!(after(&s.args, "--ca-cert"), ["/var/lib/ros/pki/ca.crt"]);
        assert_eq!(after(&s.args, "--service-cidr"), ["10.96.0.0/12"]);
        assert_eq!(after(&s.args, "--cluster-cidr"), ["10.244.0.0/16"]);
        assert_eq!(
            after(&s.args, "--tls-san"),
            ["10.5.0.2", "api.example.com", "cp-1"]
        );
        let unnamed = server(&cfg, &paths, &programs(), "(none)", true);
        assert_eq!(
            after(&unnamed.args, "--tls-san"),
            ["10.5.0.2", "api.example.com"]
        );
        assert_eq!(after(&s.args, "--dns-listen"), ["0.0.0.0:53"]);
        assert_eq!(after(&s.args, "--cluster-domain"), ["cluster.local"]);
        // Without a static address the server takes its default route's.
        assert!(after(&s.args, "--advertise-address").is_empty());
        let mut with_address = cfg.clone();
        with_address.machine.network.interfaces = vec![
            serde_json::from_value(
                serde_json::json!({"interface": "eth0", "addresses": ["10.5.0.7/24"]}),
            )
            .unwrap(),
        ];
        let s = server(&with_address, &paths, &programs(), "cp-1", true);
        assert_eq!(after(&s.args, "--advertise-address"), ["10.5.0.7"]);
        assert!(after(&s.args, "--dns-advertise-address").is_empty());
        let hc = s.health.unwrap();
        assert_eq!(hc.url, "https://127.0.0.1:6443/readyz");
    }

    #[test]
    fn agent_flags_follow_the_config_and_what_the_agent_supports() {
        let mut cfg = config("");
        cfg.machine.node_labels.insert("tier".into(), "edge".into());
        cfg.machine
            .node_taints
            .insert("dedicated".into(), "db:NoSchedule".into());
        let paths = crate::paths::Paths::node().cluster;
        let none = agent(
            &cfg,
            &paths,
            &programs(),
            "w1",
            &AgentFeatures::default(),
            false,
        );
        assert_eq!(after(&none.args, "--node-label"), ["tier=edge"]);
        assert!(after(&none.args, "--node-taint").is_empty());
        assert!(after(&none.args, "--registries-config").is_empty());
        assert_eq!(none.depends_on, ["containerd"]);
        let all = AgentFeatures::from_help(
            "  --node-taint <T>\n  --registries-config <F>\n  --pod-network <N>\n  --service-proxy\n  --cluster-dns <IP>\n",
        );
        let s = agent(&cfg, &paths, &programs(), "w1", &all, true);
        assert_eq!(after(&s.args, "--pod-network"), ["bridge"]);
        assert_eq!(after(&s.args, "--cluster-cidr"), ["10.244.0.0/16"]);
        assert!(s.args.iter().any(|a| a == "--service-proxy"));
        assert_eq!(after(&s.args, "--cluster-dns"), ["10.96.0.10"]);
        assert_eq!(after(&s.args, "--cluster-domain"), ["cluster.local"]);
        let dev = Programs {
            pod_network: false,
            ..programs()
        };
        let s_dev = agent(&cfg, &paths, &dev, "w1", &all, true);
        assert!(after(&s_dev.args, "--pod-network").is_empty());
        assert!(!s_dev.args.iter().any(|a| a == "--service-proxy"));
        assert!(after(&s_dev.args, "--cluster-dns").is_empty());
        // On a control plane the role's taint comes after the config's.
        assert_eq!(
            after(&s.args, "--node-taint"),
            [
                "dedicated=db:NoSchedule",
                "node-role.kubernetes.io/control-plane:NoSchedule"
            ]
        );
        assert_eq!(
            after(&s.args, "--registries-config"),
            ["/var/lib/ros/agent/registries.yaml"]
        );
        assert_eq!(s.depends_on, ["containerd", "cluster-server"]);
        assert_eq!(taint_arg("k", "NoExecute"), "k:NoExecute");
    }

    #[test]
    fn a_control_planes_agent_carries_the_role_label_and_taint() {
        let mut cfg = config("");
        let paths = crate::paths::Paths::node().cluster;
        let all = AgentFeatures::from_help("  --node-taint <T>\n  --control-plane\n");
        assert!(all.control_plane && all.node_taint);
        let cp = agent(&cfg, &paths, &programs(), "cp-1", &all, true);
        assert!(
            cp.args.iter().any(|a| a == "--control-plane"),
            "{:?}",
            cp.args
        );
        assert_eq!(
            after(&cp.args, "--node-taint"),
            ["node-role.kubernetes.io/control-plane:NoSchedule"]
        );
        // The label is the agent's own flag, not a --node-label (which refuses reserved keys).
        assert!(after(&cp.args, "--node-label").is_empty());
        let worker = agent(&cfg, &paths, &programs(), "w1", &all, false);
        assert!(!worker.args.iter().any(|a| a == "--control-plane"));
        assert!(after(&worker.args, "--node-taint").is_empty());
        cfg.cluster.allow_scheduling_on_control_planes = true;
        let open = agent(&cfg, &paths, &programs(), "cp-1", &all, true);
        assert!(open.args.iter().any(|a| a == "--control-plane"));
        assert!(after(&open.args, "--node-taint").is_empty());
        // An agent without the flags gets neither (it would refuse to start).
        let old = agent(
            &cfg,
            &paths,
            &programs(),
            "cp-1",
            &AgentFeatures::default(),
            true,
        );
        assert!(!old.args.iter().any(|a| a == "--control-plane"));
    }

    #[test]
    fn containerd_config_uses_the_role_paths() {
        let paths = crate::paths::Paths::node().cluster;
        let text = containerd_config(&paths);
        assert!(text.contains("root = \"/var/lib/containerd\""), "{text}");
        assert!(text.contains("state = \"/run/containerd\""), "{text}");
        assert!(
            text.contains("address = \"/run/containerd/containerd.sock\""),
            "{text}"
        );
        assert!(text.contains("snapshotter.v1.overlayfs"), "{text}");
    }

    #[test]
    fn cluster_dns_is_the_tenth_service_address() {
        let mut cfg = config("");
        cfg.cluster.network.service_subnets = vec!["fd00::/108".into(), "10.43.7.0/16".into()];
        assert_eq!(cluster_dns_ip(&cfg), Some("10.43.0.10".parse().unwrap()));
        cfg.cluster.network.service_subnets = vec!["10.0.0.0/30".into()];
        assert_eq!(cluster_dns_ip(&cfg), None);
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("https://10.5.0.2:6443").as_deref(),
            Some("10.5.0.2")
        );
        assert_eq!(
            url_host("https://[fd00::1]:6443/x").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(
            url_host("https://k8s.example").as_deref(),
            Some("k8s.example")
        );
        assert_eq!(
            local_server_url("127.0.0.1:7000".parse().unwrap()),
            "https://127.0.0.1:7000"
        );
    }
}
