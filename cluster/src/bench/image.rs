//! A small OCI image made on the spot from Debian's static busybox (`sleep`, `sh`): one
//! uncompressed tar layer, a config and a manifest in an OCI image layout archive that
//! `ctr images import` takes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::json;

pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "sleep", "true"];

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tar(dir: &Path, out: &Path) -> Result<()> {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--owner=0", "--group=0", "--sort=name", "-cf"])
        .arg(out)
        .arg(".")
        .status()
        .context("running tar")?;
    anyhow::ensure!(st.success(), "tar of {} failed", dir.display());
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Writes the image `name` as an OCI layout archive under `work`; returns the archive's path.
pub fn build(work: &Path, name: &str) -> Result<PathBuf> {
    super::containerd::need(BUSYBOX, "busybox-static")?;
    let rootfs = work.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    std::fs::create_dir_all(rootfs.join("tmp"))?;
    std::fs::copy(BUSYBOX, bin.join("busybox")).context("copying busybox")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("linking {applet}"))?;
    }
    let layer_path = work.join("layer.tar");
    tar(&rootfs, &layer_path)?;
    let layer = std::fs::read(&layer_path)?;
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sleep", "3600"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    write(&blobs.join(&layer_digest), &layer)?;
    write(&blobs.join(&config_digest), &config)?;
    write(&blobs.join(&manifest_digest), &manifest)?;
    write(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name},
    }]});
    write(&layout.join("index.json"), &serde_json::to_vec(&index)?)?;
    let archive = work.join("image.tar");
    tar(&layout, &archive)?;
    Ok(archive)
}
