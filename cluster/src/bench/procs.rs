//! Processes a bench starts (each in its own process group, so a Ctrl-C at the terminal
//! reaches only the bench, which then stops them in order), their memory, and the cleanup of
//! what they may leave behind: orphaned processes and mounts under the bench's directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A child process, stopped (SIGTERM, then SIGKILL after a grace period) and reaped on drop.
pub struct Process {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
    grace: Duration,
}

impl Process {
    /// Starts `command` with stdout discarded and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path, grace: Duration) -> Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            child: Some(child),
            name: name.to_string(),
            log: log.to_path_buf(),
            grace,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Err with the exit status and the log's tail if the process has ended.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            anyhow::bail!("{} exited ({status}):\n{}", self.name, self.log_tail(30));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, up to the grace period for it to exit, then SIGKILL; reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal(child.id(), nix::libc::SIGTERM);
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: nix::libc::c_int) {
    // SAFETY: kill(2) with a PID this bench found or started; no memory is touched.
    unsafe {
        nix::libc::kill(pid as nix::libc::pid_t, sig);
    }
}

/// A `VmRSS:`-style field of /proc/PID/status, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// PIDs of processes whose command line contains `needle` (e.g. a socket path only our
/// containerd's shims are given), with their parent PIDs.
pub fn find_by_cmdline(needle: &str) -> Vec<(u32, u32)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            found.push((pid, parent_of(pid).unwrap_or(0)));
        }
    }
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Children of `pid` (from every process's parent PID).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

/// SIGKILLs `pid` and everything below it, children first.
pub fn kill_tree(pid: u32) {
    // Freeze the parent first so it starts nothing new while its children go.
    signal(pid, nix::libc::SIGSTOP);
    for child in children_of(pid) {
        kill_tree(child);
    }
    signal(pid, nix::libc::SIGKILL);
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo; octal escapes
/// such as `\040` decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts every mount at or below `dir` (deepest first); returns what stayed.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return mounts;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\04"), "/end\\04");
    }

    #[test]
    fn our_own_status_has_a_resident_size() {
        let rss = status_bytes(std::process::id(), "VmRSS").expect("VmRSS of this process");
        assert!(rss > 0);
        // SAFETY: getppid(2) cannot fail.
        let ppid = unsafe { nix::libc::getppid() } as u32;
        assert_eq!(parent_of(std::process::id()), Some(ppid));
    }
}
