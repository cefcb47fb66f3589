//! What a test's containerd leaves behind when it goes: shims (they outlive containerd by
//! design), the container processes under them, and the rootfs mounts below its state dir.
//! Everything here is found by PID or by path under the guard's own directory, never by name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (parent PID, state letter) from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(i32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` runs (exists and is not a zombie waiting for its reaper).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

/// The shims serving the containerd at `socket`: processes started with
/// `-address <socket>` (how containerd starts a runtime v2 shim), plus the PIDs in the
/// `shim.pid` files of its task bundles when they name such a process.
pub fn shims(socket: &Path, state_dir: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    let serves_us = |pid: i32| {
        let args = cmdline(pid);
        args.windows(2)
            .any(|w| w[0] == "-address" && w[1] == socket.as_ref())
            || args.iter().any(|a| *a == format!("-address={socket}"))
    };
    let mut pids: Vec<i32> = proc_pids().into_iter().filter(|p| serves_us(*p)).collect();
    for bundle in task_bundles(state_dir) {
        if let Some(pid) = std::fs::read_to_string(bundle.join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            && serves_us(pid)
            && !pids.contains(&pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// `<state>/io.containerd.runtime.v2.task/<namespace>/<id>` directories.
fn task_bundles(state_dir: &Path) -> Vec<PathBuf> {
    let root = state_dir.join("io.containerd.runtime.v2.task");
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default()
    };
    dirs(&root).iter().flat_map(|ns| dirs(ns)).collect()
}

/// Every descendant of `roots` (children first found by parent PID, transitively).
fn descendants(roots: &[i32]) -> Vec<i32> {
    let all: Vec<(i32, i32)> = proc_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat(p)?.0)))
        .collect();
    let mut out: Vec<i32> = Vec::new();
    let mut frontier: Vec<i32> = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for (pid, _) in all.iter().filter(|(_, pp)| *pp == parent) {
            if !out.contains(pid) && !roots.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// SIGKILL to each PID (by number, through kill(1)), then waits up to `within` for them to
/// be gone; the ones still alive.
fn kill_all(pids: &[i32], within: Duration) -> Vec<i32> {
    if pids.is_empty() {
        return Vec::new();
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(|p| p.to_string()))
        .stderr(std::process::Stdio::null())
        .status();
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the shims of the containerd at `socket` and the processes under them (the
/// containers first, so none is re-parented and missed). The PIDs it killed, and those
/// that would not die.
pub fn kill_shims(socket: &Path, state_dir: &Path) -> (Vec<i32>, Vec<i32>) {
    let shims = shims(socket, state_dir);
    let mut all = descendants(&shims);
    let mut stuck = kill_all(&all, Duration::from_secs(5));
    stuck.extend(kill_all(&shims, Duration::from_secs(5)));
    all.extend(shims);
    (all, stuck)
}

/// runc keeps a container's state outside containerd's dirs (`/run/containerd/runc/<ns>/<id>`
/// unless the task's options name another root): deletes (`--force`, which also kills the
/// container and removes its cgroup) the runc containers of this containerd's task bundles,
/// by their IDs. The IDs it could not delete.
pub fn runc_delete(state_dir: &Path) -> Vec<String> {
    let mut failed = Vec::new();
    for bundle in task_bundles(state_dir) {
        let (Some(id), Some(ns)) = (
            bundle.file_name().and_then(|n| n.to_str()),
            bundle
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let options: serde_json::Value = std::fs::read(bundle.join("options.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let base = options["root"]
            .as_str()
            .unwrap_or("/run/containerd/runc")
            .to_string();
        let root = Path::new(&base).join(ns);
        if !root.join(id).exists() {
            continue;
        }
        let ok = std::process::Command::new("/usr/sbin/runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            failed.push(id.to_string());
        }
    }
    failed
}

// Mount discovery and lazy unmounting are the benchmarks' code too: one copy in the crate.
pub use cluster::bench::procs::{mounts_under, unmount_all_under as unmount_under};
