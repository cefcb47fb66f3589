//! Boots the real image in QEMU and follows it from the kernel to machined and back down.

use std::time::Duration;

use e2e::{boot, image, phase_timeout, state_dir};

/// init starts, loads the image's modules, mounts the squashfs root and switches to it,
/// starts machined; Ctrl-Alt-Del then makes init shut down cleanly and reboot, which
/// (with -no-reboot) ends QEMU by itself.
#[test]
fn boots_to_machined_and_shuts_down_on_ctrl_alt_del() {
    let image = image().expect("building the e2e image");
    let dir = state_dir("boot");
    let (mut vm, _port) = boot(&image, "boot", dir.path()).expect("starting QEMU");
    let timeout = phase_timeout(vm.spec().accel);

    vm.wait_for_console("ros init starting", timeout).unwrap();
    vm.wait_for_console_where("modules loaded", timeout, |text| {
        text.lines().any(|l| {
            l.contains("init: modules:")
                && l.contains(" loaded,")
                && !l.contains("modules: 0 loaded")
        })
    })
    .unwrap();
    let console = vm.console();
    let summary = console
        .lines()
        .find(|l| l.contains("init: modules:") && l.contains(" loaded,"))
        .unwrap();
    assert!(
        summary.contains(" 0 failed") && summary.contains(" 0 not found"),
        "{summary}"
    );

    vm.wait_for_console("root: switched to the read-only squashfs root", timeout)
        .unwrap();
    vm.wait_for_console("machined: started /sbin/machined", timeout)
        .unwrap();

    // Give machined a moment to install its signal handling, then press Ctrl-Alt-Del.
    std::thread::sleep(Duration::from_secs(2));
    vm.qmp().unwrap().ctrl_alt_delete().unwrap();
    vm.wait_for_console("shutdown: reboot requested", timeout)
        .unwrap();
    let status = vm.wait_exit(timeout).unwrap();
    let console = vm.console();
    assert!(status.success(), "QEMU exit status {status}");
    assert!(
        console.contains("shutdown: reboot now"),
        "init did not finish its shutdown:\n{}",
        vm.console_tail(60)
    );
    assert!(
        console.contains("reboot: Restarting system"),
        "the kernel did not reboot:\n{}",
        vm.console_tail(60)
    );
    assert!(!console.contains("Kernel panic"), "{}", vm.console_tail(60));
    assert_clean_unmount(&console);
}

/// init reports how its unmounting went; nothing may be left mounted read-write.
fn assert_clean_unmount(console: &str) {
    let line = console
        .lines()
        .find(|l| l.contains("shutdown:") && l.contains(" unmounted, "))
        .unwrap_or_else(|| panic!("no unmount summary on the console:\n{console}"));
    assert!(line.contains(" 0 left as they were"), "{line}");
}

/// The ACPI power button (QEMU `system_powerdown`) makes init power off cleanly, and QEMU
/// exits by itself.
#[test]
fn power_button_powers_off_cleanly() {
    let image = image().expect("building the e2e image");
    let dir = state_dir("power");
    let (mut vm, _port) = boot(&image, "power", dir.path()).expect("starting QEMU");
    let timeout = phase_timeout(vm.spec().accel);
    vm.wait_for_console("machined: started /sbin/machined", timeout)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_for_console("shutdown: poweroff requested", timeout)
        .unwrap();
    let status = vm.wait_exit(timeout).unwrap();
    let console = vm.console();
    assert!(status.success(), "QEMU exit status {status}");
    assert!(
        console.contains("shutdown: poweroff now"),
        "{}",
        vm.console_tail(60)
    );
    assert!(
        console.contains("reboot: Power down"),
        "the kernel did not power off:\n{}",
        vm.console_tail(60)
    );
    assert!(!console.contains("Kernel panic"), "{}", vm.console_tail(60));
    assert_clean_unmount(&console);
}
