//! The `raw` disk image: GPT with the EFI system partition (GRUB), two boot slots A and B
//! (FAT, kernel + initramfs; A filled, B empty for the next upgrade), STATE and EPHEMERAL
//! (left unformatted: machined formats them on first boot). UEFI boot only.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::fat::{self, FatFile, Window};
use super::gpt::{self, ALIGN, PartitionSpec, TYPE_BASIC_DATA, TYPE_EFI_SYSTEM, TYPE_LINUX_FS};
use super::grub;
use crate::report::SizeReport;

pub const EFI_SIZE: u64 = 64 * ALIGN;
pub const SLOT_SIZE: u64 = 512 * ALIGN;
pub const STATE_SIZE: u64 = 128 * ALIGN;
pub const DEFAULT_DISK_SIZE: u64 = 4096 * ALIGN;

pub struct RawInputs<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub disk_size: u64,
    /// Size of each boot slot (default [`SLOT_SIZE`]).
    pub slot_size: u64,
    pub cmdline: &'a str,
    pub epoch: u64,
}

pub fn partitions(slot_size: u64) -> Vec<PartitionSpec> {
    vec![
        PartitionSpec {
            name: "EFI".into(),
            type_guid: TYPE_EFI_SYSTEM,
            size: Some(EFI_SIZE),
        },
        PartitionSpec {
            name: "BOOT-A".into(),
            type_guid: TYPE_BASIC_DATA,
            size: Some(slot_size),
        },
        PartitionSpec {
            name: "BOOT-B".into(),
            type_guid: TYPE_BASIC_DATA,
            size: Some(slot_size),
        },
        PartitionSpec {
            name: "STATE".into(),
            type_guid: TYPE_LINUX_FS,
            size: Some(STATE_SIZE),
        },
        PartitionSpec {
            name: "EPHEMERAL".into(),
            type_guid: TYPE_LINUX_FS,
            size: None,
        },
    ]
}

/// Writes the disk image to `out` (sparse) and reports what it holds.
pub fn build(inputs: &RawInputs<'_>, out: &Path, work: &Path) -> Result<SizeReport> {
    let payload =
        std::fs::metadata(inputs.kernel)?.len() + std::fs::metadata(inputs.initramfs)?.len();
    if payload > inputs.slot_size * 9 / 10 {
        bail!(
            "kernel + initramfs ({payload} bytes) do not fit a {} MiB boot slot",
            inputs.slot_size / ALIGN
        );
    }
    std::fs::create_dir_all(work)?;
    let efi_binary = work.join("BOOTX64.EFI");
    grub::mkimage_efi(&efi_binary)?;
    let seed = format!("ros-raw/{}", inputs.epoch);
    let layout = gpt::plan(&partitions(inputs.slot_size), inputs.disk_size, &seed)?;

    let tmp = out.with_extension("tmp");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.set_len(inputs.disk_size)?;
    gpt::write(&file, &layout)?;
    let volume_id = |name: &str| {
        let g = gpt::Guid::derived(&format!("{seed}/fat/{name}"));
        u32::from_le_bytes([g.0[0], g.0[1], g.0[2], g.0[3]])
    };
    let window = |name: &str| -> Result<Window<'_>> {
        let p = layout
            .get(name)
            .with_context(|| format!("no {name} partition"))?;
        Ok(Window::new(&file, p.offset(), p.len()))
    };
    let cfg = grub::slots_cfg(inputs.cmdline);
    fat::format_and_fill(
        window("EFI")?,
        "EFI",
        volume_id("EFI"),
        inputs.epoch,
        &[
            FatFile::Copy("EFI/BOOT/BOOTX64.EFI", &efi_binary),
            FatFile::Bytes("EFI/BOOT/grub.cfg", cfg.as_bytes()),
        ],
    )?;
    fat::format_and_fill(
        window("BOOT-A")?,
        "ROS-A",
        volume_id("BOOT-A"),
        inputs.epoch,
        &[
            FatFile::Copy("vmlinuz", inputs.kernel),
            FatFile::Copy("initramfs", inputs.initramfs),
        ],
    )?;
    fat::format_and_fill(
        window("BOOT-B")?,
        "ROS-B",
        volume_id("BOOT-B"),
        inputs.epoch,
        &[],
    )?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, out)?;

    let mut report = SizeReport::default();
    report.add(
        "raw disk",
        format!("{} (sparse)", out.display()),
        inputs.disk_size,
    );
    report.add(
        "raw EFI GRUB",
        "BOOTX64.EFI",
        std::fs::metadata(&efi_binary)?.len(),
    );
    report.add("raw slot A payload", "vmlinuz + initramfs", payload);
    for p in &layout.partitions {
        report.add(
            format!("raw partition {}", p.name),
            format!("LBA {}..{}", p.first_lba, p.last_lba),
            p.len(),
        );
    }
    Ok(report)
}
