//! Keeps the zone snapshot current: reflectors over Services, EndpointSlices and Pods, and a
//! rebuild of the whole (small) zone after each batch of changes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use super::zone::Zone;

fn watch<K>(client: &kube::Client, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
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
                    tracing::warn!(error = %e, "cluster DNS watch");
                }
                changed.notify_one();
                async {}
            })
            .await;
    });
    (reader, task)
}

fn all<K: Clone + kube::Resource<DynamicType = ()>>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|o| (**o).clone()).collect()
}

/// Publishes a fresh zone into `out` after every change, from when all three watches have
/// listed once; runs until dropped.
pub async fn run(
    client: kube::Client,
    domain: Name,
    out: tokio::sync::watch::Sender<Option<Arc<Zone>>>,
) {
    let changed = Arc::new(Notify::new());
    let (services, t1) = watch::<Service>(&client, changed.clone());
    let (slices, t2) = watch::<EndpointSlice>(&client, changed.clone());
    let (pods, t3) = watch::<Pod>(&client, changed.clone());
    let _tasks = super::AbortOnDrop(vec![t1, t2, t3]);
    for ready in [
        services.wait_until_ready().await,
        slices.wait_until_ready().await,
        pods.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return;
        }
    }
    let mut serial: u32 = 1;
    loop {
        let zone = Zone::build(&domain, serial, &all(&services), &all(&slices), &all(&pods));
        let _ = out.send(Some(Arc::new(zone)));
        serial = serial.wrapping_add(1);
        changed.notified().await;
        // Let a burst of events (a list, a rollout) land before rebuilding.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
