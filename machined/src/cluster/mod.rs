//! The node's cluster role, kept in step with the running config by one controller task:
//!
//! - control plane: after `rosctl bootstrap` (recorded on STATE, so later boots need none) the
//!   `cluster-server` service runs `cluster server` with the CA from `cluster.ca`, its data on
//!   EPHEMERAL and a health check on `/readyz`;
//! - every node (a control plane once it runs the server): `containerd` with a generated
//!   config, then `cluster-agent` with a node identity (`CN=system:node:<name>,
//!   O=system:nodes`), so every node is a Node in `kubectl get nodes`. A control plane signs
//!   its identity itself, adding `O=ros:control-plane-nodes`, the group the API server lets
//!   set the `node-role.kubernetes.io/control-plane` label; its agent also registers the
//!   `node-role.kubernetes.io/control-plane:NoSchedule` taint unless
//!   `cluster.allowSchedulingOnControlPlanes`. A worker, which holds `cluster.ca` without its
//!   key, sends a certificate request with `cluster.token` to a control plane's trust port
//!   (50001), which checks the token and signs it (as `system:nodes` only).
//!
//! It also answers the Bootstrap and Kubeconfig calls (admin identity `CN=admin,
//! O=system:masters`).

pub mod bootstrap;
pub mod kubeconfig;
pub mod specs;

use crate::machine::{Machine, Running};
use crate::services::ServiceSpec;
use ros_config::{MachineConfig, MachineType};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tonic::Status;

pub use specs::Programs;

/// The role's shared state (in [`Machine`]).
pub struct ClusterRole {
    pub programs: Programs,
    /// Wakes the controller (after a bootstrap).
    kick: Notify,
    /// Serialises bootstrap calls.
    bootstrap_lock: tokio::sync::Mutex<()>,
    /// `cluster agent --help` of the cluster binary, read once.
    agent_features: Mutex<Option<specs::AgentFeatures>>,
    /// What the controller last did, for the apply that changed the config.
    reconciled: tokio::sync::watch::Sender<Reconciled>,
}

/// What the role controller did for one running config (accumulated over its retries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// `Running::id` of the config (0: none).
    pub config: u64,
    /// "restarted cluster-agent", "started containerd", "stopped cluster-server", in order.
    pub actions: Vec<String>,
    pub error: Option<String>,
}

impl ClusterRole {
    pub fn new(programs: Programs) -> Self {
        ClusterRole {
            programs,
            kick: Notify::new(),
            bootstrap_lock: tokio::sync::Mutex::new(()),
            agent_features: Mutex::new(None),
            reconciled: tokio::sync::watch::channel(Reconciled::default()).0,
        }
    }

    /// Waits (at most `limit`) until the controller has acted on config `id`; what it did.
    pub async fn wait_reconciled(&self, id: u64, limit: std::time::Duration) -> Option<Reconciled> {
        let mut rx = self.reconciled.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| r.config == id))
            .await
            .ok()?
            .ok()
            .map(|r| r.clone())
    }

    async fn agent_features(&self) -> specs::AgentFeatures {
        if let Some(f) = self.agent_features.lock().expect("features lock").clone() {
            return f;
        }
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::process::Command::new(&self.programs.cluster)
                .args(["agent", "--help"])
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match out {
            Ok(Ok(out)) if out.status.success() => {
                let f = specs::AgentFeatures::from_help(&String::from_utf8_lossy(&out.stdout));
                *self.agent_features.lock().expect("features lock") = Some(f.clone());
                f
            }
            // Not cached: the binary may appear later (dev mode).
            _ => specs::AgentFeatures::default(),
        }
    }
}

fn is_control_plane(cfg: &MachineConfig) -> bool {
    cfg.machine.machine_type == MachineType::ControlPlane
}

/// `rosctl bootstrap`: once, on a control plane.
pub async fn bootstrap(machine: &Arc<Machine>) -> Result<String, Status> {
    let running = machine
        .running()
        .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
    if !is_control_plane(&running.config) {
        return Err(Status::failed_precondition(
            "bootstrap runs on control-plane nodes only",
        ));
    }
    if !running.config.cluster.ca.has_key() {
        return Err(Status::failed_precondition(
            "cluster.ca.key: a control plane needs the cluster CA key to bootstrap",
        ));
    }
    let _guard = machine.cluster.bootstrap_lock.lock().await;
    let marker = &machine.paths.cluster.bootstrapped;
    if bootstrap::is_bootstrapped(marker) {
        return Err(Status::already_exists("already bootstrapped"));
    }
    bootstrap::record(marker, &machine.node_name()).map_err(|e| {
        Status::internal(format!(
            "recording the bootstrap in {}: {e}",
            marker.display()
        ))
    })?;
    machine
        .events
        .publish("cluster", "bootstrapped: starting cluster-server");
    machine.cluster.kick.notify_one();
    Ok(format!(
        "bootstrap done: {} is starting; `rosctl health` shows when the API answers",
        specs::SERVER
    ))
}

/// `rosctl kubeconfig`: a new admin identity signed by `cluster.ca`, for the endpoint.
pub fn admin_kubeconfig(machine: &Machine) -> Result<Vec<u8>, Status> {
    let running = machine
        .running()
        .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
    let cfg = &running.config;
    if !cfg.cluster.ca.has_key() {
        return Err(Status::failed_precondition(
            "kubeconfig: this node does not hold the cluster CA key; ask a control-plane node",
        ));
    }
    let server = cfg
        .cluster
        .control_plane
        .as_ref()
        .map(|cp| cp.endpoint.clone())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            Status::failed_precondition("cluster.controlPlane.endpoint: not set in the config")
        })?;
    let (ca, key) = ca_pems(cfg).map_err(Status::internal)?;
    let id = kubeconfig::issue_client(
        &ca,
        &key,
        kubeconfig::ADMIN_USER,
        &[kubeconfig::ADMIN_GROUP],
    )
    .map_err(Status::internal)?;
    let name = if cfg.cluster.name.is_empty() {
        "ros"
    } else {
        &cfg.cluster.name
    };
    Ok(kubeconfig::render(name, kubeconfig::ADMIN_USER, &server, &ca, &id).into_bytes())
}

/// Trust port: signs a node identity for a caller holding `cluster.token`.
pub fn sign_node_certificate(
    machine: &Machine,
    token: &str,
    csr_pem: &str,
    node_name: &str,
) -> Result<String, Status> {
    let running = machine
        .running()
        .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
    let cfg = &running.config;
    if !cfg.cluster.ca.has_key() {
        return Err(Status::failed_precondition(
            "this node does not hold the cluster CA key",
        ));
    }
    if cfg.cluster.token.is_empty() || !crate::api::same_secret(token, &cfg.cluster.token) {
        return Err(Status::permission_denied(
            "token: does not match cluster.token",
        ));
    }
    let (ca, key) = ca_pems(cfg).map_err(Status::internal)?;
    let crt = kubeconfig::sign_node_csr(&ca, &key, csr_pem, node_name)
        .map_err(Status::invalid_argument)?;
    machine.events.publish(
        "cluster",
        format!("signed the node certificate of {node_name}"),
    );
    Ok(crt)
}

fn ca_pems(cfg: &MachineConfig) -> Result<(String, String), String> {
    let ca = cfg
        .cluster
        .ca
        .crt_pem()
        .map_err(|e| format!("cluster.ca.crt: {e}"))?;
    let key = cfg
        .cluster
        .ca
        .key_pem()
        .map_err(|e| format!("cluster.ca.key: {e}"))?;
    Ok((ca, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    ros_config::atomic_write_private(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the role controller until machined exits.
pub fn spawn(machine: Arc<Machine>) {
    tokio::spawn(async move {
        let mut config = machine.watch_config();
        let mut current: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        let mut attempt = 0u32;
        loop {
            let running = config.borrow_and_update().clone();
            let mut actions = Vec::new();
            let outcome = reconcile(&machine, running.as_deref(), &mut current, &mut actions).await;
            let id = running.as_ref().map_or(0, |r| r.id);
            machine.cluster.reconciled.send_modify(|r| {
                if r.config != id {
                    *r = Reconciled {
                        config: id,
                        ..Default::default()
                    };
                }
                r.actions.extend(actions);
                r.error = outcome.as_ref().err().cloned();
            });
            let retry = match &outcome {
                Ok(()) => {
                    attempt = 0;
                    None
                }
                Err(e) => {
                    if attempt == 0 {
                        machine
                            .events
                            .publish("cluster", format!("cluster role: {e}; retrying"));
                    }
                    tracing::warn!(attempt, "cluster role: {e}");
                    let d = crate::controllers::retry_delay(attempt + 3);
                    attempt += 1;
                    Some(d)
                }
            };
            publish_status(&machine, running.as_deref(), &current, outcome.err());
            tokio::select! {
                r = config.changed() => if r.is_err() { return },
                _ = machine.cluster.kick.notified() => {}
                _ = async {
                    match retry {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    });
}

fn publish_status(
    machine: &Machine,
    running: Option<&Running>,
    current: &BTreeMap<String, ServiceSpec>,
    error: Option<String>,
) {
    let role = match running {
        None => "none",
        Some(r) if is_control_plane(&r.config) => "controlplane",
        Some(_) => "worker",
    };
    machine.resources.put(
        "ControllerStatus",
        "cluster-role",
        serde_json::json!({
            "ready": error.is_none(),
            "role": role,
            "bootstrapped": bootstrap::is_bootstrapped(&machine.paths.cluster.bootstrapped),
            "services": current.keys().collect::<Vec<_>>(),
            "error": error,
        }),
    );
}

/// Brings the role's services in line with the config; an error is retried.
async fn reconcile(
    machine: &Arc<Machine>,
    running: Option<&Running>,
    current: &mut BTreeMap<String, ServiceSpec>,
    actions: &mut Vec<String>,
) -> Result<(), String> {
    let paths = &machine.paths.cluster;
    let programs = &machine.cluster.programs;
    let mut desired: BTreeMap<String, ServiceSpec> = BTreeMap::new();
    // The agent needs an identity first; it is added once one is in place.
    let mut agent_wanted = None;
    if let Some(r) = running {
        let cfg = &r.config;
        let name = machine.node_name();
        let cp = is_control_plane(cfg);
        let serving = cp && bootstrap::is_bootstrapped(&paths.bootstrapped);
        if serving {
            let (ca, key) = ca_pems(cfg)?;
            write_private(&paths.pki.join("ca.crt"), ca.as_bytes())?;
            write_private(&paths.pki.join("ca.key"), key.as_bytes())?;
            let sa_key = match &cfg.cluster.service_account {
                Some(sa) if !sa.key.is_empty() => Some(
                    ros_config::decode_pem(&sa.key, ros_config::PemKind::PrivateKey)
                        .map_err(|e| format!("cluster.serviceAccount.key: {e}"))?,
                ),
                _ => None,
            };
            if let Some(k) = &sa_key {
                write_private(&paths.pki.join("sa.key"), k.as_bytes())?;
            }
            let spec = specs::server(cfg, paths, programs, &name, sa_key.is_some());
            desired.insert(spec.id.clone(), spec);
        }
        // A control plane's agent talks to its own server, so it runs alongside it.
        if !cp || serving {
            let spec = specs::containerd(cfg, paths, programs);
            desired.insert(spec.id.clone(), spec);
            let features = machine.cluster.agent_features().await;
            agent_wanted = Some(specs::agent(cfg, paths, programs, &name, &features, cp));
        }
    }

    // Stop what is no longer wanted or wanted differently (the agent first: it depends on
    // the others).
    let mut stale: Vec<String> = current
        .iter()
        .filter(|(id, spec)| {
            let want = if *id == specs::AGENT {
                agent_wanted.as_ref()
            } else {
                desired.get(*id)
            };
            want != Some(*spec)
        })
        .map(|(id, _)| id.clone())
        .collect();
    stale.sort_by_key(|id| id != specs::AGENT);
    let mut removed = Vec::new();
    for id in stale {
        machine
            .supervisor
            .remove(&id)
            .await
            .map_err(|e| e.to_string())?;
        current.remove(&id);
        removed.push(id);
    }
    // Whatever happens next, a removed service that is not back has stopped.
    let report = |actions: &mut Vec<String>, current: &BTreeMap<String, ServiceSpec>| {
        for id in &removed {
            if !current.contains_key(id) {
                actions.push(format!("stopped {id}"));
            }
        }
    };

    let mut pending = None;
    if let (Some(r), Some(agent)) = (running, &agent_wanted) {
        let cfg = &r.config;
        if let Err(e) = write_agent_inputs(paths, cfg) {
            report(actions, current);
            return Err(e);
        }
        match agent_kubeconfig(machine, cfg).await {
            Ok(text) => {
                write_private(&paths.agent_root.join("kubeconfig"), text.as_bytes())?;
                desired.insert(agent.id.clone(), agent.clone());
            }
            Err(e) => pending = Some(format!("node identity for {}: {e}", specs::AGENT)),
        }
    }

    for id in [specs::SERVER, specs::CONTAINERD, specs::AGENT] {
        let Some(spec) = desired.get(id) else {
            continue;
        };
        if current.contains_key(id) {
            continue;
        }
        let started = machine
            .supervisor
            .add(spec.clone())
            .and_then(|()| machine.supervisor.start(id))
            .map_err(|e| format!("service {id}: {e}"));
        if let Err(e) = started {
            report(actions, current);
            return Err(e);
        }
        current.insert(id.to_string(), spec.clone());
        let verb = if removed.iter().any(|r| r == id) {
            "restarted"
        } else {
            "started"
        };
        actions.push(format!("{verb} {id}"));
    }
    report(actions, current);
    match pending {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The files containerd and the agent read, written atomically (each a pure function of the
/// config and the paths, so an unchanged config rewrites nothing). Written while the agent
/// is stopped when they changed: a change to their config paths is in the agent's spec
/// (`config_inputs`), so the agent was removed above.
fn write_agent_inputs(
    paths: &crate::paths::ClusterPaths,
    cfg: &MachineConfig,
) -> Result<(), String> {
    write_private(
        &paths.containerd_config,
        specs::containerd_config(paths).as_bytes(),
    )?;
    let registries = serde_yaml_ng::to_string(&cfg.machine.registries)
        .map_err(|e| format!("machine.registries: {e}"))?;
    write_private(
        &paths.agent_root.join("registries.yaml"),
        registries.as_bytes(),
    )
}

/// The agent's kubeconfig: a node identity, signed here on a control plane, else by a control
/// plane's trust port; kept in the agent's directory and reused while it fits.
async fn agent_kubeconfig(machine: &Machine, cfg: &MachineConfig) -> Result<String, String> {
    let paths = &machine.paths.cluster;
    let name = machine.node_name();
    let ca = cfg
        .cluster
        .ca
        .crt_pem()
        .map_err(|e| format!("cluster.ca.crt: {e}"))?;
    let (crt_path, key_path, ca_path) = (
        paths.agent_root.join("node.crt"),
        paths.agent_root.join("node.key"),
        paths.agent_root.join("node-ca.crt"),
    );
    let kept = match (
        std::fs::read_to_string(&crt_path),
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&ca_path),
    ) {
        (Ok(crt), Ok(key), Ok(old_ca)) if old_ca == ca => {
            let fits = kubeconfig::subject(&crt).is_some_and(|(cn, orgs)| {
                cn == kubeconfig::node_user(&name)
                    && (!cfg.cluster.ca.has_key() || orgs == kubeconfig::own_node_groups(cfg))
            });
            fits.then_some(kubeconfig::ClientIdentity {
                crt_pem: crt,
                key_pem: key,
            })
        }
        _ => None,
    };
    let id = match kept {
        Some(id) => id,
        None => {
            let id = if cfg.cluster.ca.has_key() {
                let (ca, key) = ca_pems(cfg)?;
                let user = kubeconfig::node_user(&name);
                kubeconfig::issue_client(&ca, &key, &user, &kubeconfig::own_node_groups(cfg))?
            } else {
                request_node_certificate(machine, cfg, &name).await?
            };
            write_private(&key_path, id.key_pem.as_bytes())?;
            write_private(&crt_path, id.crt_pem.as_bytes())?;
            write_private(&ca_path, ca.as_bytes())?;
            machine.events.publish(
                "cluster",
                format!("node identity {} ready", kubeconfig::node_user(&name)),
            );
            id
        }
    };
    let server = if is_control_plane(cfg) {
        specs::local_server_url(machine.cluster.programs.server_listen)
    } else {
        cfg.cluster
            .control_plane
            .as_ref()
            .map(|cp| cp.endpoint.clone())
            .filter(|e| !e.is_empty())
            .ok_or("cluster.controlPlane.endpoint: not set in the config")?
    };
    let cluster = if cfg.cluster.name.is_empty() {
        "ros"
    } else {
        &cfg.cluster.name
    };
    Ok(kubeconfig::render(
        cluster,
        &kubeconfig::node_user(&name),
        &server,
        &ca,
        &id,
    ))
}

/// Sends a certificate request with `cluster.token` to a control plane's trust port.
async fn request_node_certificate(
    machine: &Machine,
    cfg: &MachineConfig,
    name: &str,
) -> Result<kubeconfig::ClientIdentity, String> {
    let endpoint = machine
        .trust_endpoint
        .clone()
        .or_else(|| {
            cfg.cluster
                .control_plane
                .as_ref()
                .and_then(|cp| specs::url_host(&cp.endpoint))
        })
        .ok_or("no trust endpoint: cluster.controlPlane.endpoint is not set")?;
    let machine_ca = cfg
        .machine
        .ca
        .crt_pem()
        .map_err(|e| format!("machine.ca.crt: {e}"))?;
    let (csr_pem, key_pem) = kubeconfig::node_csr()?;
    let creds = ros_api::client::Credentials::ServerOnly { ca_pem: machine_ca };
    let mut client = ros_api::client::trust_client(&endpoint, &creds)
        .await
        .map_err(|e| format!("{endpoint}: {e:#}"))?;
    let reply = client
        .node_certificate(ros_api::machine::NodeCertificateRequest {
            token: cfg.cluster.token.clone(),
            csr_pem,
            node_name: name.to_string(),
        })
        .await
        .map_err(|s| format!("{endpoint}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(kubeconfig::ClientIdentity {
        crt_pem: reply.crt_pem,
        key_pem,
    })
}
