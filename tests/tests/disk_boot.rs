//! The disk images boot through their firmware and GRUB to machined: the raw GPT image by
//! UEFI, the ISO by BIOS and by UEFI.

use e2e::{boot_from, disk_images, image, phase_timeout, state_dir};
use imager::qemu::BootSource;

fn boots_to_machined(name: &str, boot: BootSource) {
    let image = image().expect("building the e2e image");
    let dir = state_dir(name);
    let mut vm = boot_from(&image, name, boot, dir.path()).expect("starting QEMU");
    let timeout = phase_timeout(vm.spec().accel);
    // GRUB's menu shows on the serial console, then the kernel, then init.
    vm.wait_for_console("ros init starting", timeout).unwrap();
    vm.wait_for_console("cmdline: platform=metal", timeout)
        .unwrap();
    vm.wait_for_console("root: switched to the read-only squashfs root", timeout)
        .unwrap();
    vm.wait_for_console("machined: started /sbin/machined", timeout)
        .unwrap();
}

#[test]
fn raw_disk_boots_by_uefi() {
    let image = image().expect("building the e2e image");
    let disks = disk_images(&image).expect("building the disk images");
    boots_to_machined(
        "raw-uefi",
        BootSource::UefiDisk {
            image: disks.raw,
            snapshot: true,
        },
    );
}

#[test]
fn iso_boots_by_bios_and_uefi() {
    let image = image().expect("building the e2e image");
    let disks = disk_images(&image).expect("building the disk images");
    boots_to_machined(
        "iso-bios",
        BootSource::Cdrom {
            iso: disks.iso.clone(),
            uefi: false,
        },
    );
    boots_to_machined(
        "iso-uefi",
        BootSource::Cdrom {
            iso: disks.iso,
            uefi: true,
        },
    );
}
