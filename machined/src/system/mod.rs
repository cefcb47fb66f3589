//! System effects behind a trait: the real Linux implementation runs on a booted node, the dev
//! implementation records what would have happened (so machined is testable on any host).

pub mod debug;
mod dev;
pub mod dhcp;
pub mod disks;
mod linux;
pub mod netlink;
pub mod power;

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
    fn set_sysctl(&self, key: &str, value: &str) -> SysResult;
    fn write_file(&self, path: &str, content: &str, mode: u32, append: bool) -> SysResult;
    /// Ethernet links present (where DHCP runs when the config names no interfaces).
    fn ethernet_links(&self) -> Vec<String>;
    /// Starts a DHCPv4 client on `link` unless one runs there already.
    fn start_dhcp(&self, link: &str) -> SysResult;
    fn power(&self, action: PowerAction) -> SysResult;
    /// The kernel log as a buffer that keeps filling (dmesg).
    fn kernel_log(&self) -> LogBuffer;
}
