//! A node's life on its own disk, through the real rosctl: maintenance mode, apply-config
//! --insecure, configured (hostname, addresses, DHCP lease) over mTLS, logs and dmesg
//! streaming, init restarting a killed machined, the config surviving a reboot from the disk
//! (STATE is a partition now), and reset returning the node to maintenance mode.
//!
//! Three boots share one private copy of the raw disk image:
//! 1. kernel + initramfs with `ros.debug`, the disk attached: STATE and EPHEMERAL are
//!    formatted; apply-config; checks; machined killed and restarted; `rosctl reboot`.
//! 2. the disk itself by UEFI and GRUB, no config offered: comes back configured; `rosctl reset`.
//! 3. kernel + initramfs with the disk: maintenance mode again.

use std::path::Path;
use std::time::Duration;

use e2e::node::{DHCP_ADDRESS, LINK, STATIC_ADDRESS, disk_copy, node_files};
use e2e::rosctl::Rosctl;
use e2e::{Image, disk_images, image, phase_timeout, rosctl_bin, state_dir};
use imager::qemu::{BootSource, Vm, VmSpec, free_port};

const HOSTNAME: &str = "e2e-life";

/// A direct kernel boot with `disk` attached as the first virtio disk.
fn direct_with_disk(image: &Image, name: &str, disk: &Path, debug: bool, dir: &Path) -> (Vm, u16) {
    let accel = e2e::accel(image);
    let port = free_port().unwrap();
    let mut spec = VmSpec::single(name, &image.kernel, &image.initramfs, accel, port, dir);
    spec.disks = vec![disk.to_path_buf()];
    if debug {
        spec.cmdline_extra.push("ros.debug".into());
    }
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    (Vm::start(spec).expect("starting QEMU"), port)
}

/// The same disk booted by OVMF through its own GRUB (writes kept: no snapshot).
fn uefi_from_disk(image: &Image, name: &str, disk: &Path, dir: &Path) -> (Vm, u16) {
    let accel = e2e::accel(image);
    let port = free_port().unwrap();
    let mut spec = VmSpec::single(name, &image.kernel, &image.initramfs, accel, port, dir);
    spec.boot = BootSource::UefiDisk {
        image: disk.to_path_buf(),
        snapshot: false,
    };
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    (Vm::start(spec).expect("starting QEMU"), port)
}

/// Waits for init's clean shutdown after a reboot request, and QEMU's exit (-no-reboot).
fn wait_rebooted(vm: &mut Vm, timeout: Duration) {
    vm.wait_for_console("shutdown: reboot requested", timeout)
        .unwrap();
    let status = vm.wait_exit(timeout).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    let console = vm.console();
    let summary = console
        .lines()
        .find(|l| l.contains("shutdown:") && l.contains(" unmounted, "))
        .unwrap_or_else(|| panic!("no unmount summary:\n{}", vm.console_tail(60)));
    assert!(summary.contains(" 0 left as they were"), "{summary}");
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn apply_reboot_reset_on_a_disk() {
    let image = image().expect("building the e2e image");
    let disks = disk_images(&image).expect("building the disk images");
    let rosctl_bin = rosctl_bin().unwrap();
    let work = state_dir("life");
    let disk = work.path().join("node.raw");
    disk_copy(&disks.raw, &disk).unwrap();
    let files = node_files(work.path(), HOSTNAME).unwrap();
    let config = files.config.display().to_string();

    // Boot 1: maintenance mode on a fresh disk.
    let dir1 = work.path().join("1");
    let (mut vm, port) = direct_with_disk(&image, "life1", &disk, true, &dir1);
    let timeout = phase_timeout(vm.spec().accel);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    vm.wait_for_console("no config: maintenance mode", timeout)
        .unwrap();
    let console = vm.console();
    for label in ["STATE", "EPHEMERAL"] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("disks: {label}: /dev/vda"))
                    && l.contains("formatted now")),
            "{label} was not formatted and mounted:\n{}",
            vm.console_tail(60)
        );
    }

    let applied = ros
        .ok_within(&["apply-config", "--insecure", "--file", &config], timeout)
        .unwrap();
    eprintln!("e2e: apply-config: {applied}");

    // Configured: mutual TLS with the generated admin rosconfig.
    let hostname = ros
        .wait_for(&["hostname"], timeout, |out| out.contains(HOSTNAME))
        .unwrap();
    assert!(hostname.contains(HOSTNAME), "{hostname}");
    let spec = ros.ok(&["get", "hostname", "-o", "yaml"]).unwrap();
    assert!(spec.contains(HOSTNAME), "{spec}");
    let addresses = ros.ok(&["get", "addresses", "-o", "yaml"]).unwrap();
    assert!(
        addresses.contains(STATIC_ADDRESS) && addresses.contains(LINK),
        "{addresses}"
    );
    let mounts = ros.ok(&["mounts"]).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains("/system/state") && l.contains("ext4")),
        "STATE is not the ext4 partition:\n{mounts}"
    );
    // The DHCP lease from QEMU's user network, as machined's log reports it (streamed).
    let lease = format!("bound {DHCP_ADDRESS}");
    let log = ros
        .stream_until(&["logs", "machined", "-f"], timeout, |lines| {
            lines.iter().any(|l| l.contains(&lease))
        })
        .unwrap();
    assert!(log.iter().any(|l| l.contains(&lease)), "{log:?}");
    let tail = ros.ok(&["logs", "machined", "--tail", "5"]).unwrap();
    assert!(
        tail.lines().count() >= 1 && tail.lines().count() <= 6,
        "{tail}"
    );
    // dmesg -f streams the kernel log.
    let dmesg = ros
        .stream_until(&["dmesg", "-f"], timeout, |lines| lines.len() >= 5)
        .unwrap();
    assert!(
        dmesg
            .iter()
            .any(|l| l.contains("Linux version") || l.contains("virtio")),
        "{dmesg:?}"
    );

    // ros.debug: an admin's `service machined restart` kills machined; init restarts it.
    let started_before = count(&vm.console(), "machined: started /sbin/machined");
    ros.ok(&["service", "machined", "restart"]).unwrap();
    vm.wait_for_console_where("machined killed by SIGKILL", timeout, |text| {
        text.lines()
            .any(|l| l.contains("machined (pid ") && l.contains("killed by signal SIGKILL"))
    })
    .unwrap();
    vm.wait_for_console_where("machined started again", timeout, |text| {
        count(text, "machined: started /sbin/machined") > started_before
    })
    .unwrap();
    // The new machined finds STATE already mounted and its config on it.
    let again = ros
        .wait_for(&["get", "hostname", "-o", "yaml"], timeout, |out| {
            out.contains(HOSTNAME)
        })
        .unwrap();
    assert!(again.contains(HOSTNAME));
    let console = vm.console();
    for (label, target) in [("STATE", "/system/state"), ("EPHEMERAL", "/var")] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("disks: {label}: /dev/vda"))
                    && l.contains(&format!("already mounted on {target}"))),
            "the restarted machined did not find {label} mounted:\n{}",
            vm.console_tail(60)
        );
    }

    ros.ok(&["reboot"]).unwrap();
    wait_rebooted(&mut vm, timeout);
    drop(vm);

    // Boot 2: the disk by UEFI, nothing offered by the platform: the config is on STATE.
    let dir2 = work.path().join("2");
    let (mut vm, port) = uefi_from_disk(&image, "life2", &disk, &dir2);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    let uefi_timeout = timeout * 2;
    vm.wait_for_console("loaded the config stored on STATE", uefi_timeout)
        .unwrap();
    let console = vm.console();
    assert!(
        console.contains("cmdline: platform=metal"),
        "{}",
        vm.console_tail(60)
    );
    assert!(
        !console.contains("formatted now"),
        "STATE was formatted again:\n{}",
        vm.console_tail(60)
    );
    let hostname = ros
        .wait_for(&["hostname"], timeout, |out| out.contains(HOSTNAME))
        .unwrap();
    assert!(hostname.contains(HOSTNAME));
    let addresses = ros.ok(&["get", "addresses", "-o", "yaml"]).unwrap();
    assert!(addresses.contains(STATIC_ADDRESS), "{addresses}");

    ros.ok(&["reset"]).unwrap();
    wait_rebooted(&mut vm, timeout);
    drop(vm);

    // Boot 3: after reset the disk holds no config: maintenance mode, mTLS refused.
    let dir3 = work.path().join("3");
    let (mut vm, port) = direct_with_disk(&image, "life3", &disk, false, &dir3);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    vm.wait_for_console("no config: maintenance mode", timeout)
        .unwrap();
    let console = vm.console();
    assert!(
        !console.contains("loaded the config stored on STATE"),
        "{}",
        vm.console_tail(60)
    );
    assert!(
        !console.contains("formatted now"),
        "{}",
        vm.console_tail(60)
    );
    let refused = ros.run(&["hostname"], e2e::rosctl::CALL_TIMEOUT).unwrap();
    assert!(
        !refused.status.success(),
        "a maintenance-mode node answered an mTLS call"
    );
    let disks_out = ros.ok(&["disks", "--insecure"]).unwrap();
    assert!(disks_out.contains("vda"), "{disks_out}");
}
