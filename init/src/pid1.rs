//! PID 1's life after boot: supervise machined, reap everything, wait for a power request,
//! shut down. Every turn of the loop runs under catch_unwind, so a bug logs and the loop goes
//! on — PID 1 never returns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::backoff::Backoff;
use crate::boot::{self, Booted};
use crate::console::{debug, error, info};
use crate::control;
use crate::power::PowerAction;
use crate::reaper;
use crate::shutdown;
use crate::supervisor::Supervisor;
use crate::switch_root::MACHINED_FALLBACK;
use crate::system::{Event, System};

pub const MACHINED: &str = "/sbin/machined";

pub fn run(sys: &mut impl System) -> ! {
    let init_started = sys.now();
    info!(
        "ros init starting, {:.3}s after kernel start",
        init_started.as_secs_f64()
    );
    let booted = boot::boot(sys);
    let mut supervisor = machined_supervisor(&booted, sys.now());
    loop {
        serve_and_shut_down(sys, &mut supervisor, init_started);
    }
}

/// Waits for a power request and carries it out. Returns only if the machine did not go down
/// (reboot(2) failed or the sequence panicked); requests are taken again by then.
pub fn serve_and_shut_down(
    sys: &mut impl System,
    supervisor: &mut Supervisor,
    init_started: Duration,
) {
    let action = serve(sys, supervisor, init_started);
    let policy = shutdown::Policy::default();
    let finished = catch_unwind(AssertUnwindSafe(|| {
        shutdown::run(sys, supervisor, action, &policy)
    }));
    if finished.is_err() {
        error!("shutdown panicked");
    }
    error!("PID 1 stays up and keeps reaping; another power request tries again");
    if let Err(e) = sys.listen_control(Path::new(control::SOCKET_PATH)) {
        error!("control: cannot listen again: {e}");
    }
    sys.watch_power_button();
}

/// When everything else failed: reap forever, and nothing else.
pub fn last_resort(sys: &mut impl System) -> ! {
    loop {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            sys.wait_events(Some(Duration::from_secs(5)));
            reaper::reap(sys);
        }));
    }
}

pub fn machined_supervisor(booted: &Booted, now: Duration) -> Supervisor {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/bin:/usr/sbin:/bin:/sbin".to_string(),
        ),
        ("HOME".to_string(), "/".to_string()),
        (
            "ROS_INIT_SOCKET".to_string(),
            control::SOCKET_PATH.to_string(),
        ),
    ];
    env.extend(booted.cmdline.machined_env());
    Supervisor::new(
        vec![PathBuf::from(MACHINED), PathBuf::from(MACHINED_FALLBACK)],
        env,
        Backoff::default(),
        now,
    )
}

/// The signal conventions: SIGINT (Ctrl-Alt-Del) and SIGTERM reboot, SIGPWR and SIGUSR2 power off.
pub fn power_request(event: Event) -> Option<PowerAction> {
    match event {
        Event::Control(action) => Some(action),
        Event::PowerButton => Some(PowerAction::Poweroff),
        Event::Signal(Signal::SIGINT | Signal::SIGTERM) => Some(PowerAction::Reboot),
        Event::Signal(Signal::SIGPWR | Signal::SIGUSR2) => Some(PowerAction::Poweroff),
        Event::Signal(_) => None,
    }
}

/// Supervises and reaps until a power request arrives; returns it.
pub fn serve(
    sys: &mut impl System,
    supervisor: &mut Supervisor,
    init_started: Duration,
) -> PowerAction {
    let mut timing_logged = supervisor.starts() > 0;
    loop {
        let turn = catch_unwind(AssertUnwindSafe(|| {
            one_turn(sys, supervisor, &mut timing_logged, init_started)
        }));
        match turn {
            Ok(Some(action)) => return action,
            Ok(None) => {}
            Err(_) => {
                error!("main loop: a turn panicked; PID 1 carries on");
                // Do not spin if the bug repeats, but still honour power requests.
                let events = catch_unwind(AssertUnwindSafe(|| {
                    sys.wait_events(Some(Duration::from_secs(1)))
                }));
                if let Some(action) = events
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(power_request)
                {
                    return action;
                }
            }
        }
    }
}

fn one_turn(
    sys: &mut impl System,
    supervisor: &mut Supervisor,
    timing_logged: &mut bool,
    init_started: Duration,
) -> Option<PowerAction> {
    let now = sys.now();
    if supervisor.tick(sys, now).is_some() && !*timing_logged {
        *timing_logged = true;
        info!(
            "boot timing: init_start={:.3}s machined_exec={:.3}s",
            init_started.as_secs_f64(),
            now.as_secs_f64()
        );
    }
    let timeout = supervisor.deadline().map(|at| at.saturating_sub(sys.now()));
    let events = sys.wait_events(timeout);
    let (exited, _) = reaper::reap(sys);
    let now = sys.now();
    for (pid, status) in exited {
        if !supervisor.on_exit(pid, status, now) {
            debug!("reaped pid {pid} ({status})");
        }
    }
    let mut request = None;
    for event in events {
        match power_request(event) {
            Some(action) => request = request.or(Some(action)),
            None if event == Event::Signal(Signal::SIGCHLD) => {}
            None => info!("ignoring {event:?}"),
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline;
    use crate::fake::{FakeSystem, Op, Scripted};
    use crate::switch_root::RootOutcome;
    use crate::system::ExitStatus;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn booted() -> Booted {
        Booted {
            cmdline: cmdline::parse("ros.platform=qemu"),
            root: RootOutcome::StayedInInitramfs {
                reason: "test".into(),
            },
        }
    }

    #[test]
    fn machined_is_restarted_after_it_is_killed_and_orphans_are_reaped() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        sys.add_orphan(400, crate::fake::OnTerm::Ignore);
        let mut sup = machined_supervisor(&booted(), sys.now());
        sys.at(
            secs(2),
            Scripted::Exit(100, ExitStatus::Signal(Signal::SIGKILL)),
        );
        sys.at(secs(3), Scripted::Exit(400, ExitStatus::Code(0)));
        sys.at(secs(4), Scripted::Exit(101, ExitStatus::Code(2)));
        sys.at(secs(10), Scripted::Signal(Signal::SIGHUP));
        sys.at(secs(11), Scripted::Control(PowerAction::Poweroff));
        let action = serve(&mut sys, &mut sup, Duration::ZERO);
        assert_eq!(action, PowerAction::Poweroff);
        let spawned = sys.spawned();
        assert_eq!(spawned.len(), 3, "{spawned:?}");
        assert!(spawned.iter().all(|(p, _)| p == &PathBuf::from(MACHINED)));
        assert_eq!(sup.starts(), 3);
        assert!(!sys.is_alive(400), "the orphan was not reaped");
        let Op::Spawn(spec) = sys
            .ops()
            .iter()
            .find(|op| matches!(op, Op::Spawn(_)))
            .unwrap()
        else {
            unreachable!()
        };
        assert!(
            spec.env
                .contains(&("ROS_PLATFORM".to_string(), "qemu".to_string()))
        );
        assert!(spec.env.contains(&(
            "ROS_INIT_SOCKET".to_string(),
            control::SOCKET_PATH.to_string()
        )));
    }

    #[test]
    fn restarts_wait_for_the_backoff() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        let start = sys.now();
        let mut sup = machined_supervisor(&booted(), start);
        // machined dies right away three times; the starts are 0.5 s, then 1 s, then 2 s apart.
        sys.at(start, Scripted::Exit(100, ExitStatus::Code(1)));
        sys.at(
            start + Duration::from_millis(500),
            Scripted::Exit(101, ExitStatus::Code(1)),
        );
        sys.at(
            start + Duration::from_millis(1500),
            Scripted::Exit(102, ExitStatus::Code(1)),
        );
        sys.at(
            start + Duration::from_millis(3499),
            Scripted::Signal(Signal::SIGPWR),
        );
        assert_eq!(
            serve(&mut sys, &mut sup, Duration::ZERO),
            PowerAction::Poweroff
        );
        // The fourth start is due 3.5 s after the first, just after the power request.
        assert_eq!(sys.spawned().len(), 3);
    }

    #[test]
    fn signals_map_to_power_actions() {
        assert_eq!(
            power_request(Event::Signal(Signal::SIGINT)),
            Some(PowerAction::Reboot)
        );
        assert_eq!(
            power_request(Event::Signal(Signal::SIGTERM)),
            Some(PowerAction::Reboot)
        );
        assert_eq!(
            power_request(Event::Signal(Signal::SIGPWR)),
            Some(PowerAction::Poweroff)
        );
        assert_eq!(
            power_request(Event::Signal(Signal::SIGUSR2)),
            Some(PowerAction::Poweroff)
        );
        assert_eq!(power_request(Event::Signal(Signal::SIGHUP)), None);
        assert_eq!(power_request(Event::Signal(Signal::SIGCHLD)), None);
        assert_eq!(
            power_request(Event::Control(PowerAction::Halt)),
            Some(PowerAction::Halt)
        );
        assert_eq!(
            power_request(Event::PowerButton),
            Some(PowerAction::Poweroff)
        );
    }

    #[test]
    fn the_power_button_powers_off() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        let mut sup = machined_supervisor(&booted(), sys.now());
        sys.at(secs(7), Scripted::PowerButton);
        assert_eq!(
            serve(&mut sys, &mut sup, Duration::ZERO),
            PowerAction::Poweroff
        );
        assert_eq!(sys.now(), secs(7));
    }

    #[test]
    fn a_panic_in_the_loop_is_survived() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        let mut sup = machined_supervisor(&booted(), sys.now());
        sys.at(secs(1), Scripted::Panic);
        sys.at(secs(5), Scripted::Exit(100, ExitStatus::Code(3)));
        sys.at(secs(9), Scripted::Signal(Signal::SIGINT));
        assert_eq!(
            serve(&mut sys, &mut sup, Duration::ZERO),
            PowerAction::Reboot
        );
        // Still supervising after the panic: machined was restarted.
        assert_eq!(sys.spawned().len(), 2);
    }

    #[test]
    fn a_failed_reboot_leaves_pid_1_serving_requests() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        let mut sup = machined_supervisor(&booted(), sys.now());
        sys.at(secs(3), Scripted::Control(PowerAction::Reboot));
        sys.at(secs(60), Scripted::Signal(Signal::SIGPWR));
        // The fake's reboot(2) always fails.
        serve_and_shut_down(&mut sys, &mut sup, Duration::ZERO);
        let after_first = sys.ops().len();
        assert_eq!(
            sys.ops()[after_first - 2],
            Op::ListenControl(control::SOCKET_PATH.into())
        );
        assert_eq!(sys.ops()[after_first - 1], Op::WatchPowerButton);
        serve_and_shut_down(&mut sys, &mut sup, Duration::ZERO);
        let reboots: Vec<&Op> = sys
            .ops()
            .iter()
            .filter(|op| matches!(op, Op::Reboot(_)))
            .collect();
        assert_eq!(
            reboots,
            vec![
                &Op::Reboot(PowerAction::Reboot),
                &Op::Reboot(PowerAction::Poweroff)
            ]
        );
        assert_eq!(
            sup.starts(),
            1,
            "machined stays stopped after a shutdown began"
        );
    }

    #[test]
    fn from_request_to_reboot() {
        let mut sys = FakeSystem::new();
        sys.add_file(MACHINED, "elf");
        sys.add_file(
            "/proc/self/mountinfo",
            "1 0 0:1 / / rw - rootfs rootfs rw\n2 1 0:2 / /run rw - tmpfs tmpfs rw\n",
        );
        let mut sup = machined_supervisor(&booted(), sys.now());
        sys.at(secs(3), Scripted::Control(PowerAction::Poweroff));
        let action = serve(&mut sys, &mut sup, Duration::ZERO);
        shutdown::run(&mut sys, &mut sup, action, &shutdown::Policy::default());
        let tail: Vec<&Op> = sys.ops().iter().skip(1).collect();
        assert_eq!(tail[0], &Op::StopControl);
        assert_eq!(tail[1], &Op::Kill(100, Signal::SIGTERM));
        assert_eq!(tail.last().unwrap(), &&Op::Reboot(PowerAction::Poweroff));
        assert!(tail.contains(&&Op::Umount("/run".into())));
        assert_eq!(
            sup.starts(),
            1,
            "machined must not be restarted during shutdown"
        );
    }
}
