//! The service supervisor: processes started directly (never through a shell), started after
//! their dependencies run, restarted with backoff, stopped with a deadline (SIGTERM, then
//! SIGKILL), their output kept in per-service ring buffers and size-capped files.

mod health;
mod runner;
mod spec;

pub use health::HealthCheck;
pub use spec::{RestartPolicy, ServiceSpec, load_specs};

use crate::events::EventBus;
use crate::logbuf::LogBuffer;
use crate::resources::ResourceStore;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Waiting,
    Starting,
    Running,
    Finished,
    Failed,
    Backoff,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Finished => "finished",
            State::Failed => "failed",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// A snapshot of one service, as listed by the API.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: String,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub message: String,
    pub since: String,
    pub depends_on: Vec<String>,
    /// None without a health check; else the last check's outcome (false until one passes).
    pub healthy: Option<bool>,
    /// Why the last health check failed.
    pub health_message: String,
}

impl Status {
    /// Running, and healthy if it has a check: what dependants wait for.
    pub fn is_up(&self) -> bool {
        self.state == State::Running && self.healthy != Some(false)
    }
}

struct Entry {
    status: Status,
    log: LogBuffer,
    /// Whether the service should be running (start/stop requests flip it).
    wanted: watch::Sender<Want>,
}

/// The wanted state of a service; `generation` changes on restart requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub run: bool,
    pub generation: u64,
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
    log_dir: PathBuf,
    resources: ResourceStore,
    events: EventBus,
    /// Bumped on every state change so dependants re-check their dependencies.
    changed: watch::Sender<u64>,
    /// Where service output is also forwarded (`machine.logging`).
    logship: crate::logship::LogShipper,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {0:?} not found")]
    NotFound(String),
    #[error("service {0:?} is already defined")]
    Duplicate(String),
}

impl Supervisor {
    pub fn new(
        log_dir: PathBuf,
        resources: ResourceStore,
        events: EventBus,
        logship: crate::logship::LogShipper,
    ) -> Self {
        let (changed, _) = watch::channel(0);
        Self {
            inner: Arc::new(Mutex::new(BTreeMap::new())),
            log_dir,
            resources,
            events,
            changed,
            logship,
        }
    }

    /// Registers a service (not started yet).
    pub fn add(&self, spec: ServiceSpec) -> Result<(), ServiceError> {
        let mut inner = self.inner.lock().expect("supervisor lock");
        if inner.contains_key(&spec.id) {
            return Err(ServiceError::Duplicate(spec.id));
        }
        let log = LogBuffer::with_file(self.log_dir.join(format!("{}.log", spec.id)))
            .unwrap_or_else(|_| LogBuffer::new());
        log.ship_as(&spec.id, &self.logship);
        let (wanted, _) = watch::channel(Want {
            run: false,
            generation: 0,
        });
        let status = Status {
            id: spec.id.clone(),
            state: State::Stopped,
            pid: None,
            restarts: 0,
            message: String::new(),
            since: crate::clock::now_rfc3339(),
            depends_on: spec.depends_on.clone(),
            healthy: spec.health.as_ref().map(|_| false),
            health_message: String::new(),
        };
        let id = spec.id.clone();
        inner.insert(
            id.clone(),
            Entry {
                status: status.clone(),
                log: log.clone(),
                wanted,
            },
        );
        drop(inner);
        self.publish(&status);
        runner::spawn(self.clone(), spec, log);
        Ok(())
    }

    pub fn list(&self) -> Vec<Status> {
        self.inner
            .lock()
            .expect("supervisor lock")
            .values()
            .map(|e| e.status.clone())
            .collect()
    }

    pub fn status(&self, id: &str) -> Option<Status> {
        self.inner
            .lock()
            .expect("supervisor lock")
            .get(id)
            .map(|e| e.status.clone())
    }

    pub fn log(&self, id: &str) -> Option<LogBuffer> {
        self.inner
            .lock()
            .expect("supervisor lock")
            .get(id)
            .map(|e| e.log.clone())
    }

    fn set_want(&self, id: &str, f: impl FnOnce(&mut Want)) -> Result<(), ServiceError> {
        let inner = self.inner.lock().expect("supervisor lock");
        let entry = inner
            .get(id)
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        entry.wanted.send_modify(f);
        Ok(())
    }

    /// Stops a service, waits until it has stopped, and forgets it.
    pub async fn remove(&self, id: &str) -> Result<(), ServiceError> {
        let mut changed = self.changed.subscribe();
        self.stop(id)?;
        loop {
            changed.borrow_and_update();
            match self.status(id) {
                Some(s) if s.state != State::Stopped => {}
                _ => break,
            }
            if changed.changed().await.is_err() {
                break;
            }
        }
        // Dropping the entry drops its `wanted` sender, which ends the service's task.
        self.inner.lock().expect("supervisor lock").remove(id);
        self.resources.delete("Services", id);
        self.events.publish("service", format!("{id}: removed"));
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Whether a service with this id is defined.
    pub fn contains(&self, id: &str) -> bool {
        self.inner.lock().expect("supervisor lock").contains_key(id)
    }

    pub fn start(&self, id: &str) -> Result<(), ServiceError> {
        self.set_want(id, |w| w.run = true)
    }

    pub fn stop(&self, id: &str) -> Result<(), ServiceError> {
        self.set_want(id, |w| w.run = false)
    }

    pub fn restart(&self, id: &str) -> Result<(), ServiceError> {
        self.set_want(id, |w| {
            w.run = true;
            w.generation += 1;
        })
    }

    pub fn start_all(&self) {
        let ids: Vec<String> = self
            .inner
            .lock()
            .expect("supervisor lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.start(&id);
        }
    }

    /// Stops every service (each with its own deadline) and waits until all have stopped.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self
            .inner
            .lock()
            .expect("supervisor lock")
            .keys()
            .cloned()
            .collect();
        for id in &ids {
            let _ = self.stop(id);
        }
        let mut changed = self.changed.subscribe();
        loop {
            let all_down = self
                .list()
                .iter()
                .all(|s| matches!(s.state, State::Stopped | State::Finished | State::Failed));
            if all_down {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn wanted(&self, id: &str) -> Option<watch::Receiver<Want>> {
        self.inner
            .lock()
            .expect("supervisor lock")
            .get(id)
            .map(|e| e.wanted.subscribe())
    }

    pub(crate) fn on_change(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether every dependency of a service is running.
    pub(crate) fn dependencies_running(&self, deps: &[String]) -> Result<bool, String> {
        let inner = self.inner.lock().expect("supervisor lock");
        for dep in deps {
            match inner.get(dep) {
                None => return Err(format!("unknown dependency {dep:?}")),
                Some(e) if !e.status.is_up() => return Ok(false),
                Some(_) => {}
            }
        }
        Ok(true)
    }

    /// Records a state change of a service.
    pub(crate) fn update(
        &self,
        id: &str,
        state: State,
        pid: Option<u32>,
        message: impl Into<String>,
        restarted: bool,
    ) {
        let message = message.into();
        let status = {
            let mut inner = self.inner.lock().expect("supervisor lock");
            let Some(entry) = inner.get_mut(id) else {
                return;
            };
            let s = &mut entry.status;
            if s.state == state && s.pid == pid && s.message == message && !restarted {
                return;
            }
            if s.pid != pid && s.healthy.is_some() {
                // A new run (or none) starts unhealthy until its first check passes.
                s.healthy = Some(false);
                s.health_message.clear();
            }
            s.state = state;
            s.pid = pid;
            s.message = message;
            s.since = crate::clock::now_rfc3339();
            if restarted {
                s.restarts += 1;
            }
            s.clone()
        };
        self.events.publish(
            "service",
            format!("{}: {} {}", status.id, state.as_str(), status.message),
        );
        self.publish(&status);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records a health check outcome for the run with process `pid`.
    pub(crate) fn set_health(&self, id: &str, pid: Option<u32>, outcome: Result<(), String>) {
        let status = {
            let mut inner = self.inner.lock().expect("supervisor lock");
            let Some(entry) = inner.get_mut(id) else {
                return;
            };
            let s = &mut entry.status;
            // A late result from a run that already ended is ignored.
            if s.pid != pid || s.state != State::Running {
                return;
            }
            let healthy = outcome.is_ok();
            let message = outcome.err().unwrap_or_default();
            if s.healthy == Some(healthy) && s.health_message == message {
                return;
            }
            s.healthy = Some(healthy);
            s.health_message = message;
            s.clone()
        };
        let word = if status.healthy == Some(true) {
            "healthy".to_string()
        } else {
            format!("unhealthy: {}", status.health_message)
        };
        self.events
            .publish("service", format!("{}: {word}", status.id));
        self.publish(&status);
        self.changed.send_modify(|n| *n += 1);
    }

    fn publish(&self, s: &Status) {
        self.resources.put(
            "Services",
            &s.id,
            json!({
                "state": s.state.as_str(),
                "pid": s.pid,
                "restarts": s.restarts,
                "message": s.message,
                "dependsOn": s.depends_on,
                "healthy": s.healthy,
                "healthMessage": s.health_message,
            }),
        );
    }
}
