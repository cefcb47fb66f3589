//! The service proxy: watches Services, EndpointSlices and Nodes and keeps the nftables
//! table `ip ros` equal to what they ask for (ClusterIP, NodePort and LoadBalancer to ready
//! endpoints, ClientIP session affinity, hairpin masquerade). Each change replaces the whole
//! table in one transaction; the table is deleted when the proxy stops.
//!
//! Known limit: replacing the table also empties the ClientIP affinity sets, so a client's
//! pinning restarts after any service/endpoint change (established connections are kept by
//! conntrack).

pub mod lb;
pub mod model;
pub mod nft;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

/// Deletes the proxy's table when dropped (the proxy stopping, also by a signal).
pub struct TableGuard;

impl Drop for TableGuard {
    fn drop(&mut self) {
        match nft::delete_table(render::TABLE) {
            Ok(()) => tracing::info!("service proxy rules removed"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "removing the proxy's rules"),
        }
    }
}

fn watch<K>(client: &kube::Client, notify: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(|ev| {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "service proxy watch");
                }
                notify.notify_one();
                async {}
            })
            .await;
    });
    (reader, task)
}

/// Runs the proxy until the future is dropped; an error that stops it is also logged (the
/// agent runs it as a background task).
pub async fn run(client: kube::Client) -> Result<()> {
    let result = run_until_error(client).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "service proxy stopped");
    }
    result
}

async fn run_until_error(client: kube::Client) -> Result<()> {
    nft::list_table("ros-probe").map_err(|e| e.context("service proxy"))?;
    let changed = Arc::new(Notify::new());
    let (services, t1) = watch::<Service>(&client, changed.clone());
    let (slices, t2) = watch::<EndpointSlice>(&client, changed.clone());
    let (nodes, t3) = watch::<Node>(&client, changed.clone());
    let tasks = [t1, t2, t3];
    let _stop = scopeguard(move || tasks.iter().for_each(|t| t.abort()));
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    let _ = nodes.wait_until_ready().await;
    let _guard = TableGuard;
    tracing::info!("service proxy started");
    let mut applied: Option<String> = None;
    loop {
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let sls: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let body = render::table_body(&model::service_ports(&svcs, &sls));
        // Re-apply when the rules changed or the table went missing.
        let missing = applied.is_some()
            && tokio::task::spawn_blocking(|| nft::list_table(render::TABLE))
                .await?
                .ok()
                .flatten()
                .is_none();
        if applied.as_deref() != Some(body.as_str()) || missing {
            let script = nft::replace_table(render::TABLE, &body);
            match tokio::task::spawn_blocking(move || nft::apply(&script)).await? {
                Ok(()) => {
                    tracing::debug!("service proxy rules applied");
                    applied = Some(body);
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "service proxy rules"),
            }
        }
        let addrs = lb::node_addresses(&nodes.state());
        for svc in &svcs {
            if let Some(ips) = lb::wanted_ingress(svc, &addrs)
                && let Err(e) = lb::set_ingress(&client, svc, &ips).await
            {
                tracing::warn!(error = format!("{e:#}"), "load balancer status");
            }
        }
        tokio::select! {
            _ = changed.notified() => {
                // Let a burst of events (a rollout) land before rendering again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

struct ScopeGuard<F: FnMut()>(F);

impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn scopeguard<F: FnMut()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(f)
}
