//! What the config asks of the system, as plain data (pure: easy to test).

use crate::system::RouteSpec;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkWant {
    pub name: String,
    pub mtu: Option<u32>,
    pub dhcp: bool,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileWant {
    pub path: String,
    pub content: String,
    pub mode: u32,
    pub append: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleWant {
    pub name: String,
    pub parameters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub hostname: Option<String>,
    pub links: Vec<LinkWant>,
    pub routes: Vec<RouteSpec>,
    pub resolvers: Vec<String>,
    pub time_servers: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    /// Kernel modules to load, in config order.
    pub kernel_modules: Vec<ModuleWant>,
    pub files: Vec<FileWant>,
    /// Links a DHCP client runs on.
    pub dhcp_links: Vec<String>,
}

/// Derives the desired system state from a config. Without a config (maintenance mode) or
/// without configured interfaces, DHCP runs on every Ethernet link in `links`, so the node is
/// reachable.
pub fn derive(cfg: Option<&ros_config::MachineConfig>, links: &[String]) -> Desired {
    let Some(cfg) = cfg else {
        return Desired {
            dhcp_links: links.to_vec(),
            ..Default::default()
        };
    };
    let m = &cfg.machine;
    let mut d = Desired {
        hostname: m.network.hostname.clone().filter(|h| !h.is_empty()),
        resolvers: m.network.nameservers.clone(),
        sysctls: m.sysctls.clone(),
        kernel_modules: m
            .kernel
            .modules
            .iter()
            .map(|k| ModuleWant {
                name: k.name.clone(),
                parameters: k.parameters.clone(),
            })
            .collect(),
        ..Default::default()
    };
    for (i, iface) in m.network.interfaces.iter().enumerate() {
        // Interfaces chosen by a device selector get resolved against real links; until then
        // they are named by their position.
        let name = iface
            .interface
            .clone()
            .unwrap_or_else(|| format!("selector{i}"));
        d.links.push(LinkWant {
            name: name.clone(),
            mtu: iface.mtu,
            dhcp: iface.dhcp.unwrap_or(false),
            addresses: iface.addresses.clone(),
        });
        for r in &iface.routes {
            d.routes.push(RouteSpec {
                link: name.clone(),
                network: r.network.clone(),
                gateway: r.gateway.clone(),
                metric: r.metric,
            });
        }
    }
    if m.network.interfaces.is_empty() {
        d.dhcp_links = links.to_vec();
    } else {
        d.dhcp_links = d
            .links
            .iter()
            .filter(|l| l.dhcp && !l.name.starts_with("selector"))
            .map(|l| l.name.clone())
            .collect();
    }
    if let Some(time) = &m.time
        && !time.disabled
    {
        d.time_servers = time.servers.clone();
    }
    for f in &m.files {
        d.files.push(FileWant {
            path: f.path.clone(),
            content: f.content.clone(),
            mode: f.permissions,
            append: f.op == ros_config::FileOp::Append,
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_mode_runs_dhcp_on_every_link() {
        let links = vec!["eth0".to_string(), "eth1".to_string()];
        assert_eq!(derive(None, &links).dhcp_links, links);
    }
}
