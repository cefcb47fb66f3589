//! `machine.network`: hostname, interfaces (by name or hardware selector), routes, DNS.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Network settings of the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// DNS servers (IP addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

impl NetworkConfig {
    pub fn is_empty(&self) -> bool {
        *self == NetworkConfig::default()
    }
}

/// One network interface, chosen by `interface` name or by `deviceSelector` (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    /// Link name, e.g. `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Hardware properties that pick the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<DeviceSelector>,
    /// Get addresses, routes and DNS by DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<bool>,
    /// Static addresses in CIDR form (`10.0.0.5/24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Picks a link by hardware properties; every given property must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSelector {
    /// MAC address, `*` wildcards allowed (`52:54:00:*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_addr: Option<String>,
    /// Kernel driver name (`virtio_net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Bus path (`0000:00:03.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_path: Option<String>,
}

impl DeviceSelector {
    pub fn is_empty(&self) -> bool {
        *self == DeviceSelector::default()
    }
}

/// A route through this interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR form; `0.0.0.0/0` is the default route.
    pub network: String,
    /// Next hop; omitted for on-link routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}
