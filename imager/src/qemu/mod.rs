//! The QEMU provisioner: boots ros VMs from `kernel` + `initramfs`, captures each serial
//! console to a file, and drives the VM through QMP. Used by the e2e tests and by
//! `rosctl cluster create`.

pub mod accel;
pub mod console;
pub mod launch;
pub mod netns;
pub mod process;
pub mod qmp;
pub mod vm;

pub use accel::Accel;
pub use launch::start_detached;
pub use vm::{BootSource, Forward, OVMF, TapNic, Vm, VmSpec, free_port};

/// The guest port of the machine API.
pub const MACHINE_API_PORT: u16 = 50000;

/// The fw_cfg key machined reads its config from on the qemu platform.
pub const FW_CFG_CONFIG: &str = "opt/ros/config";

/// The kernel command line every ros VM gets (contracts.md section 3), before extras.
pub const BASE_CMDLINE: &[&str] = &["console=ttyS0", "ros.platform=qemu"];
