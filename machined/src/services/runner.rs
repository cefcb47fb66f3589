//! One task per service: waits for it to be wanted and for its dependencies, runs the process,
//! captures its output, restarts it with backoff and stops it with a deadline.

use super::{RestartPolicy, ServiceSpec, State, Supervisor, Want};
use crate::logbuf::LogBuffer;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Delay before restart number `failures` (1, 2, ...): 250 ms doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << failures.saturating_sub(1).min(7));
    Duration::from_millis(ms.min(30_000))
}

/// A process that ran this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

pub fn spawn(sup: Supervisor, spec: ServiceSpec, log: LogBuffer) {
    tokio::spawn(async move {
        let Some(wanted) = sup.wanted(&spec.id) else {
            return;
        };
        run(sup, spec, log, wanted).await;
    });
}

enum Outcome {
    Exited(ExitStatus),
    Stop,
    Restart,
}

async fn run(
    sup: Supervisor,
    spec: ServiceSpec,
    log: LogBuffer,
    mut wanted: watch::Receiver<Want>,
) {
    let id = spec.id.clone();
    let mut deps_changed = sup.on_change();
    let mut failures: u32 = 0;
    let mut restarted = false;
    loop {
        let want = *wanted.borrow_and_update();
        if !want.run {
            sup.update(&id, State::Stopped, None, "", false);
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        }
        match sup.dependencies_running(&spec.depends_on) {
            Err(msg) => {
                sup.update(&id, State::Failed, None, msg, false);
                // A dependency may be defined later (the cluster role replaces services).
                deps_changed.borrow_and_update();
                tokio::select! {
                    r = wanted.changed() => if r.is_err() { return },
                    _ = deps_changed.changed() => {}
                }
                continue;
            }
            Ok(false) => {
                let msg = format!("waiting for {}", spec.depends_on.join(", "));
                sup.update(&id, State::Waiting, None, msg, false);
                deps_changed.borrow_and_update();
                tokio::select! {
                    r = wanted.changed() => if r.is_err() { return },
                    _ = deps_changed.changed() => {}
                }
                continue;
            }
            Ok(true) => {}
        }

        sup.update(&id, State::Starting, None, "", false);
        let mut child = match start(&spec) {
            Ok(child) => child,
            Err(e) => {
                let msg = format!("cannot start {}: {e}", spec.command);
                log.push(format!("[supervisor] {msg}"));
                failures += 1;
                let delay = backoff(failures);
                sup.update(
                    &id,
                    State::Backoff,
                    None,
                    format!("{msg}; retrying in {delay:?}"),
                    false,
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    r = wanted.changed() => if r.is_err() { return },
                }
                continue;
            }
        };
        let pid = child.id();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, log.clone()));
        }
        log.push(format!(
            "[supervisor] started {} (pid {})",
            spec.command,
            pid.unwrap_or(0)
        ));
        sup.update(&id, State::Running, pid, "", restarted);
        restarted = false;
        let started = Instant::now();
        let _health = spec
            .health
            .clone()
            .map(|hc| AbortOnDrop(tokio::spawn(watch_health(sup.clone(), id.clone(), pid, hc))));

        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(s) => Outcome::Exited(s),
                Err(_) => Outcome::Stop,
            },
            outcome = stop_requested(&mut wanted, want) => outcome,
        };
        match outcome {
            Outcome::Exited(status) => {
                log.push(format!("[supervisor] {status}"));
                if started.elapsed() > STABLE_AFTER {
                    failures = 0;
                }
                let failed = !status.success();
                let again = match spec.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => failed,
                    RestartPolicy::Never => false,
                };
                if !again {
                    let state = if failed {
                        State::Failed
                    } else {
                        State::Finished
                    };
                    sup.update(&id, state, None, status.to_string(), false);
                    if wanted.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                failures += 1;
                let delay = backoff(failures);
                sup.update(
                    &id,
                    State::Backoff,
                    None,
                    format!("{status}; restarting in {delay:?}"),
                    false,
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    r = wanted.changed() => if r.is_err() { return },
                }
                restarted = true;
            }
            Outcome::Stop | Outcome::Restart => {
                let restart = matches!(outcome, Outcome::Restart);
                terminate(
                    &mut child,
                    Duration::from_secs(spec.stop_timeout_seconds),
                    &log,
                )
                .await;
                if restart {
                    restarted = true;
                    failures = 0;
                } else {
                    sup.update(&id, State::Stopped, None, "stopped on request", false);
                }
            }
        }
    }
}

/// Aborts a task when dropped (the health checks of a run end with the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks a running service's health: quickly until it first passes, then every interval.
async fn watch_health(sup: Supervisor, id: String, pid: Option<u32>, hc: super::HealthCheck) {
    loop {
        let outcome = super::health::check(&hc).await;
        let ok = outcome.is_ok();
        sup.set_health(&id, pid, outcome);
        let delay = if ok {
            Duration::from_secs(hc.interval_seconds.max(1))
        } else {
            super::health::STARTING_INTERVAL
        };
        tokio::time::sleep(delay).await;
    }
}

fn start(spec: &ServiceSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so stop signals reach the service's children too.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: only an async-signal-safe syscall (prctl) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // If machined dies, its services die too: a restarted machined starts them
            // again and must not find the old ones holding their ports.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// Resolves when the wanted state asks this run to end.
async fn stop_requested(wanted: &mut watch::Receiver<Want>, running: Want) -> Outcome {
    loop {
        if wanted.changed().await.is_err() {
            return Outcome::Stop;
        }
        let now = *wanted.borrow_and_update();
        if !now.run {
            return Outcome::Stop;
        }
        if now.generation != running.generation {
            return Outcome::Restart;
        }
    }
}

/// SIGTERM to the process group, then SIGKILL after `deadline`.
async fn terminate(child: &mut Child, deadline: Duration, log: &LogBuffer) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => {
            if let Ok(s) = status {
                log.push(format!("[supervisor] stopped: {s}"));
            }
        }
        Err(_) => {
            log.push(format!(
                "[supervisor] no exit {deadline:?} after SIGTERM: SIGKILL"
            ));
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
}

async fn pump(stream: impl AsyncRead + Unpin, log: LogBuffer) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(50), Duration::from_millis(30_000));
    }
}
