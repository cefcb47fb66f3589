//! `kernel` + `initramfs`: the whole build from inputs to the output directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::ImageConfig;
use crate::initramfs::{self, InitramfsInputs};
use crate::kernel::KernelTree;
use crate::modules;
use crate::progress::Progress;
use crate::report::SizeReport;
use crate::rootfs::{self, RootfsInputs};

#[derive(Debug, Clone)]
pub struct BuildInputs {
    pub kernel: KernelTree,
    pub init: PathBuf,
    pub machined: PathBuf,
    pub cluster: Option<PathBuf>,
    pub config: ImageConfig,
    pub embedded_config: Option<PathBuf>,
    pub ca_bundle: PathBuf,
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub report: SizeReport,
}

pub fn build_kernel_initramfs(
    inputs: &BuildInputs,
    out: &Path,
    progress: &Progress,
) -> Result<BuildOutput> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create", out.display()))?;
    crate::cargo_build::check_static(&inputs.init)?;
    let mut report = SizeReport::default();

    let step = progress.step(format!(
        "resolving kernel modules for {}",
        inputs.kernel.version
    ));
    let modules = modules::resolve(&inputs.kernel, &inputs.config.modules)?;
    progress.done(
        &step,
        format!(
            "{} modules ({} requested, {} built in: {})",
            modules.modules.len(),
            modules.load_list.len(),
            modules.builtin_requested.len(),
            modules.builtin_requested.join(" ")
        ),
    );

    let mut binaries = Vec::new();
    for binary in &inputs.config.binaries {
        if binary.path.is_file() {
            binaries.push((binary.path.clone(), binary.dest()?));
        } else if binary.optional {
            progress.note(format!(
                "note: {} is not on this host; the image goes without it",
                binary.path.display()
            ));
        } else {
            anyhow::bail!(
                "binaries[].path {}: not found on this host",
                binary.path.display()
            );
        }
    }

    let step = progress.step("staging the root filesystem");
    let stage = out.join(".rootfs");
    let rootfs_inputs = RootfsInputs {
        init: inputs.init.clone(),
        machined: inputs.machined.clone(),
        cluster: inputs.cluster.clone(),
        binaries,
        ca_bundle: inputs.ca_bundle.clone(),
        embedded_config: inputs.embedded_config.clone(),
    };
    let rootfs_report = rootfs::stage(&rootfs_inputs, &stage)?;
    step.set_message("mksquashfs");
    let rootfs = out.join("rootfs.sqsh");
    rootfs::mksquashfs(&stage, &rootfs, inputs.epoch)?;
    std::fs::remove_dir_all(&stage).ok();
    progress.done(&step, "root filesystem packed");

    let step = progress.step("writing the initramfs");
    let archive = initramfs::archive(&InitramfsInputs {
        init: &inputs.init,
        modules: &modules,
        rootfs: &rootfs,
    })?;
    let initramfs = out.join("initramfs");
    let compressed = initramfs::write(
        &archive,
        &initramfs,
        inputs.epoch,
        inputs.config.compression_level,
    )?;
    progress.done(&step, "initramfs written");

    let kernel = out.join("kernel");
    let tmp = out.join("kernel.tmp");
    std::fs::copy(&inputs.kernel.vmlinuz, &tmp)
        .with_context(|| format!("copying {}", inputs.kernel.vmlinuz.display()))?;
    std::fs::rename(&tmp, &kernel)?;

    report.add(
        "kernel",
        format!("vmlinuz {}", inputs.kernel.version),
        std::fs::metadata(&kernel)?.len(),
    );
    report.add("initramfs", "zstd cpio, total", compressed);
    report.add(
        "initramfs /init",
        "static",
        std::fs::metadata(&inputs.init)?.len(),
    );
    report.add(
        "initramfs modules",
        format!("{} .ko, uncompressed", modules.modules.len()),
        modules.total_size(),
    );
    report.add(
        "initramfs /rootfs.sqsh",
        "squashfs zstd",
        std::fs::metadata(&rootfs)?.len(),
    );
    report.rows.extend(rootfs_report.rows);
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(out.join("sizes.json"), json)?;
    Ok(BuildOutput {
        kernel,
        initramfs,
        rootfs,
        report,
    })
}
