//! Keeps machined running: starts it, notices its exit, logs how it ended and restarts it
//! after a backoff delay. A state machine driven by `tick` (time) and `on_exit` (the reaper);
//! the main loop owns the waiting.

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::console::{error, info, warning};
use crate::system::{ExitStatus, Pid, SpawnSpec, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Start (again) once the clock reaches this time.
    StartAt(Duration),
    Running {
        pid: Pid,
        since: Duration,
    },
    /// Shutting down: no more restarts.
    Stopped,
}

pub struct Supervisor {
    /// The first one that exists is started.
    candidates: Vec<PathBuf>,
    env: Vec<(String, String)>,
    backoff: Backoff,
    state: State,
    starts: u32,
}

impl Supervisor {
    pub fn new(
        candidates: Vec<PathBuf>,
        env: Vec<(String, String)>,
        backoff: Backoff,
        now: Duration,
    ) -> Self {
        Supervisor {
            candidates,
            env,
            backoff,
            state: State::StartAt(now),
            starts: 0,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    /// How many times machined was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// When the main loop must wake up to start machined, if a start is pending.
    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::StartAt(at) => Some(at),
            _ => None,
        }
    }

    /// Starts machined if a start is due; returns its pid when it did.
    pub fn tick(&mut self, sys: &mut impl System, now: Duration) -> Option<Pid> {
        match self.state {
            State::StartAt(at) if now >= at => {}
            _ => return None,
        }
        let Some(path) = self.candidates.iter().find(|p| sys.exists(p)).cloned() else {
            let names: Vec<String> = self
                .candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let delay = self.backoff.after_exit(Duration::ZERO);
            error!(
                "machined: none of {} exists; trying again in {delay:?}",
                names.join(", ")
            );
            self.state = State::StartAt(now + delay);
            return None;
        };
        let spec = SpawnSpec {
            args: vec!["machined".to_string()],
            env: self.env.clone(),
            path: path.clone(),
        };
        match sys.spawn(&spec) {
            Ok(pid) => {
                self.starts += 1;
                info!("machined: started {} as pid {pid}", path.display());
                self.state = State::Running { pid, since: now };
                Some(pid)
            }
            Err(e) => {
                let delay = self.backoff.after_exit(Duration::ZERO);
                error!(
                    "machined: cannot start {}: {e}; trying again in {delay:?}",
                    path.display()
                );
                self.state = State::StartAt(now + delay);
                None
            }
        }
    }

    /// A child exited. Returns true when it was machined (then a restart is scheduled).
    pub fn on_exit(&mut self, pid: Pid, status: ExitStatus, now: Duration) -> bool {
        let State::Running {
            pid: running,
            since,
        } = self.state
        else {
            return false;
        };
        if running != pid {
            return false;
        }
        let ran_for = now.saturating_sub(since);
        let delay = self.backoff.after_exit(ran_for);
        warning!(
            "machined (pid {pid}) {status} after {:.1}s; restarting in {:.1}s",
            ran_for.as_secs_f64(),
            delay.as_secs_f64()
        );
        self.state = State::StartAt(now + delay);
        true
    }

    /// Stops restarting; returns machined's pid if it is running.
    pub fn stop(&mut self) -> Option<Pid> {
        let running = match self.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        };
        self.state = State::Stopped;
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, Op};
    use nix::sys::signal::Signal;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn supervisor(now: Duration) -> Supervisor {
        Supervisor::new(
            vec!["/sbin/machined".into(), "/run/ros/machined".into()],
            vec![("ROS_PLATFORM".into(), "qemu".into())],
            Backoff::new(ms(500), ms(4000), Duration::from_secs(60)),
            now,
        )
    }

    #[test]
    fn starts_the_first_candidate_that_exists_with_the_given_env() {
        let mut sys = FakeSystem::new();
        sys.add_file("/run/ros/machined", "elf");
        let mut sup = supervisor(ms(0));
        assert_eq!(sup.tick(&mut sys, ms(0)), Some(100));
        assert_eq!(
            sup.state(),
            State::Running {
                pid: 100,
                since: ms(0)
            }
        );
        let Op::Spawn(spec) = &sys.ops()[0] else {
            panic!("{:?}", sys.ops())
        };
        assert_eq!(spec.path, PathBuf::from("/run/ros/machined"));
        assert_eq!(spec.args, vec!["machined"]);
        assert_eq!(
            spec.env,
            vec![("ROS_PLATFORM".to_string(), "qemu".to_string())]
        );
        // Running: further ticks start nothing.
        assert_eq!(sup.tick(&mut sys, ms(10_000)), None);
        assert_eq!(sup.starts(), 1);
    }

    #[test]
    fn quick_exits_back_off_up_to_the_cap() {
        let mut sys = FakeSystem::new();
        sys.add_file("/sbin/machined", "elf");
        let mut sup = supervisor(ms(0));
        let mut now = ms(0);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let pid = sup.tick(&mut sys, now).expect("start is due");
            now += ms(100);
            assert!(sup.on_exit(pid, ExitStatus::Code(1), now));
            let State::StartAt(at) = sup.state() else {
                panic!("no restart scheduled")
            };
            delays.push((at - now).as_millis());
            // Not yet due a moment before.
            assert_eq!(sup.tick(&mut sys, at - ms(1)), None);
            now = at;
        }
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(sup.starts(), 6);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut sys = FakeSystem::new();
        sys.add_file("/sbin/machined", "elf");
        let mut sup = supervisor(ms(0));
        let mut now = ms(0);
        for _ in 0..4 {
            let pid = sup.tick(&mut sys, now).unwrap();
            sup.on_exit(pid, ExitStatus::Signal(Signal::SIGSEGV), now);
            now = sup.deadline().unwrap();
        }
        let pid = sup.tick(&mut sys, now).unwrap();
        let later = now + Duration::from_secs(600);
        sup.on_exit(pid, ExitStatus::Signal(Signal::SIGKILL), later);
        assert_eq!(sup.deadline(), Some(later + ms(500)));
    }

    #[test]
    fn other_children_are_not_machined() {
        let mut sys = FakeSystem::new();
        sys.add_file("/sbin/machined", "elf");
        let mut sup = supervisor(ms(0));
        let pid = sup.tick(&mut sys, ms(0)).unwrap();
        assert!(!sup.on_exit(pid + 1, ExitStatus::Code(0), ms(5)));
        assert_eq!(sup.state(), State::Running { pid, since: ms(0) });
    }

    #[test]
    fn a_missing_binary_or_failed_spawn_retries_with_backoff() {
        let mut sys = FakeSystem::new();
        let mut sup = supervisor(ms(0));
        assert_eq!(sup.tick(&mut sys, ms(0)), None);
        assert_eq!(sup.deadline(), Some(ms(500)));
        sys.add_file("/sbin/machined", "elf");
        sys.fail_spawn("/sbin/machined", libc::ENOEXEC);
        assert_eq!(sup.tick(&mut sys, ms(500)), None);
        assert_eq!(sup.deadline(), Some(ms(1500)));
        let mut sys = FakeSystem::new();
        sys.add_file("/sbin/machined", "elf");
        assert_eq!(sup.tick(&mut sys, ms(1500)), Some(100));
    }

    #[test]
    fn stop_hands_back_the_pid_and_ends_restarts() {
        let mut sys = FakeSystem::new();
        sys.add_file("/sbin/machined", "elf");
        let mut sup = supervisor(ms(0));
        let pid = sup.tick(&mut sys, ms(0)).unwrap();
        assert_eq!(sup.stop(), Some(pid));
        assert!(!sup.on_exit(pid, ExitStatus::Code(0), ms(10)));
        assert_eq!(sup.tick(&mut sys, Duration::from_secs(3600)), None);
        assert_eq!(sup.deadline(), None);
        assert_eq!(sup.stop(), None);
    }
}
