//! The image a cluster boots: `--image DIR`, else `./_out/image` (what `scripts/up` and
//! `imager initramfs` make), built with the `imager` binary when missing.

use anyhow::{Context as _, Result, bail};
use imager::progress::Progress;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "_out/image";

pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

fn in_dir(dir: &Path) -> Result<Image> {
    let dir = std::path::absolute(dir).with_context(|| format!("--image {}", dir.display()))?;
    let image = Image {
        kernel: dir.join("kernel"),
        initramfs: dir.join("initramfs"),
        dir,
    };
    for f in [&image.kernel, &image.initramfs] {
        if !f.is_file() {
            bail!(
                "--image {}: {} is missing (build one with `imager initramfs --out DIR`)",
                image.dir.display(),
                f.display()
            );
        }
    }
    Ok(image)
}

pub fn resolve(arg: Option<&Path>, progress: &Progress) -> Result<Image> {
    if let Some(dir) = arg {
        return in_dir(dir);
    }
    let dir = PathBuf::from(DEFAULT_DIR);
    if dir.join("kernel").is_file() && dir.join("initramfs").is_file() {
        return in_dir(&dir);
    }
    let imager = imager_binary().context(
        "no --image given, no ./_out/image here, and no `imager` binary to build one (run from the source tree, or pass --image)",
    )?;
    let step = progress.step(format!(
        "building the image into {DEFAULT_DIR} with {} (takes minutes)",
        imager.display()
    ));
    let out = std::process::Command::new(&imager)
        .args(["initramfs", "--out", DEFAULT_DIR])
        .output()
        .with_context(|| format!("running {}", imager.display()))?;
    if !out.status.success() {
        bail!(
            "imager initramfs failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    progress.done(&step, format!("image built in {DEFAULT_DIR}"));
    in_dir(&dir)
}

/// `imager` next to this rosctl (a cargo target dir), else on PATH.
fn imager_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()?
        .parent()
        .map(|d| d.join("imager"))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("imager"))
            .find(|p| p.is_file())
    })
}
