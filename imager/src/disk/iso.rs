//! The `iso`: bootable by BIOS and UEFI, made by `grub-mkrescue` (GRUB for both firmwares
//! plus xorriso for the hybrid ISO 9660 layout), with kernel + initramfs under /boot.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::grub;
use crate::tools::{self, HostTool};

pub const GRUB_MKRESCUE: HostTool = HostTool {
    command: "grub-mkrescue",
    package: "grub-common",
};
const XORRISO: HostTool = HostTool {
    command: "xorriso",
    package: "xorriso",
};
const MFORMAT: HostTool = HostTool {
    command: "mformat",
    package: "mtools",
};

pub fn build(
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    epoch: u64,
    out: &Path,
    work: &Path,
) -> Result<()> {
    XORRISO.find()?;
    MFORMAT.find()?;
    for (dir, package) in [
        ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
        (grub::EFI_MODULES_DIR, "grub-efi-amd64-bin"),
    ] {
        if !Path::new(dir).join("linux.mod").is_file() {
            bail!(
                "GRUB modules missing in {dir}: install the Debian package `{package}` (apt-get install {package})"
            );
        }
    }
    let tree = work.join("iso");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(tree.join("boot/grub"))?;
    std::fs::copy(kernel, tree.join("boot/vmlinuz")).context("copying the kernel")?;
    std::fs::copy(initramfs, tree.join("boot/initramfs")).context("copying the initramfs")?;
    std::fs::write(tree.join("boot/grub/grub.cfg"), grub::iso_cfg(cmdline))?;
    let mut cmd = GRUB_MKRESCUE.command()?;
    // xorriso takes its timestamps from SOURCE_DATE_EPOCH.
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("-o")
        .arg(out)
        .arg(&tree);
    tools::run(cmd).context("grub-mkrescue")?;
    std::fs::remove_dir_all(&tree).ok();
    Ok(())
}
