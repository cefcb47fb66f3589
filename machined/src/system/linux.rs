//! Real system effects on a booted node (used only outside dev mode, i.e. inside the image).

use super::{
    ClockAdjustment, LinkAddress, PowerAction, RouteSpec, SysResult, System, SystemError, dhcp,
    kmod, netlink, power,
};
use crate::logbuf::LogBuffer;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Where resolv.conf and the NTP server list are written (/etc is read-only in the image; the
/// image links /etc/resolv.conf here).
const RUN_DIR: &str = "/run/ros";

pub struct LinuxSystem {
    init_socket: PathBuf,
    kmsg: LogBuffer,
    dhcp_links: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Link -> the address of its current DHCP lease.
    leases: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// Link -> the DNS servers of its current DHCP lease.
    lease_dns: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>>,
    /// The config names DNS servers: they win over those of DHCP leases.
    static_resolvers: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LinuxSystem {
    pub fn new(init_socket: PathBuf) -> Self {
        let kmsg = LogBuffer::new();
        let sink = kmsg.clone();
        // /dev/kmsg yields one record per read; a blocking thread keeps the buffer filled.
        std::thread::Builder::new()
            .name("kmsg".into())
            .spawn(move || {
                let Ok(file) = std::fs::File::open("/dev/kmsg") else {
                    sink.push("machined: cannot open /dev/kmsg");
                    return;
                };
                for record in BufReader::new(file).lines() {
                    match record {
                        Ok(line) => sink.push(format_kmsg(&line)),
                        // EPIPE means records were overwritten before we read them; keep going.
                        Err(e) if e.raw_os_error() == Some(32) => continue,
                        Err(_) => break,
                    }
                }
            })
            .ok();
        Self {
            init_socket,
            kmsg,
            dhcp_links: Default::default(),
            leases: Default::default(),
            lease_dns: Default::default(),
            static_resolvers: Default::default(),
        }
    }
}

/// `6,339,5140900,-;text` -> `[    5.140900] text`.
fn format_kmsg(record: &str) -> String {
    let Some((prefix, text)) = record.split_once(';') else {
        return record.to_string();
    };
    let micros: u64 = prefix
        .split(',')
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    format!(
        "[{:5}.{:06}] {text}",
        micros / 1_000_000,
        micros % 1_000_000
    )
}

fn write_atomic(path: &str, content: &str) -> SysResult {
    ros_config::atomic_write(path, content.as_bytes()).map_err(|e| SystemError::new(path, e))
}

impl System for LinuxSystem {
    fn kind(&self) -> &'static str {
        "linux"
    }

    fn hostname(&self) -> String {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn set_hostname(&self, name: &str) -> SysResult {
        if self.hostname() == name {
            return Ok(());
        }
        nix::unistd::sethostname(name).map_err(|e| SystemError::new("hostname", e))
    }

    fn ensure_link(&self, link: &str, mtu: Option<u32>) -> SysResult {
        netlink::link_up(link, mtu)
    }

    fn ensure_addresses(&self, link: &str, cidrs: &[String]) -> SysResult {
        netlink::add_addresses(link, cidrs)
    }

    fn ensure_routes(&self, routes: &[RouteSpec]) -> SysResult {
        netlink::add_routes(routes)
    }

    fn set_resolvers(&self, servers: &[String]) -> SysResult {
        self.static_resolvers
            .store(!servers.is_empty(), std::sync::atomic::Ordering::Relaxed);
        let mut text = String::new();
        for s in servers {
            text.push_str(&format!("nameserver {s}\n"));
        }
        std::fs::create_dir_all(RUN_DIR).map_err(|e| SystemError::new(RUN_DIR, e))?;
        write_atomic(&format!("{RUN_DIR}/resolv.conf"), &text)
    }

    fn set_time_servers(&self, servers: &[String]) -> SysResult {
        std::fs::create_dir_all(RUN_DIR).map_err(|e| SystemError::new(RUN_DIR, e))?;
        write_atomic(
            &format!("{RUN_DIR}/timeservers"),
            &(servers.join("\n") + "\n"),
        )
    }

    fn now_nanos(&self) -> i128 {
        super::host_clock_nanos()
    }

    fn adjust_clock(&self, adj: ClockAdjustment) -> SysResult {
        super::adjtime::adjust(adj).map_err(|e| SystemError::new("clock", e))
    }

    fn addresses(&self) -> Result<Vec<LinkAddress>, SystemError> {
        let leases = self.leases.lock().expect("leases lock").clone();
        Ok(netlink::list_addresses()?
            .into_iter()
            .map(|(link, address, v6, scope)| LinkAddress {
                dhcp: leases.get(&link) == Some(&address),
                link,
                address,
                family: if v6 { "inet6" } else { "inet" }.to_string(),
                scope,
            })
            .collect())
    }

    fn set_sysctl(&self, key: &str, value: &str) -> SysResult {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| SystemError::new(format!("sysctl {key}"), e))
    }

    fn load_kernel_module(&self, name: &str, parameters: &[String]) -> SysResult {
        let what = format!("kernel module {name}");
        let release = nix::sys::utsname::uname()
            .map_err(|e| SystemError::new(&what, format!("uname: {e}")))?;
        let dir = std::path::Path::new("/lib/modules").join(release.release());
        let tree = kmod::ModuleTree::open(&dir).map_err(|e| SystemError::new(&what, e))?;
        let loaded = std::fs::read_to_string("/proc/modules")
            .map(|t| kmod::loaded_modules(&t))
            .map_err(|e| SystemError::new(&what, format!("reading /proc/modules: {e}")))?;
        let wanted = kmod::module_name(name);
        for (module, path) in tree
            .load_order(name, &loaded)
            .map_err(|e| SystemError::new(&what, e))?
        {
            // Parameters belong to the configured module, not to its dependencies.
            let params = if module == wanted {
                parameters.join(" ")
            } else {
                String::new()
            };
            kmod::finit_module(&path, &params)
                .map_err(|e| SystemError::new(&what, format!("loading {}: {e}", path.display())))?;
        }
        Ok(())
    }

    fn write_file(&self, path: &str, content: &str, mode: u32, append: bool) -> SysResult {
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(parent).map_err(|e| SystemError::new(path, e))?;
        }
        if append {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(mode)
                .open(path)
                .map_err(|e| SystemError::new(path, e))?;
            return file
                .write_all(content.as_bytes())
                .map_err(|e| SystemError::new(path, e));
        }
        write_atomic(path, content)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| SystemError::new(path, e))
    }

    fn ethernet_links(&self) -> Vec<String> {
        netlink::ethernet_links().unwrap_or_default()
    }

    fn start_dhcp(&self, link: &str) -> SysResult {
        if !self
            .dhcp_links
            .lock()
            .expect("dhcp lock")
            .insert(link.to_string())
        {
            return Ok(());
        }
        let link = link.to_string();
        let leases = self.leases.clone();
        let lease_dns = self.lease_dns.clone();
        let static_resolvers = self.static_resolvers.clone();
        let started = std::thread::Builder::new()
            .name(format!("dhcp-{link}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let lease_link = link.clone();
                rt.block_on(dhcp::run(
                    link,
                    |m| tracing::info!("{m}"),
                    move |lease| {
                        let mut all = leases.lock().expect("leases lock");
                        let mut dns = lease_dns.lock().expect("lease dns lock");
                        let Some(lease) = lease else {
                            all.remove(&lease_link);
                            dns.remove(&lease_link);
                            return;
                        };
                        all.insert(lease_link.clone(), lease.cidr());
                        dns.insert(
                            lease_link.clone(),
                            lease.dns.iter().map(|d| d.to_string()).collect(),
                        );
                        drop(all);
                        drop(dns);
                        if lease.dns.is_empty()
                            || static_resolvers.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            return;
                        }
                        let servers: Vec<String> =
                            lease.dns.iter().map(|d| d.to_string()).collect();
                        let text: String = servers
                            .iter()
                            .map(|s| format!("nameserver {s}\n"))
                            .collect();
                        let _ = std::fs::create_dir_all(RUN_DIR);
                        if let Err(e) = ros_config::atomic_write(
                            format!("{RUN_DIR}/resolv.conf"),
                            text.as_bytes(),
                        ) {
                            tracing::warn!("resolv.conf from DHCP: {e}");
                        }
                    },
                ));
            });
        started.map(|_| ()).map_err(|e| SystemError::new("dhcp", e))
    }

    fn dhcp_dns(&self) -> Vec<(String, Vec<String>)> {
        let all = self.lease_dns.lock().expect("lease dns lock");
        all.iter().map(|(l, d)| (l.clone(), d.clone())).collect()
    }

    fn power(&self, action: PowerAction) -> SysResult {
        power::request(&self.init_socket, action.word()).map_err(|e| SystemError::new("power", e))
    }

    fn kernel_log(&self) -> LogBuffer {
        self.kmsg.clone()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kmsg_records_get_a_timestamp() {
        assert_eq!(
            super::format_kmsg("6,339,5140900,-;hello"),
            "[    5.140900] hello"
        );
    }
}
