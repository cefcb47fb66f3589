//! Starting the scheduler and the controller manager inside a process (the `cluster server`),
//! each behind its own leader-election Lease in kube-system.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::leader::{self, Elector, Timing};

pub const SCHEDULER_LEASE: &str = "kube-scheduler";
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A client from a kubeconfig file (the admin kubeconfig the API server writes).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    Client::try_from(config).context("building the API client")
}

/// The CA (PEM) of the first cluster of a kubeconfig (`certificate-authority-data` or the
/// file `certificate-authority` names): for a server's own admin kubeconfig, the cluster CA.
pub fn root_ca_from_kubeconfig(path: &Path) -> Result<String> {
    use base64::Engine;
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("{}: no cluster", path.display()))?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("{}: certificate-authority-data", path.display()))?;
        return String::from_utf8(pem)
            .with_context(|| format!("{}: certificate-authority-data", path.display()));
    }
    let file = cluster
        .certificate_authority
        .as_ref()
        .with_context(|| format!("{}: the cluster names no CA", path.display()))?;
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

/// Spawns the leader-elected scheduler and controller manager.
pub fn spawn(client: Client, opts: super::Options, timing: Timing) {
    let sched = Elector::new(
        client.clone(),
        LEASE_NAMESPACE,
        SCHEDULER_LEASE,
        &leader::identity("kube-scheduler"),
        timing,
    );
    let c = client.clone();
    tokio::spawn(sched.run(move || {
        crate::scheduler::run(c.clone(), Arc::new(crate::scheduler::Stats::default()))
    }));
    let cm = Elector::new(
        client.clone(),
        LEASE_NAMESPACE,
        CONTROLLER_MANAGER_LEASE,
        &leader::identity("kube-controller-manager"),
        timing,
    );
    tokio::spawn(cm.run(move || super::run(client.clone(), opts.clone())));
}
