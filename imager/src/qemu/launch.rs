//! Starting QEMU from a [`VmSpec`]: checks its inputs, hands it its tap descriptors, and either
//! keeps it as a child ([`super::Vm`]) or detaches it into its own session so it outlives the
//! caller ([`start_detached`], used by `rosctl cluster create`).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::netns;
use super::vm::{BootSource, FIRST_TAP_FD, OVMF, VmSpec};
use crate::tools::QEMU_SYSTEM;

/// Name of the PID file QEMU's PID is written to, in the VM's state dir.
pub const PID_FILE: &str = "qemu.pid";

/// Starts QEMU for `spec`. With `detached`, QEMU gets its own session (setsid), so it keeps
/// running when the caller exits; the returned child is then only used to notice an early exit.
pub fn spawn(spec: &VmSpec, detached: bool) -> Result<Child> {
    let qemu = QEMU_SYSTEM.find()?;
    check_inputs(spec)?;
    std::fs::remove_file(spec.qmp_path()).ok();
    std::fs::write(spec.console_path(), b"").context("creating the console log")?;
    let log = File::create(spec.state_dir.join("qemu.log"))?;
    // Taps are opened inside their namespace and moved to high descriptor numbers first, so
    // the dup2 to 3, 4, ... in the child cannot overwrite one not yet moved.
    let mut high: Vec<OwnedFd> = Vec::new();
    for tap in &spec.taps {
        let fd = netns::open_tap(&tap.netns, &tap.ifname)
            .with_context(|| format!("VM {}: tap {}", spec.name, tap.ifname))?;
        let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
            .context("moving a tap descriptor")?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        high.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(moved) });
    }
    let raw: Vec<i32> = high.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(qemu);
    cmd.args(spec.qemu_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls (setsid, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if detached && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (index, fd) in raw.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(*fd, FIRST_TAP_FD + index as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting qemu-system-x86_64")?;
    drop(high);
    std::fs::write(spec.state_dir.join(PID_FILE), child.id().to_string())
        .context("writing qemu.pid")?;
    Ok(child)
}

/// Starts QEMU detached and waits for its QMP socket; returns its PID. The VM runs on after
/// this process exits; stop it by PID ([`super::process`]).
pub fn start_detached(spec: &VmSpec) -> Result<u32> {
    let mut child = spawn(spec, true)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !spec.qmp_path().exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "VM {}: QEMU exited at start ({status}): {}",
                spec.name,
                std::fs::read_to_string(spec.state_dir.join("qemu.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            bail!("VM {}: QEMU made no QMP socket within 20 s", spec.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.id())
}

fn check_inputs(spec: &VmSpec) -> Result<()> {
    std::fs::create_dir_all(&spec.state_dir)
        .with_context(|| format!("creating VM state dir {}", spec.state_dir.display()))?;
    if spec.qmp_path().as_os_str().len() > 107 {
        bail!(
            "VM state dir {} is too long for a Unix socket path",
            spec.state_dir.display()
        );
    }
    let inputs = match &spec.boot {
        BootSource::Direct { kernel, initramfs } => vec![kernel.clone(), initramfs.clone()],
        BootSource::UefiDisk { image, .. } => vec![image.clone()],
        BootSource::Cdrom { iso, .. } => vec![iso.clone()],
    };
    let uefi = matches!(
        spec.boot,
        BootSource::UefiDisk { .. } | BootSource::Cdrom { uefi: true, .. }
    );
    if uefi && !Path::new(OVMF).is_file() {
        bail!(
            "UEFI firmware {OVMF} is missing: install the Debian package `ovmf` (apt-get install ovmf)"
        );
    }
    for path in inputs {
        if !path.is_file() {
            bail!("VM {}: {} is not a file", spec.name, path.display());
        }
    }
    Ok(())
}
