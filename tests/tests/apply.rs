//! QEMU smoke test of a node's first minutes, through the real rosctl: the image boots to
//! machined's API in maintenance mode, `rosctl apply-config --insecure` configures it, and the
//! node then answers over mutual TLS with the config's hostname and static address. One
//! boot, no disk; `lifecycle.rs` (e2e tier) goes on from here (disk, reboot, reset).

use e2e::node::{LINK, STATIC_ADDRESS, node_files};
use e2e::rosctl::Rosctl;
use e2e::{boot, image, phase_timeout, rosctl_bin, state_dir};

const HOSTNAME: &str = "e2e-apply";

#[test]
fn boots_to_the_machine_api_and_applies_a_config() {
    let image = image().expect("building the e2e image");
    let rosctl_bin = rosctl_bin().unwrap();
    let work = state_dir("apply");
    let files = node_files(work.path(), HOSTNAME).unwrap();
    let (mut vm, port) = boot(&image, "apply", &work.path().join("vm")).expect("starting QEMU");
    let timeout = phase_timeout(vm.spec().accel);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);

    vm.wait_for_console("no config: maintenance mode", timeout)
        .unwrap();
    // Maintenance mode: the API answers without client certificates, mutual TLS is refused.
    let version = ros.ok_within(&["version", "--insecure"], timeout).unwrap();
    assert!(!version.trim().is_empty(), "empty `rosctl version`");
    let refused = ros.run(&["hostname"], e2e::rosctl::CALL_TIMEOUT).unwrap();
    assert!(
        !refused.status.success(),
        "a maintenance-mode node answered an mTLS call"
    );

    let config = files.config.display().to_string();
    let applied = ros
        .ok_within(&["apply-config", "--insecure", "--file", &config], timeout)
        .unwrap();
    eprintln!("e2e: apply-config: {applied}");
    let hostname = ros
        .wait_for(&["hostname"], timeout, |out| out.contains(HOSTNAME))
        .unwrap();
    assert!(hostname.contains(HOSTNAME), "{hostname}");
    let addresses = ros
        .wait_for(&["get", "addresses", "-o", "yaml"], timeout, |out| {
            out.contains(STATIC_ADDRESS)
        })
        .unwrap();
    assert!(addresses.contains(LINK), "{addresses}");
    assert!(
        !vm.console().contains("Kernel panic"),
        "{}",
        vm.console_tail(60)
    );
}
