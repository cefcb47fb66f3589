//! What a test node needs besides the image: a machine config with a known hostname and
//! addresses, the matching rosconfig, and its own writable copy of the raw disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use ros_config::Interface;
use ros_config::generate::{GenOptions, generate};
use ros_config::secrets::Secrets;

/// The link QEMU's user-mode NIC gets in the guest (no udev renaming in the image).
pub const LINK: &str = "eth0";
/// The address QEMU user networking hands out by DHCP.
pub const DHCP_ADDRESS: &str = "10.0.2.15/24";
/// A static address the config adds beside the lease (same subnet, unused by QEMU).
pub const STATIC_ADDRESS: &str = "10.0.2.100/24";

/// A control-plane config and the admin rosconfig of its PKI.
pub struct NodeFiles {
    pub config: PathBuf,
    pub rosconfig: PathBuf,
}

/// Writes `controlplane.yaml` (hostname `hostname`, DHCP plus [`STATIC_ADDRESS`] on
/// [`LINK`]) and `rosconfig` into `dir`.
pub fn node_files(dir: &Path, hostname: &str) -> Result<NodeFiles> {
    let generated = generate(&GenOptions {
        cluster_name: "e2e".into(),
        endpoint: "https://10.0.2.15:6443".into(),
        secrets: Secrets::generate()?,
        patches: vec![],
        patches_control_plane: vec![],
        patches_worker: vec![],
    })?;
    let mut config = generated.control_plane;
    config.machine.network.hostname = Some(hostname.to_string());
    config.machine.network.interfaces = vec![Interface {
        interface: Some(LINK.into()),
        dhcp: Some(true),
        addresses: vec![STATIC_ADDRESS.into()],
        ..Default::default()
    }];
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("the test's machine config: {e}"))?;
    let files = NodeFiles {
        config: dir.join("controlplane.yaml"),
        rosconfig: dir.join("rosconfig"),
    };
    std::fs::write(&files.config, config.to_yaml())?;
    generated.rosconfig.save(&files.rosconfig)?;
    Ok(files)
}

/// A private, sparse copy of a raw disk image (the node writes STATE and EPHEMERAL to it).
pub fn disk_copy(source: &Path, dest: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(source)
        .arg(dest)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("cp {} {}: {status}", source.display(), dest.display());
    }
    Ok(())
}
