//! System effects behind a trait: the real Linux implementation runs on a booted node, the dev
//! implementation records what would have happened (so machined is testable on any host).

mod adjtime;
pub mod debug;
mod dev;
pub mod dhcp;
pub mod disks;
pub mod kmod;
mod linux;
pub mod netlink;
pub mod power;
pub mod sntp;

pub use dev::DevSystem;
pub use linux::LinuxSystem;

use crate::logbuf::LogBuffer;
use serde::{Deserialize, Serialize};

/// A route to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub link: String,
    pub network: String,
    pub gateway: Option<String>,
    pub metric: Option<u32>,
}

/// An address present on a link (what the kernel has, not what the config asks for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAddress {
    pub link: String,
    /// `10.0.2.15/24`.
    pub address: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// `global`, `link` or `host`.
    pub scope: String,
    /// Put there by this node's DHCP client (the current lease).
    pub dhcp: bool,
}

/// A correction of the wall clock by `offset_ns` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAdjustment {
    pub offset_ns: i128,
    /// Jump at once (large offsets); otherwise slew: run slightly fast or slow until corrected.
    pub step: bool,
}

/// The host's real wall clock in nanoseconds since the Unix epoch (read only).
pub fn host_clock_nanos() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    Poweroff,
}

impl PowerAction {
    /// The word sent to init over its control socket.
    pub fn word(self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
        }
    }
}

/// Error of one system effect, naming what failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SystemError {
    pub what: String,
    pub reason: String,
}

impl SystemError {
    pub fn new(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

pub type SysResult = Result<(), SystemError>;

/// Every effect machined has on the machine. Each call is idempotent: calling it again with the
/// same arguments leaves the system as it is.
pub trait System: Send + Sync + 'static {
    /// "dev" or "linux".
    fn kind(&self) -> &'static str;
    fn hostname(&self) -> String;
    fn set_hostname(&self, name: &str) -> SysResult;
    /// Sets the link up with the given MTU (None = leave the MTU alone).
    fn ensure_link(&self, link: &str, mtu: Option<u32>) -> SysResult;
    /// Adds the static addresses `cidrs` to `link` (addresses already there stay).
    fn ensure_addresses(&self, link: &str, cidrs: &[String]) -> SysResult;
    fn ensure_routes(&self, routes: &[RouteSpec]) -> SysResult;
    fn set_resolvers(&self, servers: &[String]) -> SysResult;
    fn set_time_servers(&self, servers: &[String]) -> SysResult;
    /// The wall clock, in nanoseconds since the Unix epoch (the dev system's is simulated).
    fn now_nanos(&self) -> i128;
    /// Corrects the wall clock (time sync) and marks the kernel's clock synchronised.
    fn adjust_clock(&self, adjustment: ClockAdjustment) -> SysResult;
    /// The addresses on the links now (static and DHCP ones).
    fn addresses(&self) -> Result<Vec<LinkAddress>, SystemError>;
    fn set_sysctl(&self, key: &str, value: &str) -> SysResult;
    /// Loads kernel module `name` with `parameters` (`key=value`), after the modules it needs;
    /// a module already loaded or built in is left as it is.
    fn load_kernel_module(&self, name: &str, parameters: &[String]) -> SysResult;
    fn write_file(&self, path: &str, content: &str, mode: u32, append: bool) -> SysResult;
    /// Ethernet links present (where DHCP runs when the config names no interfaces).
    fn ethernet_links(&self) -> Vec<String>;
    /// Starts a DHCPv4 client on `link` unless one runs there already.
    fn start_dhcp(&self, link: &str) -> SysResult;
    /// The DNS servers of the current DHCP leases, by link (in link order).
    fn dhcp_dns(&self) -> Vec<(String, Vec<String>)>;
    fn power(&self, action: PowerAction) -> SysResult;
    /// The kernel log as a buffer that keeps filling (dmesg).
    fn kernel_log(&self) -> LogBuffer;
}
