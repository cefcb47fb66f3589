//! The `cluster` section: what every machine of the cluster shares.

use super::{PemPair, is_false};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings of the cluster this machine belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSection {
    /// Cluster name (a DNS label).
    #[serde(default)]
    pub name: String,
    /// How machines reach the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    #[serde(default)]
    pub network: ClusterNetwork,
    /// Bootstrap token nodes use to join (`[a-z0-9]{6}.[a-z0-9]{16}`).
    #[serde(default)]
    pub token: String,
    /// Kubernetes CA; control planes hold its key, workers only its certificate.
    #[serde(default)]
    pub ca: PemPair,
    /// State store of the control plane (workers ignore it).
    #[serde(default, skip_serializing_if = "Store::is_default")]
    pub store: Store,
    #[serde(default, skip_serializing_if = "ApiServer::is_empty")]
    pub api_server: ApiServer,
    /// Key that signs service-account tokens (control planes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccount>,
    /// Let workloads run on control-plane machines (single-node clusters).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_scheduling_on_control_planes: bool,
}

/// The control-plane endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    /// `https://host:port` of the Kubernetes API (a load balancer or the first control plane).
    pub endpoint: String,
}

/// Pod and service address ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetwork {
    #[serde(default = "default_pod_subnets")]
    pub pod_subnets: Vec<String>,
    #[serde(default = "default_service_subnets")]
    pub service_subnets: Vec<String>,
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
}

pub fn default_pod_subnets() -> Vec<String> {
    vec!["10.244.0.0/16".into()]
}

pub fn default_service_subnets() -> Vec<String> {
    vec!["10.96.0.0/12".into()]
}

pub fn default_dns_domain() -> String {
    "cluster.local".into()
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        ClusterNetwork {
            pod_subnets: default_pod_subnets(),
            service_subnets: default_service_subnets(),
            dns_domain: default_dns_domain(),
        }
    }
}

/// Which engine keeps the cluster state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded SQLite on the control plane (single control plane).
    #[default]
    Sqlite,
    /// etcd members on every control plane (HA).
    Etcd,
}

/// State store settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Store {
    #[serde(default)]
    pub backend: StoreBackend,
    /// etcd settings; its CA is kept even with SQLite so the backend can be switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdStore>,
}

impl Store {
    pub fn is_default(&self) -> bool {
        *self == Store::default()
    }
}

/// etcd settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdStore {
    /// CA for etcd peer and client certificates.
    #[serde(default)]
    pub ca: PemPair,
}

/// API server settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    /// Extra names and addresses for the API server certificate.
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
}

impl ApiServer {
    pub fn is_empty(&self) -> bool {
        self.cert_sans.is_empty()
    }
}

/// Service-account signing key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    /// Base64 of the PEM private key.
    pub key: String,
}
