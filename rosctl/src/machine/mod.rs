//! Machine API commands (talosctl style). Each runs on every target node at once and prints
//! per-node results; a failing node is reported on stderr without hiding the others, and the
//! exit status is non-zero if any node failed.

mod apply;
pub mod client_config;
mod edit;
mod fanout;
mod health;
mod info;
mod kubeconfig;
mod output;
mod resources;
mod services;

use crate::global::GlobalArgs;
use clap::Subcommand;
use ros_api::client::Credentials;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum MachineCommand {
    /// Show the client and node versions.
    Version(info::VersionArgs),
    /// Apply a machine config to nodes.
    ApplyConfig(apply::ApplyArgs),
    /// Patch the machine config on nodes (`patch machineconfig --patch @p.yaml`).
    Patch(edit::PatchArgs),
    /// Edit the machine config in $EDITOR and apply it.
    Edit(edit::EditArgs),
    /// Get or watch resources (`rosctl get rd` lists the types).
    Get(resources::GetArgs),
    /// List the supervised services.
    Services,
    /// Show or control one service.
    Service(services::ServiceArgs),
    /// Restart a service.
    Restart(services::RestartArgs),
    /// Show a service's log (`machined` for machined's own).
    Logs(services::LogsArgs),
    /// Show the kernel log.
    Dmesg(services::DmesgArgs),
    /// Reboot nodes.
    Reboot(info::RebootArgs),
    /// Power nodes off.
    Shutdown,
    /// Wipe STATE and EPHEMERAL and return nodes to maintenance mode.
    Reset(info::ResetArgs),
    /// Show node hostnames.
    Hostname,
    /// Show memory usage.
    Memory,
    /// Show load averages.
    Loadavg,
    /// List processes.
    Processes,
    /// List mounts.
    Mounts,
    /// List disks.
    Disks(MaintenanceArgs),
    /// Show network device counters.
    Netdev(MaintenanceArgs),
    /// Show node clocks.
    Time,
    /// Stream machine events.
    Events(info::EventsArgs),
    /// Bootstrap the cluster on the first control-plane node (once).
    Bootstrap,
    /// Download an admin kubeconfig (or merge it into ~/.kube/config with --merge).
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Check the control plane through the Kubernetes API.
    Health(health::HealthArgs),
}

/// For calls a maintenance-mode node answers.
#[derive(clap::Args, Debug)]
pub struct MaintenanceArgs {
    /// Connect without a client certificate, accepting the node's self-signed certificate
    /// (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,
}

/// How to reach nodes: credentials, and the endpoint that forwards calls (`-e` with `-n`).
#[derive(Clone)]
pub struct Dialer {
    pub creds: Credentials,
    pub via: Option<String>,
}

impl Dialer {
    pub async fn connect(&self, node: &str) -> anyhow::Result<ros_api::client::Client> {
        match &self.via {
            Some(endpoint) if endpoint != node => {
                ros_api::client::connect_via(endpoint, node, &self.creds).await
            }
            _ => ros_api::client::connect(node, &self.creds).await,
        }
    }
}

/// Nodes to call and the credentials to use.
pub struct Targets {
    pub nodes: Vec<String>,
    pub creds: Dialer,
}

impl Targets {
    /// From the rosconfig (with `-n`/`-e` overrides), or, with `insecure`, from the flags alone.
    pub fn resolve(global: &GlobalArgs, insecure: bool) -> anyhow::Result<Self> {
        if insecure {
            let nodes = if global.nodes.is_empty() {
                global.endpoints.clone()
            } else {
                global.nodes.clone()
            };
            if nodes.is_empty() {
                anyhow::bail!("--insecure needs the node addresses: pass -n/--nodes");
            }
            return Ok(Self {
                nodes,
                creds: Dialer {
                    creds: Credentials::Insecure,
                    via: None,
                },
            });
        }
        let conn = global.connection()?;
        // `-e E -n N`: N is reached through E, which forwards the call. `-n N` alone (or nodes
        // from the context): each node is called directly.
        let via = (!global.endpoints.is_empty() && !conn.nodes.is_empty())
            .then(|| conn.endpoints[0].clone());
        let nodes = if conn.nodes.is_empty() {
            conn.endpoints.clone()
        } else {
            conn.nodes.clone()
        };
        let creds = Credentials::Mutual {
            ca_pem: conn.ca_pem,
            crt_pem: conn.crt_pem,
            key_pem: conn.key_pem,
        };
        Ok(Self {
            nodes,
            creds: Dialer { creds, via },
        })
    }
}

pub fn run(cmd: MachineCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(dispatch(cmd, global))?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Returns whether any node failed.
async fn dispatch(cmd: MachineCommand, global: &GlobalArgs) -> anyhow::Result<bool> {
    use MachineCommand as C;
    let insecure = match &cmd {
        C::ApplyConfig(a) => a.insecure,
        C::Version(a) => a.insecure,
        C::Get(a) => a.insecure,
        C::Disks(a) | C::Netdev(a) => a.insecure,
        _ => false,
    };
    let t = Targets::resolve(global, insecure)?;
    match cmd {
        C::ApplyConfig(a) => apply::run(&a, &t).await,
        C::Version(a) => info::version(&t, &a).await,
        C::Get(a) => resources::run(&t, &a).await,
        C::Services => services::list(&t).await,
        C::Service(a) => services::service(&t, &a).await,
        C::Restart(a) => services::restart(&t, &a).await,
        C::Logs(a) => services::logs(&t, &a).await,
        C::Dmesg(a) => services::dmesg(&t, &a).await,
        C::Reboot(a) => info::reboot(&t, &a).await,
        C::Patch(a) => edit::patch(&t, &a).await,
        C::Edit(a) => edit::edit(&t, &a).await,
        C::Shutdown => info::power(&t, info::Power::Shutdown).await,
        C::Reset(a) => info::reset(&t, &a).await,
        C::Hostname => info::hostname(&t).await,
        C::Memory => info::memory(&t).await,
        C::Loadavg => info::loadavg(&t).await,
        C::Processes => info::processes(&t).await,
        C::Mounts => info::mounts(&t).await,
        C::Disks(_) => info::disks(&t).await,
        C::Netdev(_) => info::netdev(&t).await,
        C::Time => info::time(&t).await,
        C::Events(a) => info::events(&t, &a).await,
        C::Bootstrap => kubeconfig::bootstrap(&t).await,
        C::Kubeconfig(a) => kubeconfig::kubeconfig(&t, &a).await,
        C::Health(a) => health::health(&t, &a).await,
    }
}
