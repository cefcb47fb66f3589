//! KVM or TCG: KVM only when a short probe boot under it actually reaches the kernel's end
//! (nested KVM can exist as /dev/kvm and still hang), TCG otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tools::QEMU_SYSTEM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }

    /// The QEMU arguments for this accelerator.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"].map(String::from).to_vec(),
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"].map(String::from).to_vec(),
        }
    }
}

/// How long a probe boot may take before KVM is declared unusable. A working KVM reaches the
/// kernel's "no root" panic in about a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `ROS_QEMU_ACCEL=kvm|tcg` decides without probing.
pub const ENV_OVERRIDE: &str = "ROS_QEMU_ACCEL";

static DETECTED: OnceLock<Accel> = OnceLock::new();

/// Probes once per process (and once per `cache` file, when given, across processes).
pub fn detect(kernel: &Path, cache: Option<&Path>) -> Accel {
    *DETECTED.get_or_init(|| {
        if let Some(accel) = std::env::var(ENV_OVERRIDE)
            .ok()
            .as_deref()
            .and_then(Accel::parse)
        {
            return accel;
        }
        if let Some(accel) = cache
            .and_then(|c| std::fs::read_to_string(c).ok())
            .as_deref()
            .and_then(Accel::parse)
        {
            return accel;
        }
        let accel = if kvm_boots(kernel) {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        if let Some(cache) = cache {
            if let Some(parent) = cache.parent() {
                std::fs::create_dir_all(parent).ok();
            }
            std::fs::write(cache, accel.as_str()).ok();
        }
        accel
    })
}

/// Boots `kernel` without an initramfs under KVM: it must panic for want of a root (and so,
/// with -no-reboot, make QEMU exit) within the timeout.
pub fn kvm_boots(kernel: &Path) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let Ok(qemu) = QEMU_SYSTEM.find() else {
        return false;
    };
    let dir = std::env::temp_dir().join(format!("ros-kvm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let console: PathBuf = dir.join("console.log");
    let child = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-no-reboot",
            "-nographic",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let started = Instant::now();
    let ok = loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                break std::fs::read_to_string(&console).is_ok_and(|c| c.contains("Kernel panic"));
            }
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                child.kill().ok();
                child.wait().ok();
                break false;
            }
        }
    };
    std::fs::remove_dir_all(&dir).ok();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_override_values() {
        assert_eq!(Accel::parse("kvm\n"), Some(Accel::Kvm));
        assert_eq!(Accel::parse("tcg"), Some(Accel::Tcg));
        assert_eq!(Accel::parse("hvf"), None);
        assert!(Accel::Tcg.qemu_args().contains(&"tcg".to_string()));
    }
}
