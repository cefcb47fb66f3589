//! The initramfs: our init as `/init`, the console node, the kernel modules and the root
//! image, as one zstd-compressed cpio newc archive (contracts.md section 3).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cpio::{Archive, Node};
use crate::modules::ModuleSet;

pub struct InitramfsInputs<'a> {
    pub init: &'a Path,
    pub modules: &'a ModuleSet,
    pub rootfs: &'a Path,
}

/// Builds the archive (without writing anything).
pub fn archive(inputs: &InitramfsInputs<'_>) -> Result<Archive> {
    let mut a = Archive::new();
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        a.add_dir(dir, 0o755)?;
    }
    a.add(
        "dev/console",
        0o600,
        Node::CharDevice { major: 5, minor: 1 },
    )?;
    a.add("dev/null", 0o666, Node::CharDevice { major: 1, minor: 3 })?;
    a.add_file("init", 0o755, inputs.init.to_path_buf())?;
    a.add_bytes(
        "etc/ros/modules",
        0o644,
        inputs.modules.load_list_file().into_bytes(),
    )?;
    let base = format!("lib/modules/{}", inputs.modules.kernel_version);
    a.add_bytes(
        &format!("{base}/modules.dep"),
        0o644,
        inputs.modules.modules_dep().into_bytes(),
    )?;
    a.add_bytes(
        &format!("{base}/modules.builtin"),
        0o644,
        inputs.modules.modules_builtin.clone(),
    )?;
    for module in &inputs.modules.modules {
        a.add_bytes(
            &format!("{base}/{}", module.rel_path),
            0o644,
            module.data.clone(),
        )?;
    }
    a.add_file("rootfs.sqsh", 0o644, inputs.rootfs.to_path_buf())?;
    Ok(a)
}

/// Writes `archive` zstd-compressed to `out` atomically; returns the compressed size.
pub fn write(archive: &Archive, out: &Path, epoch: u64, level: i32) -> Result<u64> {
    let tmp = tmp_path(out);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut encoder = zstd::stream::Encoder::new(std::io::BufWriter::new(file), level)?;
    encoder.include_checksum(true)?;
    archive
        .write_to(&mut encoder, epoch)
        .context("writing the initramfs archive")?;
    let mut buffered = encoder.finish()?;
    buffered.flush()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, out).with_context(|| format!("renaming {} into place", out.display()))?;
    Ok(std::fs::metadata(out)?.len())
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}
