//! The raw disk image: partition table, file systems and contents, and reproducibility.

use std::path::Path;
use std::process::Command;

use imager::disk::gpt::ALIGN;
use imager::disk::raw::{self, RawInputs};

const DISK: u64 = 400 * ALIGN;
const SLOT: u64 = 64 * ALIGN;

fn build(dir: &Path, name: &str, epoch: u64) -> std::path::PathBuf {
    let kernel = dir.join("kernel");
    let initramfs = dir.join("initramfs");
    if !kernel.exists() {
        std::fs::write(&kernel, b"pretend kernel ".repeat(1000)).unwrap();
        std::fs::write(&initramfs, b"pretend initramfs ".repeat(5000)).unwrap();
    }
    let out = dir.join(name);
    let inputs = RawInputs {
        kernel: &kernel,
        initramfs: &initramfs,
        disk_size: DISK,
        slot_size: SLOT,
        cmdline: imager::disk::grub::DISK_CMDLINE,
        epoch,
    };
    raw::build(&inputs, &out, &dir.join("work"))
        .expect("building the raw image (needs grub-common and grub-efi-amd64-bin)");
    out
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn tool(cmd: &mut Command, package: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} ({e}): this test needs the Debian package {package}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn raw_image_layout_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), "a.raw", 1_700_000_000);
    let table = tool(Command::new("sfdisk").arg("--dump").arg(&image), "fdisk");
    for name in ["EFI", "BOOT-A", "BOOT-B", "STATE", "EPHEMERAL"] {
        assert!(table.contains(&format!("name=\"{name}\"")), "{table}");
    }
    let layout = imager::disk::gpt::plan(&raw::partitions(SLOT), DISK, "x").unwrap();
    let at = |name: &str| {
        format!(
            "{}@@{}",
            image.display(),
            layout.get(name).unwrap().offset()
        )
    };

    let cfg = tool(
        Command::new("mtype").args(["-i", &at("EFI"), "::/EFI/BOOT/grub.cfg"]),
        "mtools",
    );
    assert!(
        cfg.contains("--label ROS-A") && cfg.contains("--label ROS-B"),
        "{cfg}"
    );
    assert!(cfg.contains("ros.platform=metal"), "{cfg}");
    let efi = tool(
        Command::new("mdir").args(["-i", &at("EFI"), "::/EFI/BOOT"]),
        "mtools",
    );
    assert!(efi.contains("BOOTX64"), "{efi}");

    let kernel = tool(
        Command::new("mtype").args(["-i", &at("BOOT-A"), "::/vmlinuz"]),
        "mtools",
    );
    assert_eq!(
        kernel.as_bytes(),
        std::fs::read(dir.path().join("kernel")).unwrap()
    );
    let slot_b = tool(
        Command::new("mdir").args(["-i", &at("BOOT-B"), "::/"]),
        "mtools",
    );
    assert!(
        slot_b.contains("ROS-B") && !slot_b.contains("vmlinuz"),
        "{slot_b}"
    );
}

#[test]
fn raw_image_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = build(dir.path(), "a.raw", 1_700_000_000);
    let b = build(dir.path(), "b.raw", 1_700_000_000);
    assert!(same_bytes(&a, &b), "two builds from the same inputs differ");
    let c = build(dir.path(), "c.raw", 1_700_086_400);
    assert!(!same_bytes(&a, &c), "the epoch is an input");
}

#[test]
fn iso_is_reproducible_and_holds_the_boot_files() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), "unused.raw", 1_700_000_000); // writes the pretend kernel and initramfs
    let kernel = dir.path().join("kernel");
    let initramfs = dir.path().join("initramfs");
    let make = |name: &str| {
        let out = dir.path().join(name);
        imager::disk::iso::build(
            &kernel,
            &initramfs,
            "console=ttyS0",
            1_700_000_000,
            &out,
            &dir.path().join("work"),
        )
        .expect("building the ISO (needs xorriso, grub-pc-bin, grub-efi-amd64-bin)");
        out
    };
    let a = make("a.iso");
    let b = make("b.iso");
    assert!(same_bytes(&a, &b), "two ISOs from the same inputs differ");
    let listing = tool(
        Command::new("xorriso")
            .args(["-indev"])
            .arg(&a)
            .args(["-find", "/boot", "-name", "*"]),
        "xorriso",
    );
    for file in [
        "/boot/vmlinuz",
        "/boot/initramfs",
        "/boot/grub/grub.cfg",
        "/boot/grub/bios.img",
    ] {
        assert!(listing.contains(file), "{listing}");
    }
    // The EFI system partition is appended to the hybrid image's partition table.
    let table = tool(Command::new("sfdisk").arg("--dump").arg(&a), "fdisk");
    assert!(table.contains("type=ef"), "{table}");
}

#[test]
fn qcow2_converts_the_raw_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw = build(dir.path(), "a.raw", 1_700_000_000);
    let qcow2 = dir.path().join("a.qcow2");
    imager::disk::convert::qcow2(&raw, &qcow2)
        .expect("qemu-img convert (Debian package qemu-utils)");
    let info = tool(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&qcow2),
        "qemu-utils",
    );
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(
        info.contains(&format!("\"virtual-size\": {DISK}")),
        "{info}"
    );
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(
        compare.success(),
        "qcow2 content differs from the raw image"
    );
}
