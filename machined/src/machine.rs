//! The machine: its running config, mode, and the lifecycle transitions (boot, apply, reboot,
//! shutdown, reset) that the API and the controllers share.

use crate::events::EventBus;
use crate::logbuf::LogBuffer;
use crate::paths::Paths;
use crate::resources::ResourceStore;
use crate::services::Supervisor;
use crate::system::{PowerAction, System};
use crate::tls::{self, TlsSwitch};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether the node has a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Maintenance,
    Configured,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Maintenance => "maintenance",
            Mode::Configured => "configured",
        }
    }
}

/// An accepted config: its text as applied, the typed form and the JSON view the controllers
/// and the diff read.
#[derive(Debug)]
pub struct Running {
    pub yaml: String,
    pub config: ros_config::MachineConfig,
    pub json: Value,
    /// Unique per parsed config, so a controller can say which one it acted on.
    pub id: u64,
}

impl Running {
    pub fn parse(yaml: &str) -> Result<Self, ros_config::ConfigError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let config = ros_config::parse(yaml)?;
        let json = serde_json::to_value(&config).unwrap_or(Value::Null);
        Ok(Self {
            yaml: yaml.to_string(),
            config,
            json,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

pub struct Machine {
    pub dev: bool,
    pub platform: String,
    pub listen: SocketAddr,
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub resources: ResourceStore,
    pub events: EventBus,
    pub supervisor: Supervisor,
    /// machined's own log (`rosctl logs machined`).
    pub log: LogBuffer,
    pub tls: TlsSwitch,
    /// TLS of the trust port (signs other nodes' API certificates when this node has the CA key).
    pub trust_tls: TlsSwitch,
    /// Where to get this node's API certificate signed when it lacks the CA key (default: the
    /// control-plane endpoint's host, port 50001).
    pub trust_endpoint: Option<String>,
    cert_fetch: Mutex<Option<JoinHandle<()>>>,
    running: watch::Sender<Option<Arc<Running>>>,
    pending_try: Mutex<Option<JoinHandle<()>>>,
    /// Serialises config changes (apply, try rollback, reboot, reset).
    pub lifecycle: tokio::sync::Mutex<()>,
    /// The cluster role (control plane or worker services, bootstrap, kubeconfig).
    pub cluster: crate::cluster::ClusterRole,
    /// The system's hostname when machined started (a platform's name, or a placeholder).
    pub boot_hostname: String,
    /// Kept on STATE; the stable hostname is derived from it.
    pub machine_id: String,
    /// Sends service and machined log lines to `machine.logging.destinations`.
    pub logship: crate::logship::LogShipper,
}

pub struct MachineOptions {
    pub dev: bool,
    pub platform: String,
    pub listen: SocketAddr,
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub log: LogBuffer,
    pub trust_endpoint: Option<String>,
    /// Programs and addresses of the cluster role.
    pub programs: crate::cluster::Programs,
}

impl Machine {
    pub fn new(opts: MachineOptions) -> anyhow::Result<Arc<Self>> {
        let resources = ResourceStore::new();
        let events = EventBus::new();
        let logship = crate::logship::LogShipper::new();
        opts.log.ship_as("machined", &logship);
        let supervisor = Supervisor::new(
            opts.paths.logs.clone(),
            resources.clone(),
            events.clone(),
            logship.clone(),
        );
        let boot_hostname = opts.system.hostname();
        let machine_id = crate::hostname::machine_id(&opts.paths.state)
            .map_err(|e| anyhow::anyhow!("machine id in {}: {e}", opts.paths.state.display()))?;
        let sans = base_sans(&boot_hostname, opts.listen);
        let tls = TlsSwitch::new(tls::maintenance_config(&sans)?);
        let trust_tls = TlsSwitch::new(tls::maintenance_config(&sans)?);
        let (running, _) = watch::channel(None);
        let machine = Arc::new(Self {
            dev: opts.dev,
            platform: opts.platform,
            listen: opts.listen,
            paths: opts.paths,
            system: opts.system,
            resources,
            events,
            supervisor,
            log: opts.log,
            tls,
            trust_tls,
            trust_endpoint: opts.trust_endpoint,
            cert_fetch: Mutex::new(None),
            running,
            pending_try: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
            cluster: crate::cluster::ClusterRole::new(opts.programs),
            boot_hostname,
            machine_id,
            logship,
        });
        machine.publish_status("booting", None);
        Ok(machine)
    }

    pub fn running(&self) -> Option<Arc<Running>> {
        self.running.borrow().clone()
    }

    pub fn watch_config(&self) -> watch::Receiver<Option<Arc<Running>>> {
        self.running.subscribe()
    }

    pub fn mode(&self) -> Mode {
        if self.running.borrow().is_some() {
            Mode::Configured
        } else {
            Mode::Maintenance
        }
    }

    /// The name replies carry: the one the running config gives (see `crate::hostname`),
    /// else the system's.
    pub fn node_name(&self) -> String {
        self.running()
            .and_then(|r| self.hostname_for(&r.config))
            .unwrap_or_else(|| self.system.hostname())
    }

    /// The hostname a config gives this node, if any.
    pub fn hostname_for(&self, cfg: &ros_config::MachineConfig) -> Option<String> {
        crate::hostname::for_config(cfg, &self.boot_hostname, &self.machine_id)
    }

    fn stop_cert_fetch(&self) {
        if let Some(h) = self.cert_fetch.lock().expect("cert lock").take() {
            h.abort();
        }
    }

    /// Sets the API's TLS for a config: a certificate from the CA when this node holds its
    /// key (and the trust port then signs other nodes' certificates), else a temporary
    /// self-signed one while the certificate is requested from the trust endpoint.
    fn configure_tls(
        &self,
        cfg: &ros_config::MachineConfig,
        sans: Vec<String>,
    ) -> Result<(), String> {
        self.stop_cert_fetch();
        let ca = &cfg.machine.ca;
        let ca_pem = ca.crt_pem().map_err(|e| format!("machine.ca.crt: {e}"))?;
        if ca.has_key() {
            let key = ca.key_pem().map_err(|e| format!("machine.ca.key: {e}"))?;
            let id = tls::issued_identity(&ca_pem, &key, &sans).map_err(|e| e.to_string())?;
            self.tls
                .set(tls::mutual_config(&ca_pem, id.clone()).map_err(|e| e.to_string())?);
            self.trust_tls
                .set(tls::server_only_config(id).map_err(|e| e.to_string())?);
            return Ok(());
        }
        let id = tls::self_signed_identity(&sans).map_err(|e| e.to_string())?;
        self.tls
            .set(tls::mutual_config(&ca_pem, id).map_err(|e| e.to_string())?);
        let endpoint = self
            .trust_endpoint
            .clone()
            .or_else(|| endpoint_host(cfg))
            .ok_or("no trust endpoint: cluster.controlPlane.endpoint is not set")?;
        let task = tokio::spawn(fetch_certificate(
            self.tls.clone(),
            self.events.clone(),
            endpoint,
            ca_pem,
            cfg.machine.token.clone(),
            sans,
        ));
        *self.cert_fetch.lock().expect("cert lock") = Some(task);
        Ok(())
    }

    /// Whether `target` (as a client wrote it) names this node.
    pub fn is_self(&self, target: &str) -> bool {
        target == self.node_name() || target == self.listen.to_string()
    }

    /// Boots from STATE, else from the platform's config (stored on acceptance), else enters
    /// maintenance mode.
    pub async fn boot(self: &Arc<Self>, platform_config: Option<String>) {
        let _guard = self.lifecycle.lock().await;
        let mut chosen = None;
        match crate::state::load(&self.paths) {
            Ok(Some(yaml)) => match Running::parse(&yaml) {
                Ok(r) => {
                    self.events
                        .publish("config", "loaded the config stored on STATE");
                    chosen = Some(r);
                }
                Err(e) => self
                    .events
                    .publish("config", format!("stored config is invalid:\n{e}")),
            },
            Ok(None) => {}
            Err(e) => self
                .events
                .publish("config", format!("cannot read STATE: {e}")),
        }
        if chosen.is_none()
            && let Some(yaml) = platform_config
        {
            match Running::parse(&yaml) {
                Ok(r) => match crate::state::save(&self.paths, &yaml) {
                    Ok(()) => {
                        self.events.publish(
                            "config",
                            format!("accepted the {} platform config", self.platform),
                        );
                        chosen = Some(r);
                    }
                    Err(e) => self
                        .events
                        .publish("config", format!("cannot store the config on STATE: {e}")),
                },
                Err(e) => self
                    .events
                    .publish("config", format!("platform config rejected:\n{e}")),
            }
        }
        if chosen.is_none() {
            self.events.publish(
                "machine",
                "no config: maintenance mode, waiting for apply-config --insecure",
            );
        }
        self.set_running(chosen.map(Arc::new));
        self.supervisor.start_all();
    }

    /// Makes `running` the config the controllers act on and switches the API's TLS mode.
    pub fn set_running(&self, running: Option<Arc<Running>>) {
        let mut status_error = None;
        match &running {
            Some(r) => {
                // Stored whole; the API redacts it for callers who may not see secrets.
                self.resources
                    .put("MachineConfig", "v1alpha1", r.json.clone());
                let mut sans = base_sans(
                    &self
                        .hostname_for(&r.config)
                        .unwrap_or_else(|| self.boot_hostname.clone()),
                    self.listen,
                );
                sans.extend(r.config.machine.cert_sans.iter().cloned());
                for iface in &r.config.machine.network.interfaces {
                    sans.extend(
                        iface
                            .addresses
                            .iter()
                            .map(|a| a.split('/').next().unwrap_or(a).to_string()),
                    );
                }
                sans.dedup();
                if let Err(e) = self.configure_tls(&r.config, sans) {
                    status_error = Some(format!("machine API TLS: {e}"));
                    tracing::error!("machine API TLS: {e}");
                }
            }
            None => {
                self.stop_cert_fetch();
                self.resources.delete("MachineConfig", "v1alpha1");
                match tls::maintenance_config(&base_sans(&self.system.hostname(), self.listen)) {
                    Ok(config) => self.tls.set(config),
                    Err(e) => tracing::error!("maintenance TLS: {e}"),
                }
            }
        }
        let stage = if running.is_some() {
            "configured"
        } else {
            "maintenance"
        };
        self.running.send_replace(running);
        self.publish_status(stage, status_error);
    }

    pub fn publish_status(&self, stage: &str, error: Option<String>) {
        self.resources.put(
            "MachineStatus",
            "machine",
            json!({
                "stage": stage,
                "mode": self.mode().as_str(),
                "platform": self.platform,
                "dev": self.dev,
                "error": error,
            }),
        );
    }

    /// Cancels a pending `try` rollback (any later apply confirms or replaces the tried config).
    pub fn cancel_try(&self) -> bool {
        match self.pending_try.lock().expect("try lock").take() {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// Restores the stored config after `timeout` unless cancelled first.
    pub fn schedule_try_rollback(self: &Arc<Self>, timeout: std::time::Duration) {
        let machine = self.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _guard = machine.lifecycle.lock().await;
            // Forget our own handle first so the rollback is not reported as cancellable.
            machine.pending_try.lock().expect("try lock").take();
            let restored = match crate::state::load(&machine.paths) {
                Ok(Some(yaml)) => Running::parse(&yaml).ok().map(Arc::new),
                _ => None,
            };
            machine.set_running(restored);
            machine
                .events
                .publish("config", "try mode timed out: restored the stored config");
        });
        if let Some(old) = self.pending_try.lock().expect("try lock").replace(handle) {
            old.abort();
        }
    }

    /// Reboots: on a node, init does it; in dev mode the effect is recorded and a boot is
    /// simulated (services stop, the config on STATE is loaded again).
    pub async fn reboot(self: &Arc<Self>) -> Result<(), String> {
        self.power(PowerAction::Reboot).await
    }

    pub async fn shutdown(self: &Arc<Self>) -> Result<(), String> {
        self.power(PowerAction::Poweroff).await
    }

    async fn power(self: &Arc<Self>, action: PowerAction) -> Result<(), String> {
        self.events
            .publish("power", format!("{} requested", action.word()));
        self.publish_status(
            if action == PowerAction::Reboot {
                "rebooting"
            } else {
                "shutting down"
            },
            None,
        );
        self.supervisor.stop_all().await;
        self.system.power(action).map_err(|e| e.to_string())?;
        if self.dev && action == PowerAction::Reboot {
            self.cancel_try();
            self.boot(None).await;
        }
        Ok(())
    }

    /// Wipes STATE and EPHEMERAL and returns to maintenance mode (a node then reboots).
    pub async fn reset(self: &Arc<Self>) -> Result<(), String> {
        let _guard = self.lifecycle.lock().await;
        self.cancel_try();
        self.publish_status("resetting", None);
        self.supervisor.stop_all().await;
        crate::state::wipe(&self.paths).map_err(|e| format!("wipe STATE/EPHEMERAL: {e}"))?;
        self.set_running(None);
        self.events.publish(
            "machine",
            "reset: STATE and EPHEMERAL wiped, back to maintenance mode",
        );
        if !self.dev {
            self.system
                .power(PowerAction::Reboot)
                .map_err(|e| e.to_string())?;
        } else {
            self.supervisor.start_all();
        }
        Ok(())
    }
}

fn base_sans(hostname: &str, listen: SocketAddr) -> Vec<String> {
    let mut sans = vec![];
    if !hostname.is_empty() {
        sans.push(hostname.to_string());
    }
    sans.extend([
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]);
    if !listen.ip().is_unspecified() {
        sans.push(listen.ip().to_string());
    }
    sans
}

/// The control-plane endpoint's host (`https://host:6443` -> `host`).
fn endpoint_host(cfg: &ros_config::MachineConfig) -> Option<String> {
    let url = &cfg.cluster.control_plane.as_ref()?.endpoint;
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host_port = rest.split('/').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?.to_string(),
        None => host_port
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host_port)
            .to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// Gets this node's API certificate signed by a node holding the CA key, retrying with
/// backoff, then switches the API to it.
async fn fetch_certificate(
    tls: TlsSwitch,
    events: EventBus,
    endpoint: String,
    ca_pem: String,
    token: String,
    sans: Vec<String>,
) {
    let mut attempt = 0u32;
    loop {
        match try_fetch(&endpoint, &ca_pem, &token, &sans).await {
            Ok(config) => {
                tls.set(config);
                events.publish(
                    "machine",
                    format!("machine API certificate signed by {endpoint}"),
                );
                return;
            }
            Err(e) => {
                if attempt == 0 {
                    events.publish(
                        "machine",
                        format!("machine API certificate from {endpoint}: {e}; retrying"),
                    );
                }
                tokio::time::sleep(crate::controllers::retry_delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

async fn try_fetch(
    endpoint: &str,
    ca_pem: &str,
    token: &str,
    sans: &[String],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (csr_pem, key_pem) = tls::server_csr(sans).map_err(|e| e.to_string())?;
    let creds = ros_api::client::Credentials::ServerOnly {
        ca_pem: ca_pem.to_string(),
    };
    let mut client = ros_api::client::trust_client(endpoint, &creds)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let reply = client
        .certificate(ros_api::machine::CertificateRequest {
            token: token.to_string(),
            csr_pem,
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let id = tls::identity_from_pem(&reply.crt_pem, &key_pem, ca_pem).map_err(|e| e.to_string())?;
    tls::mutual_config(ca_pem, id).map_err(|e| e.to_string())
}
