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
    /// Kubeconfig written by the cluster role, served by `rosctl kubeconfig`.
    pub kubeconfig: PathBuf,
}

impl Paths {
    /// Layout inside a booted image.
    pub fn node() -> Self {
        Self {
            state: PathBuf::from("/system/state"),
            ephemeral: PathBuf::from("/var"),
            logs: PathBuf::from("/var/log"),
            init_socket: PathBuf::from(crate::system::power::INIT_SOCKET),
            kubeconfig: PathBuf::from("/system/state/kubeconfig"),
        }
    }

    /// Layout under a dev-mode state directory.
    pub fn dev(dir: &Path) -> Self {
        Self {
            state: dir.join("state"),
            ephemeral: dir.join("ephemeral"),
            logs: dir.join("ephemeral/log"),
            init_socket: dir.join("init.sock"),
            kubeconfig: dir.join("state/kubeconfig"),
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
