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
}

impl Running {
    pub fn parse(yaml: &str) -> Result<Self, ros_config::ConfigError> {
        let config = ros_config::parse(yaml)?;
        let json = serde_json::to_value(&config).unwrap_or(Value::Null);
        Ok(Self {
            yaml: yaml.to_string(),
            config,
            json,
        })
    }

    pub fn hostname(&self) -> Option<String> {
        self.config
            .machine
            .network
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
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
    running: watch::Sender<Option<Arc<Running>>>,
    pending_try: Mutex<Option<JoinHandle<()>>>,
    /// Serialises config changes (apply, try rollback, reboot, reset).
    pub lifecycle: tokio::sync::Mutex<()>,
}

pub struct MachineOptions {
    pub dev: bool,
    pub platform: String,
    pub listen: SocketAddr,
    pub paths: Paths,
    pub system: Arc<dyn System>,
    pub log: LogBuffer,
}

impl Machine {
    pub fn new(opts: MachineOptions) -> anyhow::Result<Arc<Self>> {
        let resources = ResourceStore::new();
        let events = EventBus::new();
        let supervisor =
            Supervisor::new(opts.paths.logs.clone(), resources.clone(), events.clone());
        let sans = base_sans(&opts.system.hostname(), opts.listen);
        let tls = TlsSwitch::new(tls::maintenance_config(&sans)?);
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
            running,
            pending_try: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
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

    /// The name replies carry: the configured hostname, else the system's.
    pub fn node_name(&self) -> String {
        self.running()
            .and_then(|r| r.hostname())
            .unwrap_or_else(|| self.system.hostname())
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
                    &r.hostname().unwrap_or_else(|| self.system.hostname()),
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
                match configured_tls(&r.config, &sans) {
                    Ok(config) => self.tls.set(config),
                    Err(e) => {
                        status_error = Some(format!("machine API TLS: {e}"));
                        tracing::error!("machine API TLS: {e}");
                    }
                }
            }
            None => {
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

fn configured_tls(
    cfg: &ros_config::MachineConfig,
    sans: &[String],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let ca = &cfg.machine.ca;
    let crt = ca.crt_pem().map_err(|e| format!("machine.ca.crt: {e}"))?;
    let key = if ca.has_key() {
        Some(ca.key_pem().map_err(|e| format!("machine.ca.key: {e}"))?)
    } else {
        None
    };
    tls::configured_config(&crt, key.as_deref(), sans).map_err(|e| e.to_string())
}
