//! Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
//! the holder renews `renewTime` every `retry`; another candidate takes the lease only once
//! `renewTime + leaseDurationSeconds` has passed. A holder that cannot renew within
//! `renew_deadline` (shorter than the lease duration) stops acting before anyone else may start.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Timings of an election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl Default for Timing {
    /// kube-controller-manager's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// One candidate for one lease.
#[derive(Clone)]
pub struct Elector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    NotHeld,
}

impl Elector {
    /// A candidate for the Lease `namespace/name` under `identity` (unique per process).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Elector {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    /// Tries once to acquire or renew the lease.
    async fn try_acquire(&self) -> kube::Result<Attempt> {
        let now = MicroTime(jiff::Timestamp::now());
        let secs = self.timing.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::NotHeld),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() {
            let duration = spec.lease_duration_seconds.unwrap_or(secs).max(1) as i64;
            let expires = spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_second() + duration)
                .unwrap_or(0);
            if now.0.as_second() < expires {
                return Ok(Attempt::NotHeld);
            }
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now);
        // The replace carries the resourceVersion we read: a concurrent taker gets a conflict.
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::NotHeld),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the lease.
    async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::NotHeld) => {}
                Err(e) => tracing::debug!(lease = %self.name, "acquiring: {e}"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renews until a renewal fails for longer than the renew deadline (leadership lost).
    async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry).await;
            let attempt = tokio::time::timeout(self.timing.retry, self.try_acquire()).await;
            match attempt {
                Ok(Ok(Attempt::Held)) => last_ok = tokio::time::Instant::now(),
                Ok(Ok(Attempt::NotHeld)) => {
                    tracing::warn!(lease = %self.name, "another holder took the lease");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(lease = %self.name, "renewing: {e}"),
                Err(_) => tracing::warn!(lease = %self.name, "renewing timed out"),
            }
            if last_ok.elapsed() + self.timing.retry >= self.timing.renew_deadline {
                tracing::warn!(lease = %self.name, "could not renew within the deadline");
                return;
            }
        }
    }

    /// Runs `work` whenever this candidate leads, and stops it (drops the future) as soon as
    /// leadership is lost; then campaigns again. Never returns.
    pub async fn run<F, Fut>(self, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            self.acquire().await;
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            // The work runs inside this future, not as a spawned task: losing the lease, or
            // the caller dropping `run`, drops the work at once, before anyone else can lead.
            tokio::select! {
                _ = self.keep() => {}
                () = work() => tracing::warn!(lease = %self.name, "leader work ended"),
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "stopped leading");
        }
    }
}

/// A process-unique identity: host name, pid and a random suffix.
pub fn identity(component: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}_{component}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
