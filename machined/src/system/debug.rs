//! A debug-only way to kill machined from outside, so the e2e suite can check that init
//! restarts it (the image has no shell to send a signal from). `rosctl service machined
//! restart` by an `os:admin` client makes machined SIGKILL itself — only on a node booted
//! with `ros.debug` on the kernel command line, never in dev mode. Otherwise the call is
//! refused like any unknown service.

use crate::intake::Cmdline;

/// The kernel command-line flag that enables this.
pub const DEBUG_FLAG: &str = "ros.debug";

/// The service id that names machined itself.
pub const SELF_ID: &str = "machined";

/// Whether a restart of `id` should make machined kill itself.
pub fn self_kill_allowed(id: &str, dev: bool, admin: bool, cmdline: &Cmdline) -> bool {
    id == SELF_ID && !dev && admin && cmdline.has(DEBUG_FLAG)
}

/// Kills machined with SIGKILL after `delay`, long enough for the API reply to leave.
pub fn kill_self_after(delay: std::time::Duration) {
    tracing::warn!("ros.debug: machined kills itself with SIGKILL (service machined restart)");
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_admin_on_a_debug_node_may_kill_machined() {
        let debug = Cmdline::parse("console=ttyS0 ros.platform=qemu ros.debug");
        let plain = Cmdline::parse("console=ttyS0 ros.platform=qemu");
        assert!(self_kill_allowed("machined", false, true, &debug));
        assert!(!self_kill_allowed("machined", false, true, &plain));
        assert!(!self_kill_allowed("machined", true, true, &debug));
        assert!(!self_kill_allowed("machined", false, false, &debug));
        assert!(!self_kill_allowed("containerd", false, true, &debug));
    }
}
