//! Startup, liveness and readiness probes of running containers. Each running container
//! with probes gets one background task (keyed by its containerd ID, so a restarted
//! container starts over); the pod worker reads the results on every sync: `started` and
//! `ready` go into the status, a liveness (or startup) failure makes the worker kill the
//! container so its restart policy applies.

mod check;
pub mod hooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::Notify;

use super::runtime::ContainerRuntime;

/// What the probes of one running container found so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    pub started: bool,
    pub ready: bool,
    /// Set once the liveness or startup probe failed `failureThreshold` times in a row.
    pub failed: Option<String>,
}

type Shared = Arc<Mutex<Found>>;

struct Tracker {
    found: Shared,
    task: tokio::task::AbortHandle,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
pub struct Probes {
    runtime: ContainerRuntime,
    trackers: Arc<Mutex<HashMap<String, Arc<Tracker>>>>,
    /// Containers being stopped after a failed probe, and since when.
    killing: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// Woken when a probe result changes, so the pod worker syncs at once.
    pub wake: Arc<Notify>,
}

fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

impl Probes {
    pub fn new(runtime: ContainerRuntime) -> Probes {
        Probes {
            runtime,
            trackers: Arc::default(),
            killing: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The probe results for running container `id` (container `c`), starting its probe
    /// task on first sight. `ip` is where httpGet and tcpSocket probes connect by default.
    pub fn observe(&self, id: &str, c: &Container, ip: &str) -> Found {
        if !has_probes(c) {
            return Found {
                started: true,
                ready: true,
                failed: None,
            };
        }
        let mut trackers = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = trackers.get(id) {
            return t.found.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        let initial = Found {
            started: c.startup_probe.is_none(),
            ready: false,
            failed: None,
        };
        let found: Shared = Arc::new(Mutex::new(initial.clone()));
        let task = tokio::spawn(run(
            found.clone(),
            self.runtime.clone(),
            id.to_string(),
            c.clone(),
            ip.to_string(),
            self.wake.clone(),
        ));
        trackers.insert(
            id.to_string(),
            Arc::new(Tracker {
                found,
                task: task.abort_handle(),
            }),
        );
        initial
    }

    /// Stops the probes of containers not in `running`.
    pub fn retain(&self, running: &std::collections::HashSet<String>) {
        self.trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| running.contains(id));
        self.killing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| running.contains(id));
    }

    /// Stops the probes of container `id` (it is no longer running).
    pub fn forget(&self, id: &str) {
        self.trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Records that container `id` is being stopped for a failed probe; `None` the first
    /// time (start stopping it), then how long ago that was.
    pub fn killing_since(&self, id: &str) -> Option<Duration> {
        let mut k = self.killing.lock().unwrap_or_else(|e| e.into_inner());
        match k.get(id) {
            Some(t) => Some(t.elapsed()),
            None => {
                k.insert(id.to_string(), std::time::Instant::now());
                None
            }
        }
    }
}

fn update(shared: &Shared, wake: &Notify, f: impl FnOnce(&mut Found)) -> bool {
    let mut found = shared.lock().unwrap_or_else(|e| e.into_inner());
    let before = found.clone();
    f(&mut found);
    if *found != before {
        wake.notify_one();
    }
    true
}

/// Runs one probe kind until `stop` says so: calls `on_result(ok, message)` after each
/// threshold crossing (successThreshold successes or failureThreshold failures in a row).
async fn probe_loop(
    probe: &Probe,
    runtime: &ContainerRuntime,
    id: &str,
    c: &Container,
    ip: &str,
    mut on_result: impl FnMut(bool, &str) -> bool,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut successes, mut failures) = (0, 0);
    loop {
        let result = check::run(probe, runtime, id, c, ip, timeout).await;
        let keep_going = match result {
            Ok(()) => {
                successes += 1;
                failures = 0;
                successes < success_threshold || on_result(true, "")
            }
            Err(message) => {
                failures += 1;
                successes = 0;
                failures < failure_threshold || on_result(false, &message)
            }
        };
        if !keep_going {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

async fn run(
    tracker: Shared,
    runtime: ContainerRuntime,
    id: String,
    c: Container,
    ip: String,
    wake: Arc<Notify>,
) {
    if let Some(p) = &c.startup_probe {
        let mut passed = false;
        probe_loop(p, &runtime, &id, &c, &ip, |ok, message| {
            passed = ok;
            update(&tracker, &wake, |f| {
                if ok {
                    f.started = true;
                } else {
                    f.failed = Some(format!("Startup probe failed: {message}"));
                }
            });
            false
        })
        .await;
        if !passed {
            return;
        }
    }
    let liveness = async {
        if let Some(p) = &c.liveness_probe {
            probe_loop(p, &runtime, &id, &c, &ip, |ok, message| {
                if ok {
                    return true;
                }
                update(&tracker, &wake, |f| {
                    f.failed = Some(format!("Liveness probe failed: {message}"));
                });
                false
            })
            .await;
        }
    };
    let readiness = async {
        match &c.readiness_probe {
            Some(p) => {
                probe_loop(p, &runtime, &id, &c, &ip, |ok, _| {
                    update(&tracker, &wake, |f| f.ready = ok)
                })
                .await
            }
            None => {
                update(&tracker, &wake, |f| f.ready = true);
            }
        }
    };
    tokio::join!(liveness, readiness);
}
