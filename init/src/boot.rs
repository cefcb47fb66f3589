//! The boot steps, in order. Each is logged with the time since boot and runs under
//! catch_unwind: a step that panics is reported and the next one still runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::cmdline::{self, Cmdline};
use crate::console::{self, error, info, warning};
use crate::control;
use crate::modules;
use crate::mounts;
use crate::switch_root::{self, RootOutcome};
use crate::system::System;

pub const CMDLINE_COPY: &str = "/run/ros/cmdline";
pub const DEFAULT_HOSTNAME: &str = "ros";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    pub cmdline: Cmdline,
    pub root: RootOutcome,
}

pub fn boot(sys: &mut impl System) -> Booted {
    step("console and Ctrl-Alt-Del", || {
        if let Err(e) = sys.setup_console() {
            warning!("console: {e}");
        }
        if let Err(e) = sys.disable_cad() {
            warning!("cannot route Ctrl-Alt-Del to init: {e}");
        }
    });
    step("early mounts", || early_mounts(sys));
    let cmdline = step("kernel command line", || read_cmdline(sys)).unwrap_or_default();
    step("kernel modules", || modules::load_listed(sys));
    let root =
        step("root filesystem", || switch_root::mount_and_switch(sys)).unwrap_or_else(|| {
            RootOutcome::StayedInInitramfs {
                reason: "the root step panicked".to_string(),
            }
        });
    step("mount propagation", || {
        if let Err(e) = sys.mount(&mounts::shared_root()) {
            warning!("cannot make / shared: {e}");
        }
    });
    step("loopback, hostname, entropy", || identity(sys));
    step("control socket", || {
        match sys.listen_control(Path::new(control::SOCKET_PATH)) {
            Ok(()) => info!("control: listening on {}", control::SOCKET_PATH),
            Err(e) => error!(
                "control: cannot listen on {}: {e}; only signals can shut down",
                control::SOCKET_PATH
            ),
        }
    });
    step("power button", || match sys.watch_power_button() {
        0 => info!("power button: none found (needs the button and evdev modules)"),
        n => info!("power button: watching {n} device(s)"),
    });
    Booted { cmdline, root }
}

/// Runs one step; None if it panicked (the panic hook has logged it).
fn step<T>(name: &str, f: impl FnOnce() -> T) -> Option<T> {
    let started = console::uptime();
    info!("{name}");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => {
            let took = console::uptime().saturating_sub(started);
            info!("{name}: done in {} ms", took.as_millis());
            Some(value)
        }
        Err(_) => {
            error!("{name}: panicked; going on with the next step");
            None
        }
    }
}

fn early_mounts(sys: &mut impl System) {
    let failed = mounts::mount_all(sys, &mounts::early_mounts(), true);
    if !failed.is_empty() {
        warning!("{} early mounts failed", failed.len());
    }
    for (target, link) in mounts::dev_links() {
        if !sys.exists(Path::new(link))
            && let Err(e) = sys.symlink(Path::new(target), Path::new(link))
        {
            warning!("{link}: {e}");
        }
    }
    // /dev exists now: open /dev/console if the kernel could not.
    if let Err(e) = sys.setup_console() {
        warning!("console: {e}");
    }
}

fn read_cmdline(sys: &mut impl System) -> Cmdline {
    let raw = match sys.read_to_string(Path::new("/proc/cmdline")) {
        Ok(raw) => raw,
        Err(e) => {
            warning!("cannot read /proc/cmdline: {e}; using defaults");
            String::new()
        }
    };
    let parsed = cmdline::parse(&raw);
    console::set_debug(parsed.debug);
    for warning in &parsed.warnings {
        warning!("cmdline: {warning}");
    }
    info!(
        "cmdline: platform={} config={} debug={}",
        parsed.platform,
        parsed.config.as_deref().unwrap_or("(none)"),
        parsed.debug
    );
    let saved = sys
        .create_dir_all(Path::new("/run/ros"), 0o755)
        .and_then(|()| {
            sys.write_file_atomic(Path::new(CMDLINE_COPY), raw.trim_end().as_bytes(), 0o644)
        });
    if let Err(e) = saved {
        warning!("cannot save the command line to {CMDLINE_COPY}: {e}");
    }
    parsed
}

fn identity(sys: &mut impl System) {
    if let Err(e) = sys.loopback_up() {
        warning!("loopback: {e}");
    }
    if let Err(e) = sys.set_hostname(DEFAULT_HOSTNAME) {
        warning!("hostname: {e}");
    }
    if sys.random_ready() {
        info!("entropy: kernel RNG ready");
        return;
    }
    warning!(
        "entropy: kernel RNG not initialised yet; waiting (the kernel's jitter entropy seeds it)"
    );
    let started = sys.now();
    match sys.wait_random() {
        Ok(()) => info!(
            "entropy: kernel RNG ready after {} ms",
            sys.now().saturating_sub(started).as_millis()
        ),
        Err(e) => error!("entropy: waiting for the kernel RNG failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, Op};

    fn position(sys: &FakeSystem, pred: impl Fn(&Op) -> bool) -> usize {
        sys.ops()
            .iter()
            .position(pred)
            .expect("operation not found")
    }

    #[test]
    fn steps_run_in_order_from_initramfs_to_root() {
        let mut sys = FakeSystem::new();
        sys.add_file(
            "/proc/cmdline",
            "console=ttyS0 ros.platform=qemu ros.bogus\n",
        );
        sys.add_file(modules::LIST_PATH, "squashfs\n");
        sys.add_file(
            "/lib/modules/6.1.0-test/modules.dep",
            "kernel/fs/squashfs/squashfs.ko:\n",
        );
        sys.add_file(switch_root::ROOT_IMAGE, "hsqs");
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "var",
            "system/state",
            "etc/ros",
        ] {
            sys.add_dir(Path::new("/newroot").join(dir));
        }
        sys.random_ready = false;
        let booted = boot(&mut sys);
        assert_eq!(booted.cmdline.platform, "qemu");
        assert_eq!(booted.cmdline.warnings.len(), 1);
        assert_eq!(
            booted.root,
            RootOutcome::Switched {
                device: "/dev/loop0".into()
            }
        );

        let cad = position(&sys, |op| *op == Op::DisableCad);
        let proc_ = position(
            &sys,
            |op| matches!(op, Op::Mount(c) if c.target == Path::new("/proc")),
        );
        let saved = position(
            &sys,
            |op| matches!(op, Op::WriteFile(p, _) if p == Path::new(CMDLINE_COPY)),
        );
        let module = position(&sys, |op| matches!(op, Op::LoadModule(_)));
        let root = position(&sys, |op| matches!(op, Op::AttachLoop(_)));
        let chroot = position(&sys, |op| matches!(op, Op::Chroot(_)));
        let shared = position(&sys, |op| *op == Op::Mount(mounts::shared_root()));
        let lo = position(&sys, |op| *op == Op::LoopbackUp);
        let host = position(&sys, |op| *op == Op::SetHostname("ros".into()));
        let rng = position(&sys, |op| *op == Op::WaitRandom);
        let control = position(
            &sys,
            |op| matches!(op, Op::ListenControl(p) if p == Path::new(control::SOCKET_PATH)),
        );
        let order = [
            cad, proc_, saved, module, root, chroot, shared, lo, host, rng, control,
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "out of order: {order:?} in {:#?}",
            sys.ops()
        );
        assert_eq!(
            sys.file(CMDLINE_COPY),
            Some("console=ttyS0 ros.platform=qemu ros.bogus")
        );
    }

    #[test]
    fn without_a_root_image_boot_still_finishes() {
        let mut sys = FakeSystem::new();
        let booted = boot(&mut sys);
        assert!(matches!(booted.root, RootOutcome::StayedInInitramfs { .. }));
        assert_eq!(booted.cmdline, Cmdline::default());
        assert!(!sys.ops().iter().any(|op| matches!(op, Op::Chroot(_))));
        assert!(
            sys.ops()
                .iter()
                .any(|op| matches!(op, Op::ListenControl(_)))
        );
        assert!(!sys.ops().contains(&Op::WaitRandom), "the RNG was ready");
        assert_eq!(sys.ops().last(), Some(&Op::WatchPowerButton));
    }

    #[test]
    fn a_panicking_step_does_not_stop_the_next() {
        let mut ran = false;
        assert_eq!(step("boom", || -> u8 { panic!("step bug") }), None);
        step("after", || ran = true);
        assert!(ran);
    }
}
