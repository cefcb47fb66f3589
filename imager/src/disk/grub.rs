//! GRUB for the disk images: a UEFI executable made with `grub-mkimage` (no timestamps in
//! it, unlike grub-mkstandalone's memdisk), and the menu that boots slot A or B.

use std::path::Path;

use anyhow::{Result, bail};

use crate::tools::{self, HostTool};

pub const GRUB_MKIMAGE: HostTool = HostTool {
    command: "grub-mkimage",
    package: "grub-common",
};
pub const EFI_MODULES_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Modules built into the EFI image: enough to find a FAT volume by label and boot Linux.
const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "normal",
    "linux",
    "search",
    "search_label",
    "configfile",
    "echo",
    "serial",
    "terminal",
    "test",
    "gzio",
    "efi_gop",
    "all_video",
    "reboot",
    "halt",
];

/// Where the EFI image looks for grub.cfg on its own partition.
pub const EFI_PREFIX: &str = "/EFI/BOOT";

pub fn mkimage_efi(out: &Path) -> Result<()> {
    if !Path::new(EFI_MODULES_DIR).join("linux.mod").is_file() {
        bail!(
            "GRUB's EFI modules are missing ({EFI_MODULES_DIR}): install the Debian package `grub-efi-amd64-bin` (apt-get install grub-efi-amd64-bin)"
        );
    }
    let mut cmd = GRUB_MKIMAGE.command()?;
    cmd.args([
        "-O",
        "x86_64-efi",
        "-d",
        EFI_MODULES_DIR,
        "-p",
        EFI_PREFIX,
        "-o",
    ])
    .arg(out)
    .args(EFI_MODULES);
    tools::run(cmd)?;
    Ok(())
}

/// The kernel command line for disk boots (no fw_cfg: the platform is metal).
pub const DISK_CMDLINE: &str = "console=tty0 console=ttyS0,115200 ros.platform=metal";

/// A menu with slot A first, B as the fallback; each slot is a FAT volume labelled
/// `ROS-A`/`ROS-B` holding `/vmlinuz` and `/initramfs`.
pub fn slots_cfg(cmdline: &str) -> String {
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set default=0\n\
         set fallback=1\n\
         set timeout=2\n",
    );
    for slot in ["A", "B"] {
        cfg.push_str(&format!(
            "menuentry \"ros ({slot})\" {{\n\
             \tsearch --no-floppy --label ROS-{slot} --set=root\n\
             \tlinux /vmlinuz {cmdline}\n\
             \tinitrd /initramfs\n\
             }}\n"
        ));
    }
    cfg
}

/// The ISO's menu: kernel and initramfs on the ISO itself.
pub fn iso_cfg(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set default=0\n\
         set timeout=2\n\
         menuentry \"ros\" {{\n\
         \tlinux /boot/vmlinuz {cmdline}\n\
         \tinitrd /boot/initramfs\n\
         }}\n"
    )
}
