//! The `Resolvers` resource: the DNS servers in use. The config's nameservers win; without
//! them, the servers of the current DHCP leases (what resolv.conf gets from the lease).

use crate::machine::Machine;
use serde_json::{Value, json};

/// The resource's spec, or None when no DNS server is known.
pub fn effective(configured: &[String], leases: &[(String, Vec<String>)]) -> Option<Value> {
    if !configured.is_empty() {
        return Some(json!({"servers": configured, "source": "static"}));
    }
    let mut servers: Vec<&String> = Vec::new();
    let mut links = Vec::new();
    for (link, dns) in leases {
        if dns.is_empty() {
            continue;
        }
        links.push(link);
        for s in dns {
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
    }
    (!servers.is_empty()).then(|| json!({"servers": servers, "source": "dhcp", "links": links}))
}

/// Replaces the `Resolvers` resource with what is in use now (after each apply pass and
/// periodically, since a lease can come, change or go at any time).
pub fn refresh(machine: &Machine) {
    let configured = machine
        .running()
        .map(|r| r.config.machine.network.nameservers.clone())
        .unwrap_or_default();
    let spec = effective(&configured, &machine.system.dhcp_dns());
    machine.resources.replace_all(
        "Resolvers",
        spec.map(|s| ("resolvers".to_string(), s))
            .into_iter()
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(link: &str, dns: &[&str]) -> (String, Vec<String>) {
        (link.into(), dns.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn configured_servers_win_over_lease_ones() {
        let spec = effective(&["10.0.0.53".into()], &[lease("eth0", &["192.168.1.1"])]).unwrap();
        assert_eq!(spec["servers"], json!(["10.0.0.53"]));
        assert_eq!(spec["source"], "static");
    }

    #[test]
    fn lease_servers_are_used_without_configured_ones() {
        let leases = [
            lease("eth0", &["10.0.2.3", "10.0.2.4"]),
            lease("eth1", &[]),
            lease("eth2", &["10.0.2.4", "192.168.9.1"]),
        ];
        let spec = effective(&[], &leases).unwrap();
        assert_eq!(
            spec["servers"],
            json!(["10.0.2.3", "10.0.2.4", "192.168.9.1"])
        );
        assert_eq!(spec["source"], "dhcp");
        assert_eq!(spec["links"], json!(["eth0", "eth2"]));
        assert!(effective(&[], &[lease("eth0", &[])]).is_none());
        assert!(effective(&[], &[]).is_none());
    }

    #[test]
    fn the_dev_system_reports_simulated_lease_servers() {
        use crate::system::{DevSystem, System};
        let sys = DevSystem::new("h");
        assert!(effective(&[], &sys.dhcp_dns()).is_none());
        sys.set_lease_dns("eth0", &["10.0.2.3"]);
        let spec = effective(&[], &sys.dhcp_dns()).unwrap();
        assert_eq!(spec["servers"], json!(["10.0.2.3"]));
        sys.set_lease_dns("eth0", &[]);
        assert!(sys.dhcp_dns().is_empty());
    }
}
