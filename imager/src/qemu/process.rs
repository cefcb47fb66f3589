//! A detached QEMU known only by its PID file: is it still that QEMU, and stopping it.
//!
//! A PID can be reused after its process ends, so every check reads /proc/PID/cmdline and
//! requires both a QEMU binary and this VM's QMP socket path in it before believing the PID.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Reads a PID file (a decimal number); `None` when missing or not a number.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The process's arguments, or `None` when it is gone (a zombie has none either).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `args` is a QEMU whose QMP socket is `qmp_socket` (i.e. the VM we started).
pub fn is_our_qemu(args: &[String], qmp_socket: &Path) -> bool {
    let is_qemu = args.first().is_some_and(|a| {
        Path::new(a)
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("qemu-system"))
    });
    let socket = qmp_socket.display().to_string();
    is_qemu && args.iter().any(|a| a.contains(&socket))
}

/// Whether `pid` is still the QEMU of the VM whose QMP socket is `qmp_socket`.
pub fn is_running(pid: u32, qmp_socket: &Path) -> bool {
    cmdline(pid).is_some_and(|args| is_our_qemu(&args, qmp_socket))
}

/// Stops the VM: SIGTERM (QEMU exits cleanly), then SIGKILL after `grace`. Returns whether
/// it was running. A PID that is no longer that QEMU is left alone.
pub fn stop(pid: u32, qmp_socket: &Path, grace: Duration) -> Result<bool> {
    if !is_running(pid, qmp_socket) {
        return Ok(false);
    }
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGTERM).with_context(|| format!("SIGTERM to QEMU PID {pid}"))?;
    let deadline = Instant::now() + grace;
    while is_running(pid, qmp_socket) {
        if Instant::now() > deadline {
            kill(target, Signal::SIGKILL).with_context(|| format!("SIGKILL to QEMU PID {pid}"))?;
            let hard = Instant::now() + Duration::from_secs(5);
            while is_running(pid, qmp_socket) && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_the_vms_own_qemu() {
        let sock = Path::new("/s/cp-1/qmp.sock");
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_our_qemu(
            &args(&[
                "/usr/bin/qemu-system-x86_64",
                "-qmp",
                "unix:/s/cp-1/qmp.sock,server=on,wait=off"
            ]),
            sock
        ));
        assert!(!is_our_qemu(
            &args(&[
                "/usr/bin/qemu-system-x86_64",
                "-qmp",
                "unix:/s/w-1/qmp.sock"
            ]),
            sock
        ));
        assert!(!is_our_qemu(
            &args(&["/bin/sleep", "/s/cp-1/qmp.sock"]),
            sock
        ));
        assert!(!is_our_qemu(&[], sock));
    }

    #[test]
    fn our_own_process_is_not_a_qemu() {
        let me = std::process::id();
        assert!(cmdline(me).is_some());
        assert!(!is_running(me, Path::new("/nowhere/qmp.sock")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qemu.pid");
        std::fs::write(&file, "123\n").unwrap();
        assert_eq!(read_pid_file(&file), Some(123));
        std::fs::write(&file, "x").unwrap();
        assert_eq!(read_pid_file(&file), None);
    }
}
