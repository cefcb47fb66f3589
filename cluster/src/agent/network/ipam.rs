//! Pod IP allocation from the node's pod CIDR. The allocations (IP -> pod UID) live in one
//! JSON file under the agent root, rewritten atomically on every change, so they survive an
//! agent restart and an IP is never handed out twice.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct State {
    /// The pod CIDR the allocations were made from.
    cidr: Option<String>,
    /// IP -> owner (pod UID).
    allocations: BTreeMap<Ipv4Addr, String>,
}

pub struct Ipam {
    path: PathBuf,
    cidr: Ipv4Net,
    state: State,
}

/// The bridge's address: the first host address of the pod CIDR.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

impl Ipam {
    /// Loads the allocations at `path` (none when the file is missing). Allocations made
    /// from another CIDR (the node got a new pod CIDR) are dropped.
    pub fn load(path: &Path, cidr: Ipv4Net) -> Result<Ipam> {
        if cidr.prefix_len() > 30 {
            bail!("pod CIDR {cidr}: too small for a gateway and pods (need /30 or larger)");
        }
        let mut state: State = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("IP allocations {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if state.cidr != Some(cidr.to_string()) {
            if !state.allocations.is_empty() {
                tracing::warn!(old = ?state.cidr, new = %cidr, "pod CIDR changed; dropping old IP allocations");
            }
            state = State {
                cidr: Some(cidr.to_string()),
                allocations: BTreeMap::new(),
            };
        }
        Ok(Ipam {
            path: path.to_path_buf(),
            cidr,
            state,
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The IP of `owner`, allocating the lowest free one if it has none yet.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.get(owner) {
            return Ok(ip);
        }
        let gw = gateway(self.cidr);
        let broadcast = self.cidr.broadcast();
        let ip = self
            .cidr
            .hosts()
            .find(|ip| *ip != gw && *ip != broadcast && !self.state.allocations.contains_key(ip))
            .with_context(|| format!("pod CIDR {}: no free IP left", self.cidr))?;
        self.state.allocations.insert(ip, owner.to_string());
        self.save()?;
        Ok(ip)
    }

    /// Frees the IP of `owner`; returns it (None when it had none).
    pub fn release(&mut self, owner: &str) -> Result<Option<Ipv4Addr>> {
        let Some(ip) = self.get(owner) else {
            return Ok(None);
        };
        self.state.allocations.remove(&ip);
        self.save()?;
        Ok(Some(ip))
    }

    pub fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.state
            .allocations
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    pub fn owners(&self) -> Vec<String> {
        self.state.allocations.values().cloned().collect()
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.state)?;
        ros_config::atomic_write(&self.path, &bytes)
            .with_context(|| format!("writing IP allocations {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_skipping_gateway_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::load(&path, cidr("10.244.1.0/24")).unwrap();
        assert_eq!(
            gateway(ipam.cidr()),
            "10.244.1.1".parse::<Ipv4Addr>().unwrap()
        );
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(a.to_string(), "10.244.1.2");
        assert_eq!(b.to_string(), "10.244.1.3");
        assert_eq!(ipam.allocate("a").unwrap(), a, "same owner, same IP");
    }

    #[test]
    fn released_ips_are_reused_and_state_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::load(&path, cidr("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_eq!(ipam.release("a").unwrap(), Some(a));
        assert_eq!(ipam.release("a").unwrap(), None);
        let mut again = Ipam::load(&path, cidr("10.244.1.0/24")).unwrap();
        assert_eq!(again.get("b"), Some(b), "allocation persisted");
        assert_eq!(again.get("a"), None, "release persisted");
        assert_eq!(again.allocate("c").unwrap(), a, "freed IP is reused");
        assert_eq!(again.owners(), ["c", "b"]);
    }

    #[test]
    fn exhaustion_and_cidr_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        // /30: network, gateway, one pod, broadcast.
        let mut ipam = Ipam::load(&path, cidr("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap().to_string(), "10.0.0.2");
        let err = ipam.allocate("b").unwrap_err().to_string();
        assert!(err.contains("no free IP"), "{err}");
        let moved = Ipam::load(&path, cidr("10.0.1.0/24")).unwrap();
        assert_eq!(moved.get("a"), None, "allocations of the old CIDR dropped");
        assert!(Ipam::load(&path, cidr("10.0.0.0/31")).is_err());
        std::fs::write(&path, "not json").unwrap();
        let err = format!(
            "{:#}",
            Ipam::load(&path, cidr("10.0.0.0/24")).err().unwrap()
        );
        assert!(err.contains("ipam.json"), "{err}");
    }
}
