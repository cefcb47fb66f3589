//! A private containerd for a bench: its own root, state and socket under the bench's
//! directory, `ctr` against it, and a shutdown that leaves nothing behind: tasks killed and
//! deleted, containers (and their snapshots) removed, containerd stopped by PID, any shim
//! still running for this socket killed with what runs under it, rootfs mounts unmounted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::procs::{self, Process};

pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const CTR: &str = "/usr/bin/ctr";
const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const RUNC: &str = "/usr/sbin/runc";

pub struct Containerd {
    process: Option<Process>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub namespace: String,
}

/// Fails naming the Debian package when a tool is missing.
pub fn need(tool: &str, package: &str) -> Result<()> {
    anyhow::ensure!(
        Path::new(tool).exists(),
        "{tool} is missing (Debian package {package})"
    );
    Ok(())
}

impl Containerd {
    /// Starts containerd with everything under `dir` and waits until it answers.
    pub fn start(dir: &Path, namespace: &str) -> Result<Containerd> {
        need(CONTAINERD, "containerd")?;
        need(CTR, "containerd")?;
        need(SHIM, "containerd")?;
        need(RUNC, "runc")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut command = Command::new(CONTAINERD);
        command.arg("--config").arg(&config_path);
        let process = Process::spawn(
            "containerd",
            command,
            &dir.join("containerd.log"),
            Duration::from_secs(10),
        )?;
        let mut c = Containerd {
            process: Some(process),
            dir: dir.to_path_buf(),
            socket,
            namespace: namespace.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.ctr_ok(&["version"]).is_err() {
            if let Some(p) = c.process.as_mut() {
                p.check_alive()?;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 30 s",
                c.socket.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Process::pid).unwrap_or(0)
    }

    /// `ctr --address <socket> --namespace <namespace>`, ready for more arguments.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(CTR);
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", &self.namespace]);
        c
    }

    /// Runs `ctr args`; its stdout when it succeeds, else an error with its stderr.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .ctr()
            .args(args)
            .output()
            .with_context(|| format!("running {CTR}"))?;
        anyhow::ensure!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Non-empty trimmed lines of `ctr args` (e.g. `containers ls -q`).
    pub fn ctr_lines(&self, args: &[&str]) -> Result<Vec<String>> {
        Ok(self
            .ctr_ok(args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Imports an OCI archive, unpacked for the overlayfs snapshotter.
    pub fn import(&self, archive: &Path) -> Result<()> {
        let path = archive
            .to_str()
            .context("the image archive path is not UTF-8")?;
        self.ctr_ok(&["images", "import", "--snapshotter", "overlayfs", path])
            .map(|_| ())
    }

    /// Kills and deletes every task, then removes every container (with its snapshot).
    pub fn remove_all(&self) -> Result<()> {
        for id in self.ctr_lines(&["tasks", "ls", "-q"])? {
            let _ = self.ctr_ok(&["tasks", "kill", "--all", "--signal", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Err(e) = self.ctr_ok(&["tasks", "delete", "--force", &id]) {
                if Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for id in self.ctr_lines(&["containers", "ls", "-q"])? {
            self.ctr_ok(&["containers", "delete", &id])?;
        }
        Ok(())
    }

    /// Everything this containerd made goes: see the module comment. Problems that remain
    /// (a mount that would not go) are returned as text, one per line.
    pub fn shutdown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.process.is_none() {
            return problems;
        }
        if let Err(e) = self.remove_all() {
            problems.push(format!("removing containers: {e:#}"));
        }
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
        let socket = self.socket.display().to_string();
        for (pid, _) in procs::find_by_cmdline(&socket) {
            let is_shim = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("containerd-shim"))
                .unwrap_or(false);
            if is_shim {
                problems.push(format!("a shim (PID {pid}) was still running; killed it"));
                procs::kill_tree(pid);
            }
        }
        let left = procs::unmount_all_under(&self.dir);
        if !left.is_empty() {
            problems.push(format!("mounts that stayed: {left:?}"));
        }
        problems
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for p in self.shutdown() {
            eprintln!("containerd cleanup: {p}");
        }
    }
}
