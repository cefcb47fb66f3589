//! The resource types machined publishes, with the aliases `rosctl get` accepts.

/// Description of one resource type.
#[derive(Debug, Clone, Copy)]
pub struct ResourceTypeInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    /// Holds secrets: redacted for callers without the admin role.
    pub sensitive: bool,
    /// Readable in maintenance mode (hardware and network discovery).
    pub discovery: bool,
}

const fn t(
    name: &'static str,
    aliases: &'static [&'static str],
    description: &'static str,
    sensitive: bool,
    discovery: bool,
) -> ResourceTypeInfo {
    ResourceTypeInfo {
        name,
        aliases,
        description,
        sensitive,
        discovery,
    }
}

pub const TYPES: &[ResourceTypeInfo] = &[
    t(
        "MachineConfig",
        &["machineconfig", "mc", "config"],
        "the running machine config",
        true,
        false,
    ),
    t(
        "MachineStatus",
        &["machinestatus", "ms"],
        "stage of the machine and whether it is ready",
        false,
        false,
    ),
    t(
        "Hostname",
        &["hostname", "hostnames"],
        "the hostname wanted by the config",
        false,
        false,
    ),
    t(
        "Links",
        &["links", "link", "linkspec"],
        "network links and their MTU",
        false,
        true,
    ),
    t(
        "AddressSpec",
        &["addressspec", "addressspecs"],
        "static addresses the config puts on links",
        false,
        true,
    ),
    t(
        "Addresses",
        &["addresses", "address", "addr", "addressstatus"],
        "addresses on the links now (static and DHCP), from the kernel",
        false,
        true,
    ),
    t(
        "Routes",
        &["routes", "route", "routespec"],
        "routes per link",
        false,
        false,
    ),
    t(
        "Resolvers",
        &["resolvers", "resolver", "dns"],
        "DNS servers",
        false,
        false,
    ),
    t(
        "TimeServers",
        &["timeservers", "timeserver", "ntp"],
        "NTP servers",
        false,
        false,
    ),
    t(
        "TimeStatus",
        &["timestatus", "timesync", "ts"],
        "SNTP time sync: synchronised, server, offset, last sync, error",
        false,
        false,
    ),
    t(
        "Sysctls",
        &["sysctls", "sysctl"],
        "kernel parameters",
        false,
        false,
    ),
    t(
        "KernelModuleStatus",
        &["kernelmodulestatus", "kernelmodules", "kmod", "modules"],
        "kernel modules from the config: loaded, or why not",
        false,
        false,
    ),
    t(
        "Files",
        &["files", "file"],
        "files written from the config",
        false,
        false,
    ),
    t(
        "Services",
        &["services", "service", "svc"],
        "supervised services and their state",
        false,
        false,
    ),
    t(
        "ControllerStatus",
        &["controllerstatus", "controllers", "cs"],
        "whether each controller applied its resources",
        false,
        false,
    ),
    t(
        "LogDestinations",
        &["logdestinations", "logdestination", "logging"],
        "log forwarding destinations: connected, lines sent and dropped",
        false,
        false,
    ),
    t("Disks", &["disks", "disk"], "block devices", false, true),
];

/// Resolves a user-typed type name or alias (case-insensitive) to the canonical type.
pub fn canonical_type(name: &str) -> Option<&'static ResourceTypeInfo> {
    let lower = name.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(&lower) || t.aliases.contains(&lower.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_case_insensitively() {
        assert_eq!(canonical_type("mc").unwrap().name, "MachineConfig");
        assert_eq!(canonical_type("ADDRESSES").unwrap().name, "Addresses");
        assert_eq!(canonical_type("addressspec").unwrap().name, "AddressSpec");
        assert_eq!(canonical_type("timestatus").unwrap().name, "TimeStatus");
        assert!(canonical_type("nonsense").is_none());
    }
}
