//! The `machine` section: what this one machine is and how it is set up.

use super::{NetworkConfig, PemPair, is_false, scalar_map};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Role of the machine in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachineType {
    /// Runs the state store, API server, scheduler and controllers.
    #[serde(rename = "controlplane")]
    ControlPlane,
    /// Runs workloads only.
    #[serde(rename = "worker")]
    Worker,
}

impl std::fmt::Display for MachineType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MachineType::ControlPlane => "controlplane",
            MachineType::Worker => "worker",
        })
    }
}

/// Settings of this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSection {
    /// `controlplane` or `worker`.
    #[serde(rename = "type")]
    pub machine_type: MachineType,
    /// Token machines use to join the cluster (`[a-z0-9]{6}.[a-z0-9]{16}`).
    #[serde(default)]
    pub token: String,
    /// Machine API CA; control planes hold its key, workers only its certificate.
    #[serde(default)]
    pub ca: PemPair,
    /// Extra names and addresses for the machine API server certificate.
    #[serde(rename = "certSANs", default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
    /// Where and how the system is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    /// Hostname, interfaces, nameservers.
    #[serde(default, skip_serializing_if = "NetworkConfig::is_empty")]
    pub network: NetworkConfig,
    /// Time synchronisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeConfig>,
    /// Kernel parameters (`net.ipv4.ip_forward: "1"`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map::deserialize"
    )]
    #[schemars(with = "BTreeMap<String, scalar_map::Scalar>")]
    pub sysctls: BTreeMap<String, String>,
    /// Kernel settings: modules loaded at boot.
    #[serde(default, skip_serializing_if = "KernelConfig::is_empty")]
    pub kernel: KernelConfig,
    /// Files written to the machine at boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
    /// Environment variables for system services.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map::deserialize"
    )]
    #[schemars(with = "BTreeMap<String, scalar_map::Scalar>")]
    pub env: BTreeMap<String, String>,
    /// Labels put on this machine's Kubernetes Node.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map::deserialize"
    )]
    #[schemars(with = "BTreeMap<String, scalar_map::Scalar>")]
    pub node_labels: BTreeMap<String, String>,
    /// Taints put on this machine's Node: `key: "value:Effect"` or `key: Effect`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "scalar_map::deserialize"
    )]
    #[schemars(with = "BTreeMap<String, scalar_map::Scalar>")]
    pub node_taints: BTreeMap<String, String>,
    /// Image registry mirrors and credentials.
    #[serde(default, skip_serializing_if = "Registries::is_empty")]
    pub registries: Registries,
    /// Where the logs of machined and every service are also sent (applied live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Optional behaviours.
    #[serde(default, skip_serializing_if = "Features::is_default")]
    pub features: Features,
}

/// Installation target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Install {
    /// Disk to install to, e.g. `/dev/sda` or `/dev/disk/by-id/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Installer image reference used for installs and upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Wipe the whole disk before installing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wipe: bool,
}

/// Time synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeConfig {
    /// Turn time synchronisation off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// NTP servers, each `host`, `host:port`, an IP address or `[IPv6]:port` (port 123 by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// Kernel settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelConfig {
    /// Modules loaded (with their dependencies) when the config is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<KernelModule>,
}

impl KernelConfig {
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// A kernel module to load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelModule {
    /// Module name, e.g. `br_netfilter` (letters `a-z`, digits, `_` and `-`).
    pub name: String,
    /// Module parameters, each `key=value` or a bare `flag`, e.g. `max_loop=64`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<String>,
}

/// How a file is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// Create (or replace) the file.
    #[default]
    Create,
    /// Append to an existing file.
    Append,
}

/// A file the machine writes at boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineFile {
    /// Absolute path of the file.
    pub path: String,
    /// File content.
    #[serde(default)]
    pub content: String,
    /// Mode bits, e.g. `0o644` (420).
    #[serde(default = "default_permissions")]
    pub permissions: u32,
    /// `create` (default) or `append`.
    #[serde(default)]
    pub op: FileOp,
}

fn default_permissions() -> u32 {
    0o644
}

/// Image registry settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registries {
    /// Mirrors by registry host (`docker.io`, or `*` for every registry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, RegistryMirror>,
    /// Credentials and TLS settings by registry host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, RegistryConfig>,
}

impl Registries {
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.config.is_empty()
    }
}

/// Mirror endpoints for one registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryMirror {
    /// Mirror URLs tried in order (`https://mirror.example:5000`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Do not fall back to the upstream registry when every mirror fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_fallback: bool,
}

/// Credentials and TLS settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,
}

/// Registry credentials: username/password, a pre-encoded `auth`, or an identity token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<String>,
}

/// TLS settings for a registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryTls {
    /// Skip server certificate verification (testing only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
    /// Base64 PEM CA bundle trusted for this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<PemPair>,
}

/// Log forwarding: each log line as one JSON object
/// (`{"msg":..,"service":..,"time":..,"level":..}`) per line over TCP, or per datagram over UDP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    #[serde(default)]
    pub destinations: Vec<LogDestination>,
}

/// Format of forwarded log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    #[serde(rename = "json_lines")]
    JsonLines,
}

/// One log destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogDestination {
    /// `udp://host:port` or `tcp://host:port`.
    pub endpoint: String,
    #[serde(default)]
    pub format: LogFormat,
}

/// Optional behaviours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Features {
    /// Check the role (`os:admin`, `os:operator`, `os:reader`) in client certificates of the
    /// machine API; when false, every client with a certificate from the machine CA is
    /// `os:admin`.
    #[serde(default = "default_true")]
    pub rbac: bool,
    /// When neither the config nor the platform names the machine, name it `ros-xxx-yyy`
    /// from its machine id (kept on STATE), instead of init's default `ros`.
    #[serde(default = "default_true")]
    pub stable_hostname: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Features {
    fn default() -> Self {
        Features {
            rbac: true,
            stable_hostname: true,
        }
    }
}

impl Features {
    pub fn is_default(&self) -> bool {
        *self == Features::default()
    }
}
