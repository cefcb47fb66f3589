//! Dev-mode system: records every effect instead of touching the host. The records are readable
//! by tests and appear in the node's kernel log (`rosctl dmesg`) prefixed with `dev:`.

use super::{ClockAdjustment, LinkAddress, PowerAction, RouteSpec, SysResult, System, SystemError};
use crate::logbuf::LogBuffer;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub struct DevSystem {
    hostname: Mutex<String>,
    effects: Mutex<Vec<String>>,
    /// Effect name -> how many more calls fail (fault injection for retry tests).
    failures: Mutex<HashMap<String, u32>>,
    kmsg: LogBuffer,
    /// Addresses "on" each link: what `ensure_addresses` added.
    addresses: Mutex<BTreeMap<String, Vec<String>>>,
    /// The simulated clock's distance from the host's (the host clock is never touched).
    clock_offset_ns: Mutex<i128>,
    /// DNS servers of simulated DHCP leases, by link (there is no real DHCP in dev mode).
    lease_dns: Mutex<BTreeMap<String, Vec<String>>>,
}

impl DevSystem {
    pub fn new(hostname: &str) -> Self {
        let kmsg = LogBuffer::new();
        kmsg.push("dev: machined started with recorded system effects");
        Self {
            hostname: Mutex::new(hostname.to_string()),
            effects: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            kmsg,
            addresses: Mutex::new(BTreeMap::new()),
            clock_offset_ns: Mutex::new(0),
            lease_dns: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every recorded effect, in order.
    pub fn effects(&self) -> Vec<String> {
        self.effects.lock().expect("effects lock").clone()
    }

    /// Simulates a DHCP lease on `link` that names `dns` (empty: the lease is gone).
    pub fn set_lease_dns(&self, link: &str, dns: &[&str]) {
        let mut all = self.lease_dns.lock().expect("lease lock");
        if dns.is_empty() {
            all.remove(link);
        } else {
            all.insert(
                link.to_string(),
                dns.iter().map(|s| s.to_string()).collect(),
            );
        }
    }

    /// Makes the next `times` calls of effect `name` (e.g. "hostname") fail.
    pub fn fail_next(&self, name: &str, times: u32) {
        self.failures
            .lock()
            .expect("failures lock")
            .insert(name.to_string(), times);
    }

    fn record(&self, name: &str, detail: String) -> SysResult {
        {
            let mut failures = self.failures.lock().expect("failures lock");
            if let Some(left) = failures.get_mut(name)
                && *left > 0
            {
                *left -= 1;
                return Err(SystemError::new(name, "injected failure"));
            }
        }
        self.kmsg.push(format!("dev: {detail}"));
        self.effects.lock().expect("effects lock").push(detail);
        Ok(())
    }
}

impl System for DevSystem {
    fn kind(&self) -> &'static str {
        "dev"
    }

    fn hostname(&self) -> String {
        self.hostname.lock().expect("hostname lock").clone()
    }

    fn set_hostname(&self, name: &str) -> SysResult {
        self.record("hostname", format!("hostname {name}"))?;
        *self.hostname.lock().expect("hostname lock") = name.to_string();
        Ok(())
    }

    fn ensure_link(&self, link: &str, mtu: Option<u32>) -> SysResult {
        let mtu = mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
        self.record("link", format!("link {link} up{mtu}"))
    }

    fn ensure_addresses(&self, link: &str, cidrs: &[String]) -> SysResult {
        self.record(
            "addresses",
            format!("addresses {link} [{}]", cidrs.join(", ")),
        )?;
        let mut all = self.addresses.lock().expect("addresses lock");
        let on_link = all.entry(link.to_string()).or_default();
        for cidr in cidrs {
            if !on_link.contains(cidr) {
                on_link.push(cidr.clone());
            }
        }
        Ok(())
    }

    fn ensure_routes(&self, routes: &[RouteSpec]) -> SysResult {
        let list: Vec<String> = routes
            .iter()
            .map(|r| {
                format!(
                    "{} via {} dev {}",
                    r.network,
                    r.gateway.as_deref().unwrap_or("-"),
                    r.link
                )
            })
            .collect();
        self.record("routes", format!("routes [{}]", list.join(", ")))
    }

    fn set_resolvers(&self, servers: &[String]) -> SysResult {
        self.record("resolvers", format!("resolvers [{}]", servers.join(", ")))
    }

    fn set_time_servers(&self, servers: &[String]) -> SysResult {
        self.record(
            "timeservers",
            format!("timeservers [{}]", servers.join(", ")),
        )
    }

    fn now_nanos(&self) -> i128 {
        super::host_clock_nanos() + *self.clock_offset_ns.lock().expect("clock lock")
    }

    fn adjust_clock(&self, adj: ClockAdjustment) -> SysResult {
        let how = if adj.step { "step" } else { "slew" };
        self.record(
            "clock",
            format!("clock {how} {}", super::sntp::format_offset(adj.offset_ns)),
        )?;
        // A slew would take a while; the simulation applies it at once.
        *self.clock_offset_ns.lock().expect("clock lock") += adj.offset_ns;
        Ok(())
    }

    fn addresses(&self) -> Result<Vec<LinkAddress>, SystemError> {
        let all = self.addresses.lock().expect("addresses lock");
        Ok(all
            .iter()
            .flat_map(|(link, cidrs)| {
                cidrs.iter().map(move |cidr| LinkAddress {
                    link: link.clone(),
                    address: cidr.clone(),
                    family: if cidr.contains(':') { "inet6" } else { "inet" }.to_string(),
                    scope: "global".to_string(),
                    dhcp: false,
                })
            })
            .collect())
    }

    fn set_sysctl(&self, key: &str, value: &str) -> SysResult {
        self.record("sysctl", format!("sysctl {key}={value}"))
    }

    fn load_kernel_module(&self, name: &str, parameters: &[String]) -> SysResult {
        self.record(
            "kmod",
            format!("kmod load {name} [{}]", parameters.join(" ")),
        )
    }

    fn write_file(&self, path: &str, content: &str, mode: u32, append: bool) -> SysResult {
        let op = if append { "append" } else { "write" };
        self.record(
            "file",
            format!("file {op} {path} mode {mode:o} ({} bytes)", content.len()),
        )
    }

    fn ethernet_links(&self) -> Vec<String> {
        vec!["eth0".to_string()]
    }

    fn start_dhcp(&self, link: &str) -> SysResult {
        if self.effects().iter().any(|e| e == &format!("dhcp {link}")) {
            return Ok(());
        }
        self.record("dhcp", format!("dhcp {link}"))
    }

    fn dhcp_dns(&self) -> Vec<(String, Vec<String>)> {
        let all = self.lease_dns.lock().expect("lease lock");
        all.iter().map(|(l, d)| (l.clone(), d.clone())).collect()
    }

    fn power(&self, action: PowerAction) -> SysResult {
        self.record("power", format!("power {}", action.word()))
    }

    fn kernel_log(&self) -> LogBuffer {
        self.kmsg.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_effects_and_injects_failures() {
        let sys = DevSystem::new("h");
        sys.fail_next("hostname", 1);
        assert!(sys.set_hostname("a").is_err());
        sys.set_hostname("a").unwrap();
        assert_eq!(sys.hostname(), "a");
        assert_eq!(sys.effects(), vec!["hostname a"]);
        sys.ensure_addresses("eth0", &["10.0.0.2/24".into()])
            .unwrap();
        sys.ensure_addresses("eth0", &["10.0.0.2/24".into()])
            .unwrap();
        let addrs = sys.addresses().unwrap();
        assert_eq!(addrs.len(), 1);
        assert_eq!(
            (addrs[0].link.as_str(), addrs[0].address.as_str()),
            ("eth0", "10.0.0.2/24")
        );
        assert!(
            sys.kernel_log()
                .lines()
                .iter()
                .any(|l| l == "dev: hostname a")
        );
    }

    #[test]
    fn clock_adjustments_move_only_the_simulated_clock() {
        let sys = DevSystem::new("h");
        let host_before = super::super::host_clock_nanos();
        sys.adjust_clock(ClockAdjustment {
            offset_ns: 3_600_000_000_000,
            step: true,
        })
        .unwrap();
        let host_after = super::super::host_clock_nanos();
        let simulated = sys.now_nanos();
        assert!(simulated >= host_before + 3_600_000_000_000);
        // The host clock did not move by an hour.
        assert!(host_after - host_before < 3_600_000_000_000);
        assert_eq!(sys.effects(), vec!["clock step +3600.000s"]);
    }
}
