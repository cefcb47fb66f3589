//! Where machined keeps things: real partitions on a node, subdirectories of `--state-dir` in dev.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    /// STATE: the accepted machine config (survives reboots).
    pub state: PathBuf,
    /// EPHEMERAL: wiped by reset; holds service logs.
    pub ephemeral: PathBuf,
    /// Per-service log files.
    pub logs: PathBuf,
    /// init's control socket.
    pub init_socket: PathBuf,
    /// The cluster role's files (see `crate::cluster`).
    pub cluster: ClusterPaths,
}

/// Where the cluster role keeps its files.
#[derive(Debug, Clone)]
pub struct ClusterPaths {
    /// Records that this control plane was bootstrapped (on STATE: survives reboots).
    pub bootstrapped: PathBuf,
    /// `cluster server --data-dir` (the store, the server's certificates).
    pub server_data: PathBuf,
    /// The CA and service-account key files given to `cluster server` (0600).
    pub pki: PathBuf,
    /// `cluster agent --root-dir`, also its kubeconfig and registries file.
    pub agent_root: PathBuf,
    /// containerd's generated config, root and state directories.
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
}

impl ClusterPaths {
    fn under(state: &Path, lib: &Path, run: &Path) -> Self {
        Self {
            bootstrapped: state.join("bootstrapped.json"),
            server_data: lib.join("ros/cluster"),
            pki: lib.join("ros/pki"),
            agent_root: lib.join("ros/agent"),
            containerd_config: lib.join("ros/containerd/config.toml"),
            containerd_root: lib.join("containerd"),
            containerd_state: run.join("containerd"),
        }
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_state.join("containerd.sock")
    }
}

impl Paths {
    /// Layout inside a booted image.
    pub fn node() -> Self {
        Self {
            state: PathBuf::from("/system/state"),
            ephemeral: PathBuf::from("/var"),
            logs: PathBuf::from("/var/log"),
            init_socket: PathBuf::from(crate::system::power::INIT_SOCKET),
            cluster: ClusterPaths::under(
                Path::new("/system/state"),
                Path::new("/var/lib"),
                Path::new("/run"),
            ),
        }
    }

    /// Layout under a dev-mode state directory.
    pub fn dev(dir: &Path) -> Self {
        Self {
            state: dir.join("state"),
            ephemeral: dir.join("ephemeral"),
            logs: dir.join("ephemeral/log"),
            init_socket: dir.join("init.sock"),
            cluster: ClusterPaths::under(
                &dir.join("state"),
                &dir.join("ephemeral/lib"),
                &dir.join("ephemeral/run"),
            ),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.state.join("config.yaml")
    }

    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.state)?;
        std::fs::create_dir_all(&self.logs)
    }
}
