//! A private network for several VMs: a network namespace with a bridge and one tap per VM,
//! so the host's own namespace is never touched.
//!
//! The namespace and bridge are made with `ip` run against that namespace only (`ip -n`).
//! Taps are created by a short-lived thread that joins the namespace (`setns`) and opens
//! `/dev/net/tun`: the tap lives in the namespace, while its file descriptor is handed to a
//! QEMU started in the host's namespace (`-netdev tap,fd=N`). QEMU can so keep a user-mode
//! NIC too, whose forwards to 127.0.0.1 are how the host reaches the VMs. A tap made this
//! way is not persistent: it disappears with the last descriptor, i.e. with its QEMU.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools::HostTool;

pub const IP: HostTool = HostTool {
    command: "ip",
    package: "iproute2",
};

/// Name of the bridge inside every namespace made here.
pub const BRIDGE: &str = "br0";

/// Where `ip netns` keeps its named namespaces.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    let output = IP
        .command()?
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `ip -n NAME ARGS...`: a command that acts inside the namespace only.
fn ip_in(netns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Makes the namespace `name` with `lo` up and a bridge [`BRIDGE`] holding `bridge_cidr`
/// (e.g. `10.5.0.1/24`). Fails if the namespace exists already.
pub fn create(name: &str, bridge_cidr: &str) -> Result<()> {
    validate_name(name)?;
    if exists(name) {
        bail!(
            "network namespace {name} exists already (a cluster of that name is running, or its destroy did not finish)"
        );
    }
    ip(&["netns", "add", name])
        .context("creating a network namespace (needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN)")?;
    let setup = || -> Result<()> {
        ip_in(name, &["link", "set", "lo", "up"])?;
        ip_in(name, &["link", "add", BRIDGE, "type", "bridge"])?;
        ip_in(name, &["addr", "add", bridge_cidr, "dev", BRIDGE])?;
        ip_in(name, &["link", "set", BRIDGE, "up"])
    };
    if let Err(e) = setup() {
        delete(name).ok();
        return Err(e);
    }
    Ok(())
}

/// Removes the namespace (and every link in it). Missing is fine.
pub fn delete(name: &str) -> Result<()> {
    validate_name(name)?;
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "delete", name])
}

/// Namespace names become file names under /run/netns and `ip` arguments.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        bail!("network namespace name {name:?}: use 1-64 letters, digits, '-' or '_'");
    }
    Ok(())
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Creates tap `ifname` inside namespace `netns`, attaches it to the bridge and sets it up.
/// The returned descriptor is the tap; close it and the tap is gone.
pub fn open_tap(netns: &str, ifname: &str) -> Result<OwnedFd> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        bail!("tap name {ifname:?}: 1-15 bytes");
    }
    let name = ifname.to_string();
    let fd = in_namespace(netns, move || create_tap(&name))?;
    ip_in(netns, &["link", "set", ifname, "master", BRIDGE])?;
    ip_in(netns, &["link", "set", ifname, "up"])?;
    Ok(fd)
}

/// Runs `f` on a thread inside namespace `netns` and returns what it made: a socket or a
/// tap opened there stays in that namespace. setns changes only the calling thread, which
/// ends right after, so the rest of the process stays in the host's namespace.
pub fn in_namespace<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(netns_path(netns))
        .with_context(|| format!("opening network namespace {netns}"))?;
    std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("joining the cluster's network namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in namespace {netns} panicked"))?
}

/// TUNSETIFF in the current thread's namespace.
fn create_tap(ifname: &str) -> Result<OwnedFd> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (is the tun module loaded?)")?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: the fd is open, and `req` is a valid ifreq that outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating tap {ifname} (TUNSETIFF)"));
    }
    Ok(OwnedFd::from(tun))
}

/// Runs a command inside the namespace (`ip netns exec`), for tests and diagnostics.
pub fn exec(netns: &str, program: &str, args: &[&str]) -> Result<std::process::Output> {
    let mut cmd: Command = IP.command()?;
    cmd.args(["netns", "exec", netns, program]).args(args);
    cmd.output()
        .with_context(|| format!("ip netns exec {netns} {program}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("ros-demo_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("x y").is_err());
        assert_eq!(netns_path("ros-a"), PathBuf::from("/run/netns/ros-a"));
    }

    /// Needs root and iproute2 (CI runs as root): a real namespace, bridge and tap.
    #[test]
    fn tap_lives_in_the_namespace_on_the_bridge_until_closed() {
        let name = format!("ros-t{}", std::process::id());
        create(&name, "10.77.0.1/24").expect("creating a netns (run the tests as root)");
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                delete(&self.0).ok();
            }
        }
        let _cleanup = Cleanup(name.clone());
        assert!(exists(&name));
        assert!(
            create(&name, "10.77.0.1/24").is_err(),
            "a second create must fail"
        );

        let fd = open_tap(&name, "tap7").unwrap();
        let links = exec(&name, "ip", &["-o", "link", "show", "tap7"]).unwrap();
        let text = String::from_utf8_lossy(&links.stdout);
        assert!(
            links.status.success() && text.contains("master br0"),
            "{text}"
        );
        let addr = exec(&name, "ip", &["-o", "addr", "show", "br0"]).unwrap();
        assert!(String::from_utf8_lossy(&addr.stdout).contains("10.77.0.1/24"));
        // The host's namespace has no such link.
        let host = IP
            .command()
            .unwrap()
            .args(["link", "show", "tap7"])
            .output()
            .unwrap();
        assert!(!host.status.success());

        drop(fd);
        let gone = exec(&name, "ip", &["link", "show", "tap7"]).unwrap();
        assert!(
            !gone.status.success(),
            "the tap must go with its descriptor"
        );
        delete(&name).unwrap();
        assert!(!exists(&name));
    }
}
