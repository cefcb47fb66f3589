//! The way down: machined first (SIGTERM, then up to 30 s to stop its services), then SIGTERM
//! to every process, a grace period, SIGKILL to what is left, sync, unmount everything in
//! reverse mount order (remount read-only what will not unmount), sync, reboot(2).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::console::{debug, error, info, warning};
use crate::mountinfo::{self, MountEntry};
use crate::power::PowerAction;
use crate::reaper;
use crate::supervisor::Supervisor;
use crate::system::{Event, MountCall, Pid, System, errno};

#[derive(Debug, Clone)]
pub struct Policy {
    pub machined_grace: Duration,
    pub term_grace: Duration,
    pub kill_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            machined_grace: Duration::from_secs(30),
            term_grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Done,
    TimedOut,
}

/// Runs the whole sequence; returns the error of reboot(2) if the kernel refused it.
pub fn run(
    sys: &mut impl System,
    supervisor: &mut Supervisor,
    action: PowerAction,
    policy: &Policy,
) -> std::io::Error {
    info!("shutdown: {action} requested");
    // Requests during shutdown would go unanswered, and open sockets and devices keep
    // /run and /dev busy.
    sys.stop_control();
    if let Some(pid) = supervisor.stop() {
        info!("shutdown: asking machined (pid {pid}) to stop its services");
        match sys.kill(pid, Signal::SIGTERM) {
            Ok(()) => {
                let deadline = sys.now() + policy.machined_grace;
                if wait(sys, deadline, Some(pid)) == Waited::TimedOut {
                    warning!(
                        "shutdown: machined still runs after {:?}",
                        policy.machined_grace
                    );
                }
            }
            Err(e) => warning!("shutdown: SIGTERM to machined: {e}"),
        }
    }

    info!("shutdown: sending SIGTERM to all processes");
    signal_all(sys, Signal::SIGTERM);
    let deadline = sys.now() + policy.term_grace;
    if wait(sys, deadline, None) == Waited::TimedOut {
        info!("shutdown: sending SIGKILL to the processes left");
        signal_all(sys, Signal::SIGKILL);
        let deadline = sys.now() + policy.kill_grace;
        if wait(sys, deadline, None) == Waited::TimedOut {
            warning!("shutdown: some processes survived SIGKILL (stuck in the kernel?)");
        }
    }

    sys.sync();
    match sys.read_to_string(Path::new("/proc/self/mountinfo")) {
        Ok(text) => {
            let report = unmount_all(sys, &mountinfo::parse(&text));
            info!(
                "shutdown: {} unmounted, {} remounted read-only, {} left as they were",
                report.unmounted, report.remounted_ro, report.failed
            );
        }
        Err(e) => error!("shutdown: cannot read /proc/self/mountinfo: {e}; nothing unmounted"),
    }
    let _ = sys.mount(&MountCall::remount_ro(Path::new("/")));
    sys.sync();
    info!("shutdown: {action} now");
    let err = sys.reboot(action);
    error!("shutdown: reboot(2) for {action} failed: {err}");
    err
}

fn signal_all(sys: &mut impl System, signal: Signal) {
    if let Err(e) = sys.kill(-1, signal)
        && errno(&e) != libc::ESRCH
    {
        warning!("shutdown: kill(-1, {}): {e}", signal.as_str());
    }
}

/// Reaps until `pid` exited (or, without a pid, until no child is left), or the deadline.
fn wait(sys: &mut impl System, deadline: Duration, pid: Option<Pid>) -> Waited {
    loop {
        let (exited, none_left) = reaper::reap(sys);
        for (child, status) in &exited {
            debug!("shutdown: pid {child} {status}");
        }
        let done = match pid {
            Some(pid) => none_left || exited.iter().any(|(child, _)| *child == pid),
            None => none_left,
        };
        if done {
            return Waited::Done;
        }
        let now = sys.now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        for event in sys.wait_events(Some(deadline - now)) {
            if event != Event::Signal(Signal::SIGCHLD) {
                debug!("shutdown: ignoring {event:?} while shutting down");
            }
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnmountReport {
    pub unmounted: usize,
    pub remounted_ro: usize,
    pub failed: usize,
}

/// Unmounts in reverse mount order; what cannot be unmounted is remounted read-only.
pub fn unmount_all(sys: &mut impl System, entries: &[MountEntry]) -> UnmountReport {
    let mut report = UnmountReport::default();
    for entry in mountinfo::unmount_order(entries) {
        let target = &entry.mount_point;
        match sys.umount(target) {
            Ok(()) => report.unmounted += 1,
            Err(umount_err) => match sys.mount(&MountCall::remount_ro(target)) {
                Ok(()) => {
                    debug!(
                        "shutdown: {} busy ({umount_err}); remounted read-only",
                        target.display()
                    );
                    report.remounted_ro += 1;
                }
                Err(e) => {
                    warning!(
                        "shutdown: cannot unmount {} ({umount_err}) nor remount it read-only ({e})",
                        target.display()
                    );
                    report.failed += 1;
                }
            },
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::fake::{FakeSystem, OnTerm, Op};
    use nix::mount::MsFlags;

    const MOUNTS: &str = "\
20 1 7:0 / / ro - squashfs /dev/loop0 ro
21 20 0:5 / /dev rw - devtmpfs devtmpfs rw
22 21 0:20 / /dev/pts rw - devpts devpts rw
24 20 0:22 / /proc rw - proc proc rw
25 20 0:23 / /sys rw - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
27 20 0:25 / /run rw - tmpfs tmpfs rw
29 20 0:27 / /var rw - tmpfs tmpfs rw
";

    fn steps(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Kill(pid, sig) => Some(format!("kill {pid} {}", sig.as_str())),
                Op::Sync => Some("sync".into()),
                Op::Umount(p) => Some(format!("umount {}", p.display())),
                Op::Mount(c) if c.flags.contains(MsFlags::MS_REMOUNT) => {
                    Some(format!("ro {}", c.target.display()))
                }
                Op::Reboot(a) => Some(format!("reboot {a}")),
                Op::StopControl => Some("stop control".into()),
                _ => None,
            })
            .collect()
    }

    fn running_machined(sys: &mut FakeSystem) -> Supervisor {
        sys.add_file("/sbin/machined", "elf");
        sys.add_file("/proc/self/mountinfo", MOUNTS);
        let mut sup = Supervisor::new(
            vec!["/sbin/machined".into()],
            vec![],
            Backoff::default(),
            sys.now(),
        );
        let now = sys.now();
        assert_eq!(sup.tick(sys, now), Some(100));
        sup
    }

    #[test]
    fn the_full_order_when_everything_stops_politely() {
        let mut sys = FakeSystem::new();
        let mut sup = running_machined(&mut sys);
        sys.add_orphan(300, OnTerm::ExitAfter(Duration::from_millis(200)));
        sys.clear_ops();
        run(
            &mut sys,
            &mut sup,
            PowerAction::Poweroff,
            &Policy::default(),
        );
        assert_eq!(
            steps(sys.ops()),
            vec![
                "stop control",
                "kill 100 SIGTERM",
                "kill -1 SIGTERM",
                "sync",
                "umount /var",
                "umount /run",
                "umount /sys/fs/cgroup",
                "umount /sys",
                "umount /proc",
                "umount /dev/pts",
                "umount /dev",
                "ro /",
                "sync",
                "reboot poweroff",
            ]
        );
        assert!(!sys.is_alive(100) && !sys.is_alive(300));
    }

    #[test]
    fn stragglers_get_sigkill_after_the_grace_period() {
        let mut sys = FakeSystem::new();
        sys.on_term = OnTerm::Ignore;
        let mut sup = running_machined(&mut sys);
        sys.add_orphan(300, OnTerm::Ignore);
        let start = sys.now();
        sys.clear_ops();
        let policy = Policy::default();
        run(&mut sys, &mut sup, PowerAction::Reboot, &policy);
        let s = steps(sys.ops());
        assert_eq!(
            &s[..5],
            &[
                "stop control",
                "kill 100 SIGTERM",
                "kill -1 SIGTERM",
                "kill -1 SIGKILL",
                "sync"
            ]
        );
        assert_eq!(s.last().unwrap(), "reboot reboot");
        // machined got its full grace period, then everyone else theirs.
        assert_eq!(sys.now() - start, policy.machined_grace + policy.term_grace);
        assert!(!sys.is_alive(100) && !sys.is_alive(300));
    }

    #[test]
    fn busy_mounts_are_remounted_read_only() {
        let mut sys = FakeSystem::new();
        sys.fail_umount("/dev", libc::EBUSY);
        sys.fail_umount("/var", libc::EBUSY);
        sys.fail_remount("/var");
        let report = unmount_all(&mut sys, &mountinfo::parse(MOUNTS));
        assert_eq!(
            report,
            UnmountReport {
                unmounted: 5,
                remounted_ro: 1,
                failed: 1
            }
        );
        let s = steps(sys.ops());
        assert_eq!(&s[..3], &["umount /var", "ro /var", "umount /run"]);
        assert_eq!(&s[s.len() - 2..], &["umount /dev", "ro /dev"]);
    }

    #[test]
    fn without_machined_or_mountinfo_it_still_reboots() {
        let mut sys = FakeSystem::new();
        let mut sup = Supervisor::new(
            vec!["/sbin/machined".into()],
            vec![],
            Backoff::default(),
            sys.now(),
        );
        run(&mut sys, &mut sup, PowerAction::Halt, &Policy::default());
        assert_eq!(
            steps(sys.ops()),
            vec![
                "stop control",
                "kill -1 SIGTERM",
                "sync",
                "ro /",
                "sync",
                "reboot halt"
            ]
        );
    }
}
