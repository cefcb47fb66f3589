//! Lifecycle hooks: preStop runs (exec, httpGet or tcpSocket, as a probe handler does)
//! before a terminating container gets SIGTERM, within the pod's grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use super::check;
use crate::agent::runtime::ContainerRuntime;

const SIGTERM: u32 = 15;

/// Runs the preStop hook of each running container in `running` (containerd ID and the
/// container's spec) at most `grace` long, then sends the container SIGTERM. Runs in the
/// background; the pod worker's grace-period SIGKILL still applies.
pub fn pre_stop_then_term(
    runtime: ContainerRuntime,
    running: Vec<(String, Container)>,
    ip: String,
    grace: Duration,
) {
    for (id, c) in running {
        let runtime = runtime.clone();
        let ip = ip.clone();
        tokio::spawn(async move {
            let hook = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
            if let Some(seconds) = hook
                .as_ref()
                .and_then(|h| h.sleep.as_ref())
                .map(|s| s.seconds)
            {
                tokio::time::sleep(grace.min(Duration::from_secs(seconds.max(0) as u64))).await;
            } else if let Some(h) = hook {
                let r = check::run(&as_probe(&h), &runtime, &id, &c, &ip, grace).await;
                if let Err(e) = r {
                    tracing::info!(container = %c.name, %id, error = %e, "preStop hook failed");
                }
            }
            if let Err(e) = runtime.kill(&id, SIGTERM).await {
                tracing::warn!(%id, error = format!("{e:#}"), "SIGTERM");
            }
        });
    }
}

/// Whether any container of `containers` has a preStop hook.
pub fn any_pre_stop<'a>(mut containers: impl Iterator<Item = &'a Container>) -> bool {
    containers.any(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))
}

fn as_probe(h: &LifecycleHandler) -> Probe {
    Probe {
        exec: h.exec.clone(),
        http_get: h.http_get.clone(),
        tcp_socket: h.tcp_socket.clone(),
        ..Default::default()
    }
}
