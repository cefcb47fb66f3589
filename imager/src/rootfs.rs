//! The read-only root: a staged directory tree in the contract's layout, packed with
//! `mksquashfs` so that the same tree and epoch always give the same bytes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::elf_deps::{self, DEFAULT_LIBRARY_DIRS, ImageFile};
use crate::report::SizeReport;
use crate::tools::{self, MKSQUASHFS};

/// Empty directories the running system mounts over or writes into.
pub const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var",
    "system",
    "system/state",
    "etc/ros",
];

pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone)]
pub struct RootfsInputs {
    pub init: PathBuf,
    pub machined: PathBuf,
    pub cluster: Option<PathBuf>,
    /// Third-party executables: (host path, path in the image).
    pub binaries: Vec<(PathBuf, PathBuf)>,
    /// The CA bundle to ship (default: the host's, from Debian's ca-certificates).
    pub ca_bundle: PathBuf,
    /// A machine config baked into the image (read by machined before maintenance mode).
    pub embedded_config: Option<PathBuf>,
}

/// Where an embedded machine config lives in the root.
/// Where machined writes the node's resolvers (its resolvers controller); /etc is read-only,
/// so /etc/resolv.conf is a link to it, for every reader: the cluster DNS forwarder,
/// containerd's pulls, anything using libc's resolver.
pub const RESOLV_CONF: &str = "/run/ros/resolv.conf";

pub const EMBEDDED_CONFIG: &str = "/usr/lib/ros/config.yaml";

pub fn os_release() -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=\"ros\"\nID=ros\nVERSION_ID={version}\nPRETTY_NAME=\"ros {version}\"\nHOME_URL=\"https://github.com/ros\"\n"
    )
}

/// Fills `stage` (which must be empty or absent) and returns the size of each part.
pub fn stage(inputs: &RootfsInputs, stage: &Path) -> Result<SizeReport> {
    if stage.exists() {
        std::fs::remove_dir_all(stage)
            .with_context(|| format!("removing old {}", stage.display()))?;
    }
    std::fs::create_dir_all(stage)?;
    set_mode(stage, 0o755)?;
    let mut report = SizeReport::default();

    for dir in MOUNT_POINTS {
        mkdir(stage, dir)?;
    }
    set_mode(&stage.join("tmp"), 0o1777)?;

    let mut ours = vec![
        (inputs.init.clone(), PathBuf::from("/sbin/init"), "--init"),
        (
            inputs.machined.clone(),
            PathBuf::from("/sbin/machined"),
            "--machined",
        ),
    ];
    if let Some(cluster) = &inputs.cluster {
        ours.push((
            cluster.clone(),
            PathBuf::from("/usr/bin/cluster"),
            "--cluster",
        ));
    }
    let mut executables = Vec::new();
    for (source, dest, flag) in &ours {
        if !source.is_file() {
            bail!("{flag} {}: not a file", source.display());
        }
        let bytes = copy_in(stage, source, dest, 0o755)?;
        report.add(format!("rootfs {}", dest.display()), "ours", bytes);
        executables.push(source.clone());
    }
    for (source, dest) in &inputs.binaries {
        let bytes = copy_in(stage, source, dest, 0o755)?;
        report.add(
            format!("rootfs {}", dest.display()),
            format!("from {}", source.display()),
            bytes,
        );
        executables.push(source.clone());
    }

    let dynamic: Vec<PathBuf> = executables
        .into_iter()
        .filter(|exe| {
            std::fs::read(exe)
                .ok()
                .and_then(|data| elf_deps::inspect(&data).ok())
                .is_some_and(|info| !info.is_static())
        })
        .collect();
    let libraries = elf_deps::library_closure(&dynamic, Path::new("/"), DEFAULT_LIBRARY_DIRS)?;
    let mut library_bytes = 0;
    for ImageFile { dest, source } in &libraries {
        library_bytes += copy_in(stage, source, dest, 0o755)?;
    }
    report.add(
        "rootfs shared libraries",
        format!("{} files from DT_NEEDED", libraries.len()),
        library_bytes,
    );

    if !inputs.ca_bundle.is_file() {
        bail!(
            "CA bundle {} is missing: install the Debian package `ca-certificates` (apt-get install ca-certificates)",
            inputs.ca_bundle.display()
        );
    }
    let bytes = copy_in(stage, &inputs.ca_bundle, Path::new(CA_BUNDLE), 0o644)?;
    report.add("rootfs CA certificates", CA_BUNDLE, bytes);
    write_in(
        stage,
        Path::new("/etc/os-release"),
        os_release().as_bytes(),
        0o644,
    )?;
    link_in(stage, Path::new("/etc/resolv.conf"), Path::new(RESOLV_CONF))?;
    if let Some(config) = &inputs.embedded_config {
        let bytes = copy_in(stage, config, Path::new(EMBEDDED_CONFIG), 0o600)?;
        report.add("rootfs embedded machine config", EMBEDDED_CONFIG, bytes);
    }
    Ok(report)
}

/// Packs `stage` into `out` (zstd squashfs, owner root, every time = `epoch`).
pub fn mksquashfs(stage: &Path, out: &Path, epoch: u64) -> Result<()> {
    let mut cmd = MKSQUASHFS.command()?;
    let epoch = epoch.to_string();
    cmd.arg(stage)
        .arg(out)
        .args([
            "-noappend",
            "-reproducible",
            "-all-root",
            "-no-xattrs",
            "-no-progress",
            "-quiet",
        ])
        .args(["-comp", "zstd", "-b", "256K"])
        .args(["-mkfs-time", &epoch, "-all-time", &epoch]);
    tools::run(cmd).context("packing the root image")?;
    Ok(())
}

fn in_stage(stage: &Path, dest: &Path) -> Result<PathBuf> {
    let rel = dest
        .strip_prefix("/")
        .with_context(|| format!("{} is not absolute", dest.display()))?;
    Ok(stage.join(rel))
}

fn mkdir(stage: &Path, rel: &str) -> Result<()> {
    let mut path = stage.to_path_buf();
    for component in rel.split('/') {
        path.push(component);
        if !path.exists() {
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
            set_mode(&path, 0o755)?;
        }
    }
    Ok(())
}

fn ensure_parent(stage: &Path, dest: &Path) -> Result<PathBuf> {
    let target = in_stage(stage, dest)?;
    if let Some(parent) = dest.parent() {
        let rel = parent.to_string_lossy();
        let rel = rel.trim_start_matches('/');
        if !rel.is_empty() {
            mkdir(stage, rel)?;
        }
    }
    Ok(target)
}

/// Copies a host file (symlinks followed) into the stage with a fixed mode.
fn copy_in(stage: &Path, source: &Path, dest: &Path, mode: u32) -> Result<u64> {
    let target = ensure_parent(stage, dest)?;
    if target.exists() {
        bail!("{} is put into the image twice", dest.display());
    }
    let bytes = std::fs::copy(source, &target)
        .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
    set_mode(&target, mode)?;
    Ok(bytes)
}

fn write_in(stage: &Path, dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let target = ensure_parent(stage, dest)?;
    std::fs::write(&target, data).with_context(|| format!("writing {}", target.display()))?;
    set_mode(&target, mode)
}

fn link_in(stage: &Path, dest: &Path, target: &Path) -> Result<()> {
    let link = ensure_parent(stage, dest)?;
    std::os::unix::fs::symlink(target, &link)
        .with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
