//! The cluster's state directory: `cluster.json` (the plan and how it was booted), the
//! rosconfig and kubeconfig, and one directory per node (config, console.log, qemu.pid).

use super::plan::{NodePlan, Plan};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "cluster.json";
pub const ROSCONFIG: &str = "rosconfig";
pub const KUBECONFIG: &str = "kubeconfig";
/// A node's machine config, in its directory.
pub const NODE_CONFIG: &str = "config.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub netns: String,
    /// The bridge network, `a.b.c.d/len`.
    pub cidr: String,
    pub endpoint: String,
    /// The image directory booted (`kernel`, `initramfs`).
    pub image: PathBuf,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nodes: Vec<NodePlan>,
}

impl ClusterState {
    pub fn new(plan: &Plan, image: &Path, accel: &str, memory_mib: u32, cpus: u32) -> Self {
        Self {
            name: plan.name.clone(),
            netns: plan.netns.clone(),
            cidr: format!("{}/{}", plan.network.base, plan.network.prefix),
            endpoint: plan.endpoint.clone(),
            image: image.to_path_buf(),
            accel: accel.to_string(),
            memory_mib,
            cpus,
            nodes: plan.nodes.clone(),
        }
    }

    pub fn exists(state_dir: &Path) -> bool {
        state_dir.join(STATE_FILE).is_file()
    }

    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no cluster here (create one with `rosctl cluster create`)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a cluster state file", path.display()))
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(STATE_FILE);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        ros_config::atomic_write(&path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

pub fn pid_file(node: &NodePlan) -> PathBuf {
    node.dir.join(imager::qemu::launch::PID_FILE)
}

/// Must match the QMP path imager gives QEMU (`VmSpec::qmp_path`): it identifies the VM's
/// QEMU in /proc/PID/cmdline.
pub fn qmp_socket(node: &NodePlan) -> PathBuf {
    node.dir.join("qmp.sock")
}

pub fn console_log(node: &NodePlan) -> PathBuf {
    node.dir.join("console.log")
}

/// The running QEMU's PID, if its PID file names a live QEMU of this node.
pub fn running_pid(node: &NodePlan) -> Option<u32> {
    let pid = imager::qemu::process::read_pid_file(&pid_file(node))?;
    imager::qemu::process::is_running(pid, &qmp_socket(node)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Request, plan};
    use super::*;

    #[test]
    fn state_round_trips_and_names_node_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut port = 42000;
        let p = plan(
            &Request {
                name: "rt".into(),
                controlplanes: 1,
                workers: 1,
                cidr: "10.6.0.0/24".into(),
                state_dir: dir.path().to_path_buf(),
            },
            || {
                port += 1;
                Ok(port)
            },
        )
        .unwrap();
        assert!(!ClusterState::exists(dir.path()));
        assert!(
            format!("{:#}", ClusterState::load(dir.path()).unwrap_err()).contains("no cluster")
        );
        let s = ClusterState::new(&p, Path::new("/img"), "tcg", 2048, 2);
        s.save(dir.path()).unwrap();
        assert!(ClusterState::exists(dir.path()));
        let back = ClusterState::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.cidr, "10.6.0.0/24");
        let w = &back.nodes[1];
        assert_eq!(pid_file(w), dir.path().join("worker-1/qemu.pid"));
        assert_eq!(qmp_socket(w), dir.path().join("worker-1/qmp.sock"));
        // No PID file: not running.
        assert_eq!(running_pid(w), None);
        std::fs::create_dir_all(&w.dir).unwrap();
        // A PID file naming a process that is not this VM's QEMU (ours) is not believed.
        std::fs::write(pid_file(w), std::process::id().to_string()).unwrap();
        assert_eq!(running_pid(w), None);
    }
}
