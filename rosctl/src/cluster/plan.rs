//! What a local cluster will look like, decided before anything starts (pure, so it is unit
//! tested): node names, roles, bridge addresses, MACs, taps, forwarded ports, directories.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The guest's user-mode NIC (eth0, forwards to 127.0.0.1) and the bridge NIC (eth1).
pub const USER_LINK: &str = "eth0";
pub const BRIDGE_LINK: &str = "eth1";
/// Ports on the nodes.
pub const MACHINE_API_PORT: u16 = 50000;
pub const KUBERNETES_API_PORT: u16 = 6443;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub controlplanes: u32,
    pub workers: u32,
    /// The bridge network, `a.b.c.d/len`; the bridge takes the first address, nodes the next.
    pub cidr: String,
    pub state_dir: PathBuf,
}

/// The bridge network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(cidr: &str) -> Result<Self> {
        let bad = || anyhow::anyhow!("--cidr {cidr:?}: expected an IPv4 network like 10.5.0.0/24");
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=29).contains(&prefix) {
            bail!("--cidr {cidr:?}: the prefix length must be 8 to 29");
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    /// Usable node addresses after the bridge's (excluding network and broadcast).
    pub fn node_capacity(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 3
    }

    pub fn bridge_cidr(&self) -> String {
        format!("{}/{}", self.host(1), self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Short name, also the node's directory: `controlplane-1`, `worker-2`.
    pub name: String,
    /// `<cluster>-<name>`.
    pub hostname: String,
    pub role: Role,
    pub address: Ipv4Addr,
    /// MAC of the bridge NIC.
    pub mac: String,
    /// Tap name inside the namespace.
    pub tap: String,
    /// 127.0.0.1 port forwarded to the node's machine API.
    pub api_port: u16,
    /// 127.0.0.1 port forwarded to the Kubernetes API (control planes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_port: Option<u16>,
    pub dir: PathBuf,
}

impl NodePlan {
    pub fn api_target(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub netns: String,
    pub network: Network,
    /// `https://<first control plane>:6443`.
    pub endpoint: String,
    pub state_dir: PathBuf,
    pub nodes: Vec<NodePlan>,
}

/// The namespace a cluster's bridge lives in.
pub fn netns_name(cluster: &str) -> String {
    format!("ros-{cluster}")
}

/// `~/.ros/clusters/<name>`.
pub fn default_state_dir(name: &str) -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("$HOME is not set: pass --state-dir"))?;
    Ok(Path::new(&home).join(".ros/clusters").join(name))
}

/// Plans the cluster; `port` hands out free 127.0.0.1 ports.
pub fn plan(req: &Request, mut port: impl FnMut() -> Result<u16>) -> Result<Plan> {
    if !is_dns_label(&req.name) {
        bail!(
            "--name {:?}: a lowercase DNS label (a-z, 0-9, '-'), at most 40 characters",
            req.name
        );
    }
    if req.controlplanes == 0 {
        bail!("--controlplanes: at least 1");
    }
    let network = Network::parse(&req.cidr)?;
    let count = req.controlplanes + req.workers;
    if count > network.node_capacity() || count > 250 {
        bail!(
            "--controlplanes + --workers = {count}: more nodes than --cidr {} holds (or than 250)",
            req.cidr
        );
    }
    let roles = (0..req.controlplanes)
        .map(|i| (Role::Controlplane, i + 1))
        .chain((0..req.workers).map(|i| (Role::Worker, i + 1)));
    let mut nodes = Vec::new();
    for (index, (role, number)) in roles.enumerate() {
        let name = format!("{}-{number}", role.as_str());
        let address = network.host(2 + index as u32);
        let [_, b, c, d] = address.octets();
        let api_port = port()?;
        let kubernetes_port = match role {
            Role::Controlplane => Some(port()?),
            Role::Worker => None,
        };
        nodes.push(NodePlan {
            hostname: format!("{}-{name}", req.name),
            dir: req.state_dir.join(&name),
            name,
            role,
            address,
            mac: format!("52:54:00:{b:02x}:{c:02x}:{d:02x}"),
            tap: format!("tap{index}"),
            api_port,
            kubernetes_port,
        });
    }
    Ok(Plan {
        name: req.name.clone(),
        netns: netns_name(&req.name),
        endpoint: format!("https://{}:{KUBERNETES_API_PORT}", nodes[0].address),
        network,
        state_dir: req.state_dir.clone(),
        nodes,
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cp: u32, workers: u32) -> Request {
        Request {
            name: "demo".into(),
            controlplanes: cp,
            workers,
            cidr: "10.5.0.0/24".into(),
            state_dir: "/s/demo".into(),
        }
    }

    fn counter() -> impl FnMut() -> Result<u16> {
        let mut next = 40000;
        move || {
            next += 1;
            Ok(next)
        }
    }

    #[test]
    fn nodes_get_addresses_macs_taps_and_ports_in_order() {
        let p = plan(&request(1, 2), counter()).unwrap();
        assert_eq!(p.netns, "ros-demo");
        assert_eq!(p.endpoint, "https://10.5.0.2:6443");
        assert_eq!(p.network.bridge_cidr(), "10.5.0.1/24");
        let names: Vec<_> = p.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["controlplane-1", "worker-1", "worker-2"]);
        let cp = &p.nodes[0];
        assert_eq!(cp.address, Ipv4Addr::new(10, 5, 0, 2));
        assert_eq!(cp.mac, "52:54:00:05:00:02");
        assert_eq!(cp.tap, "tap0");
        assert_eq!((cp.api_port, cp.kubernetes_port), (40001, Some(40002)));
        assert_eq!(cp.hostname, "demo-controlplane-1");
        assert_eq!(cp.dir, PathBuf::from("/s/demo/controlplane-1"));
        let w2 = &p.nodes[2];
        assert_eq!(w2.address, Ipv4Addr::new(10, 5, 0, 4));
        assert_eq!(w2.mac, "52:54:00:05:00:04");
        assert_eq!((w2.api_port, w2.kubernetes_port), (40004, None));
        assert_eq!(w2.api_target(), "127.0.0.1:40004");
    }

    #[test]
    fn network_is_normalised_and_bounded() {
        let n = Network::parse("10.9.3.77/24").unwrap();
        assert_eq!(n.base, Ipv4Addr::new(10, 9, 3, 0));
        assert_eq!(n.node_capacity(), 253);
        assert_eq!(Network::parse("10.0.0.0/29").unwrap().node_capacity(), 5);
        for bad in ["10.5.0.0", "10.5.0.0/31", "x/24", "10.5.0.0/abc"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_requests_name_their_flag() {
        let mut r = request(0, 1);
        assert!(format!("{:#}", plan(&r, counter()).unwrap_err()).contains("--controlplanes"));
        r = request(1, 1);
        r.name = "Bad_Name".into();
        assert!(format!("{:#}", plan(&r, counter()).unwrap_err()).contains("--name"));
        r = request(3, 3);
        r.cidr = "10.0.0.0/29".into();
        assert!(format!("{:#}", plan(&r, counter()).unwrap_err()).contains("--cidr"));
    }
}
