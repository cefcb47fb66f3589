//! A machine config handed over through QEMU fw_cfg (`opt/ros/config`) reaches machined,
//! which accepts it instead of waiting in maintenance mode.

use e2e::{image, phase_timeout, state_dir};
use imager::qemu::{Vm, VmSpec, free_port};
use ros_config::generate::{GenOptions, generate};
use ros_config::secrets::Secrets;

#[test]
fn fw_cfg_config_is_accepted() {
    let image = image().expect("building the e2e image");
    let dir = state_dir("config");
    let generated = generate(&GenOptions {
        cluster_name: "e2e".into(),
        endpoint: "https://10.0.2.15:6443".into(),
        secrets: Secrets::generate().unwrap(),
        patches: vec![],
        patches_control_plane: vec![],
        patches_worker: vec![],
    })
    .unwrap();
    let config = dir.path().join("controlplane.yaml");
    std::fs::write(&config, generated.control_plane.to_yaml()).unwrap();

    let accel = e2e::accel(&image);
    let mut spec = VmSpec::single(
        "config",
        &image.kernel,
        &image.initramfs,
        accel,
        free_port().unwrap(),
        dir.path(),
    );
    spec.machine_config = Some(config);
    let mut vm = Vm::start(spec).expect("starting QEMU");
    let timeout = phase_timeout(accel);
    vm.wait_for_console("accepted the qemu platform config", timeout)
        .unwrap();
    assert!(
        !vm.console().contains("platform config rejected"),
        "{}",
        vm.console_tail(40)
    );
}
