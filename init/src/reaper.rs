//! Collects every exited child (machined and orphans re-parented to PID 1) without blocking.

use crate::system::{ExitStatus, Pid, System, Wait};

/// Everything that has exited since the last call, in the order the kernel reports it.
/// The boolean is true when no child is left at all.
pub fn reap(sys: &mut impl System) -> (Vec<(Pid, ExitStatus)>, bool) {
    let mut exited = Vec::new();
    loop {
        match sys.try_wait_any() {
            Wait::Exited(pid, status) => exited.push((pid, status)),
            Wait::NoneExited => return (exited, false),
            Wait::NoChildren => return (exited, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, OnTerm, Scripted};
    use nix::sys::signal::Signal;
    use std::time::Duration;

    #[test]
    fn reaps_everything_that_exited_including_orphans() {
        let mut sys = FakeSystem::new();
        sys.add_orphan(700, OnTerm::Ignore);
        sys.add_orphan(701, OnTerm::Ignore);
        sys.add_orphan(702, OnTerm::Ignore);
        sys.at(
            Duration::from_secs(1),
            Scripted::Exit(700, ExitStatus::Code(0)),
        );
        sys.at(
            Duration::from_secs(1),
            Scripted::Exit(702, ExitStatus::Signal(Signal::SIGSEGV)),
        );
        let mut exited = Vec::new();
        for _ in 0..2 {
            sys.wait_events(Some(Duration::from_secs(5)));
            let (mut batch, none_left) = reap(&mut sys);
            assert!(!none_left);
            exited.append(&mut batch);
        }
        assert_eq!(
            exited,
            vec![
                (700, ExitStatus::Code(0)),
                (702, ExitStatus::Signal(Signal::SIGSEGV))
            ]
        );
        assert_eq!(reap(&mut sys), (vec![], false));
        sys.kill(701, Signal::SIGKILL).unwrap();
        let (exited, none_left) = reap(&mut sys);
        assert_eq!(exited, vec![(701, ExitStatus::Signal(Signal::SIGKILL))]);
        assert!(none_left);
    }
}
