//! The `iso`: bootable by BIOS (El Torito, GRUB i386-pc) and UEFI (an appended EFI system
//! partition holding GRUB's x86_64-efi image), with kernel + initramfs under /boot. The GRUB
//! images come from `grub-mkimage`, the EFI partition from our FAT writer, the ISO 9660
//! layout from `xorriso`, each with fixed times, so the ISO is reproducible (which
//! grub-mkrescue's temporary files and mformat serials are not).

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::fat::{self, FatFile, Window};
use super::grub::{self, GRUB_MKIMAGE};
use crate::tools::{self, HostTool};

const XORRISO: HostTool = HostTool {
    command: "xorriso",
    package: "xorriso",
};
const BIOS_MODULES_DIR: &str = "/usr/lib/grub/i386-pc";
const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "normal",
    "linux",
    "search",
    "configfile",
    "echo",
    "serial",
    "terminal",
    "test",
    "gzio",
];
const EFI_MODULES: &[&str] = &[
    "iso9660",
    "part_msdos",
    "part_gpt",
    "fat",
    "normal",
    "linux",
    "search",
    "search_fs_file",
    "configfile",
    "echo",
    "serial",
    "terminal",
    "test",
    "gzio",
    "efi_gop",
    "all_video",
];
/// The EFI image starts on its own partition; this finds the ISO's /boot/grub instead.
const EFI_EARLY_CFG: &str = "search --no-floppy --file /boot/grub/grub.cfg --set=root\n\
                             set prefix=($root)/boot/grub\n\
                             configfile $prefix/grub.cfg\n";
const EFI_PARTITION_SIZE: u64 = 4 * 1024 * 1024;

pub fn build(
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    epoch: u64,
    out: &Path,
    work: &Path,
) -> Result<()> {
    XORRISO.find()?;
    for (dir, package) in [
        (BIOS_MODULES_DIR, "grub-pc-bin"),
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

    let mut bios = GRUB_MKIMAGE.command()?;
    bios.args([
        "-O",
        "i386-pc-eltorito",
        "-d",
        BIOS_MODULES_DIR,
        "-p",
        "/boot/grub",
        "-o",
    ])
    .arg(tree.join("boot/grub/bios.img"))
    .args(BIOS_MODULES);
    tools::run(bios).context("making GRUB's BIOS image")?;

    let early = work.join("efi-early.cfg");
    std::fs::write(&early, EFI_EARLY_CFG)?;
    let efi_binary = work.join("BOOTX64.EFI");
    let mut efi = GRUB_MKIMAGE.command()?;
    efi.args([
        "-O",
        "x86_64-efi",
        "-d",
        grub::EFI_MODULES_DIR,
        "-p",
        "/boot/grub",
        "-c",
    ])
    .arg(&early)
    .arg("-o")
    .arg(&efi_binary)
    .args(EFI_MODULES);
    tools::run(efi).context("making GRUB's EFI image")?;

    let esp = work.join("efiboot.img");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&esp)?;
    file.set_len(EFI_PARTITION_SIZE)?;
    fat::format_and_fill(
        Window::new(&file, 0, EFI_PARTITION_SIZE),
        "ROS-EFI",
        (epoch as u32) ^ 0x5eed_1501,
        epoch,
        &[FatFile::Copy("EFI/BOOT/BOOTX64.EFI", &efi_binary)],
    )?;
    drop(file);

    let tmp = out.with_extension("tmp");
    std::fs::remove_file(&tmp).ok();
    let mut cmd = XORRISO.command()?;
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-as", "mkisofs", "-quiet", "-R", "-V", "ROS", "-o"])
        .arg(&tmp)
        .args([
            "-b",
            "boot/grub/bios.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ])
        .args(["--grub2-boot-info", "--grub2-mbr"])
        .arg(Path::new(BIOS_MODULES_DIR).join("boot_hybrid.img"))
        .args(["-append_partition", "2", "0xef"])
        .arg(&esp)
        .args([
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
        ])
        .args(["--set_all_file_dates", &format!("={epoch}")])
        .arg(&tree);
    tools::run(cmd).context("xorriso")?;
    std::fs::rename(&tmp, out)?;
    std::fs::remove_dir_all(&tree).ok();
    Ok(())
}
