//! `gen config`: control-plane and worker configs plus a rosconfig from a secrets bundle.
//!
//! Everything secret comes from the [`Secrets`] bundle, so the same bundle gives configs with
//! the same secrets. Only the admin client certificate in the rosconfig is issued afresh.

use crate::patch::{Patch, PatchError, patch_config};
use crate::pki::{self, PkiError};
use crate::rosconfig::{Context, RosConfig};
use crate::secrets::Secrets;
use crate::syntax::{is_lowercase_dns_label, parse_endpoint};
use crate::types::*;

/// Organisation of the admin client certificate: the machine API's admin role.
pub const ADMIN_ROLE: &str = "os:admin";
/// Port of the machine API.
pub const MACHINE_API_PORT: u16 = 50000;

/// What `gen config` is asked for.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub cluster_name: String,
    /// `https://host:port` of the Kubernetes API.
    pub endpoint: String,
    pub secrets: Secrets,
    /// Patches for both configs, then the role-specific ones.
    pub patches: Vec<Patch>,
    pub patches_control_plane: Vec<Patch>,
    pub patches_worker: Vec<Patch>,
}

/// The generated files.
#[derive(Debug, Clone)]
pub struct Generated {
    pub control_plane: MachineConfig,
    pub worker: MachineConfig,
    pub rosconfig: RosConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cluster name {0:?} is not a lowercase DNS label (a-z, 0-9, '-', at most 63)")]
    ClusterName(String),
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("secrets bundle: {0}")]
    Secrets(String),
    #[error("{file}: {error}")]
    Patch { file: String, error: PatchError },
    #[error("{file}: generated config is invalid:\n{errors}")]
    Invalid {
        file: String,
        errors: crate::ValidationErrors,
    },
}

/// Builds both configs (patched and validated) and the rosconfig.
pub fn generate(opts: &GenOptions) -> Result<Generated, GenError> {
    if !is_lowercase_dns_label(&opts.cluster_name) {
        return Err(GenError::ClusterName(opts.cluster_name.clone()));
    }
    let endpoint = parse_endpoint(&opts.endpoint).map_err(GenError::Endpoint)?;
    let s = &opts.secrets;

    let cluster = |control_plane: bool| ClusterSection {
        name: opts.cluster_name.clone(),
        control_plane: Some(ControlPlane {
            endpoint: opts.endpoint.clone(),
        }),
        network: ClusterNetwork::default(),
        token: s.tokens.bootstrap.clone(),
        ca: if control_plane {
            s.certs.kubernetes.clone()
        } else {
            s.certs.kubernetes.without_key()
        },
        store: Store {
            backend: StoreBackend::Sqlite,
            etcd: control_plane.then(|| EtcdStore {
                ca: s.certs.etcd.clone(),
            }),
        },
        api_server: ApiServer {
            cert_sans: if control_plane {
                vec![endpoint.host.clone()]
            } else {
                Vec::new()
            },
        },
        service_account: control_plane.then(|| ServiceAccount {
            key: s.certs.service_account_key.clone(),
        }),
        allow_scheduling_on_control_planes: false,
    };
    let machine = |machine_type: MachineType| MachineSection {
        machine_type,
        token: s.tokens.machine.clone(),
        ca: if machine_type == MachineType::ControlPlane {
            s.certs.machine.clone()
        } else {
            s.certs.machine.without_key()
        },
        cert_sans: if machine_type == MachineType::ControlPlane {
            vec![endpoint.host.clone()]
        } else {
            Vec::new()
        },
        install: None,
        network: NetworkConfig::default(),
        time: None,
        kernel: Default::default(),
        sysctls: Default::default(),
        files: Vec::new(),
        env: Default::default(),
        node_labels: Default::default(),
        node_taints: Default::default(),
        registries: Registries::default(),
        logging: None,
        features: Features::default(),
    };

    let base_cp = MachineConfig {
        version: CONFIG_VERSION.to_string(),
        machine: machine(MachineType::ControlPlane),
        cluster: cluster(true),
    };
    let base_worker = MachineConfig {
        version: CONFIG_VERSION.to_string(),
        machine: machine(MachineType::Worker),
        cluster: cluster(false),
    };

    let control_plane = finish(
        "controlplane.yaml",
        &base_cp,
        &opts.patches,
        &opts.patches_control_plane,
    )?;
    let worker = finish(
        "worker.yaml",
        &base_worker,
        &opts.patches,
        &opts.patches_worker,
    )?;

    let ca_pem = s
        .certs
        .machine
        .crt_pem()
        .map_err(|e| GenError::Secrets(format!("certs.machine.crt: {e}")))?;
    let ca_key_pem = s
        .certs
        .machine
        .key_pem()
        .map_err(|e| GenError::Secrets(format!("certs.machine.key: {e}")))?;
    let admin = pki::issue_client_cert(&ca_pem, &ca_key_pem, "admin", &[ADMIN_ROLE])?;
    let context = Context::from_pem(
        vec![endpoint.host.clone()],
        &ca_pem,
        &admin.cert_pem,
        &admin.key_pem,
    );
    let rosconfig = RosConfig {
        context: opts.cluster_name.clone(),
        contexts: [(opts.cluster_name.clone(), context)].into(),
    };

    Ok(Generated {
        control_plane,
        worker,
        rosconfig,
    })
}

fn finish(
    file: &str,
    base: &MachineConfig,
    common: &[Patch],
    specific: &[Patch],
) -> Result<MachineConfig, GenError> {
    let patches: Vec<Patch> = common.iter().chain(specific).cloned().collect();
    let cfg = if patches.is_empty() {
        base.clone()
    } else {
        patch_config(base, &patches).map_err(|error| GenError::Patch {
            file: file.to_string(),
            error,
        })?
    };
    cfg.validate().map_err(|errors| GenError::Invalid {
        file: file.to_string(),
        errors,
    })?;
    Ok(cfg)
}

impl MachineConfig {
    /// Names and addresses the machine API server certificate must carry: `machine.certSANs`,
    /// the hostname and the static addresses. machined adds its runtime addresses.
    pub fn machine_api_sans(&self) -> Vec<String> {
        let mut sans: Vec<String> = self.machine.cert_sans.clone();
        if let Some(h) = &self.machine.network.hostname {
            sans.push(h.clone());
        }
        for iface in &self.machine.network.interfaces {
            for a in &iface.addresses {
                if let Some(net) = crate::syntax::parse_cidr(a) {
                    sans.push(net.addr().to_string());
                }
            }
        }
        dedup(sans)
    }

    /// Names and addresses the Kubernetes API server certificate must carry: the endpoint's
    /// host, `cluster.apiServer.certSANs`, the in-cluster service names and the first
    /// service address.
    pub fn api_server_sans(&self) -> Vec<String> {
        let mut sans = Vec::new();
        if let Some(cp) = &self.cluster.control_plane
            && let Ok(e) = parse_endpoint(&cp.endpoint)
        {
            sans.push(e.host);
        }
        sans.extend(self.cluster.api_server.cert_sans.iter().cloned());
        let domain = &self.cluster.network.dns_domain;
        for n in [
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{domain}"),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ] {
            sans.push(n);
        }
        if let Some(first) = self
            .cluster
            .network
            .service_subnets
            .first()
            .and_then(|s| crate::syntax::parse_cidr(s))
            .and_then(|n| n.hosts().next())
        {
            sans.push(first.to_string());
        }
        dedup(sans)
    }
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}
