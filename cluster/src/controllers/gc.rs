//! Garbage collection by ownerReferences: a dependent whose owners are all gone is deleted
//! (background propagation); an owner being deleted with the `foregroundDeletion` finalizer
//! keeps it until its dependents are gone; with the `orphan` finalizer its dependents lose
//! their reference to it and survive. Sweeps run when an object is deleted or marked for
//! deletion, and every 30 s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

/// The kinds the collector looks at: (resource, namespaced).
fn kinds() -> Vec<(ApiResource, bool)> {
    vec![
        (ApiResource::erase::<Deployment>(&()), true),
        (ApiResource::erase::<ReplicaSet>(&()), true),
        (ApiResource::erase::<DaemonSet>(&()), true),
        (ApiResource::erase::<ControllerRevision>(&()), true),
        (ApiResource::erase::<Job>(&()), true),
        (ApiResource::erase::<Pod>(&()), true),
        (ApiResource::erase::<Service>(&()), true),
        (ApiResource::erase::<Endpoints>(&()), true),
        (ApiResource::erase::<EndpointSlice>(&()), true),
        (ApiResource::erase::<ConfigMap>(&()), true),
        (ApiResource::erase::<Secret>(&()), true),
        (ApiResource::erase::<ServiceAccount>(&()), true),
        (ApiResource::erase::<Node>(&()), false),
    ]
}

pub async fn run(client: Client) {
    let kick = Arc::new(Notify::new());
    for (ar, _) in kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let kick = kick.clone();
        tokio::spawn(async move {
            watcher(api, watcher::Config::default())
                .default_backoff()
                .for_each(|ev| {
                    let deleting = match &ev {
                        Ok(watcher::Event::Delete(_)) => true,
                        Ok(watcher::Event::Apply(o)) => o.metadata.deletion_timestamp.is_some(),
                        _ => false,
                    };
                    if deleting {
                        kick.notify_one();
                    }
                    futures_util::future::ready(())
                })
                .await;
        });
    }
    let mut retry = Duration::from_millis(200);
    loop {
        let pause = match sweep(&client).await {
            Ok(true) => {
                retry = (retry * 2).min(Duration::from_secs(5));
                retry
            }
            Ok(false) => {
                retry = Duration::from_millis(200);
                Duration::from_secs(30)
            }
            Err(e) => {
                tracing::warn!("garbage collector: {e}");
                retry = (retry * 2).min(Duration::from_secs(30));
                retry
            }
        };
        tokio::select! {
            _ = kick.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

struct Obj {
    ar: ApiResource,
    namespaced: bool,
    o: DynamicObject,
}

impl Obj {
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match (&self.o.metadata.namespace, self.namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &self.ar),
            _ => Api::all_with(client.clone(), &self.ar),
        }
    }
    fn name(&self) -> String {
        self.o.metadata.name.clone().unwrap_or_default()
    }
}

/// Whether the owner `kind`/`name` with `uid` still exists (a live read, never a cache).
async fn owner_exists(
    client: &Client,
    ns: Option<&str>,
    kind: &str,
    name: &str,
    uid: &str,
) -> Result<bool, kube::Error> {
    let Some((ar, namespaced)) = kinds().into_iter().find(|(ar, _)| ar.kind == kind) else {
        return Ok(true); // A kind we do not know: never collect on its account.
    };
    let api: Api<DynamicObject> = match (ns, namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    Ok(api
        .get_opt(name)
        .await?
        .is_some_and(|o| o.metadata.uid.as_deref() == Some(uid)))
}

/// One pass; returns whether work is still in flight (owners waiting on dependents).
async fn sweep(client: &Client) -> Result<bool, kube::Error> {
    let mut all = Vec::new();
    for (ar, namespaced) in kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        for o in api.list(&ListParams::default()).await?.items {
            all.push(Obj {
                ar: ar.clone(),
                namespaced,
                o,
            });
        }
    }
    let uids: HashSet<String> = all
        .iter()
        .filter_map(|o| o.o.metadata.uid.clone())
        .collect();
    // Dependents per owner uid.
    let mut dependents: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, o) in all.iter().enumerate() {
        for r in o.o.metadata.owner_references.iter().flatten() {
            dependents.entry(r.uid.clone()).or_default().push(i);
        }
    }
    let mut busy = false;

    // Owners being deleted with a propagation finalizer.
    for o in &all {
        if o.o.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let uid = o.o.metadata.uid.clone().unwrap_or_default();
        let finalizers = o.o.metadata.finalizers.clone().unwrap_or_default();
        let deps = dependents.get(&uid).cloned().unwrap_or_default();
        if finalizers.iter().any(|f| f == "orphan") {
            for &i in &deps {
                let d = &all[i];
                let refs: Vec<_> =
                    d.o.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                ignore_missing(
                    d.api(client)
                        .patch(
                            &d.name(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
                        )
                        .await,
                )?;
            }
            busy |= !remove_finalizer(client, o, "orphan").await?;
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            let live: Vec<&usize> = deps.iter().collect();
            if live.is_empty() {
                busy |= !remove_finalizer(client, o, "foregroundDeletion").await?;
            } else {
                busy = true;
                for &&i in &live {
                    let d = &all[i];
                    if d.o.metadata.deletion_timestamp.is_none() {
                        ignore_missing(
                            d.api(client)
                                .delete(&d.name(), &DeleteParams::foreground())
                                .await
                                .map(|_| ()),
                        )?;
                    }
                }
            }
        }
    }

    // Terminating pods on nodes that do not exist have no kubelet to finish them.
    let nodes: HashSet<&str> = all
        .iter()
        .filter(|o| o.ar.kind == "Node")
        .filter_map(|o| o.o.metadata.name.as_deref())
        .collect();
    for o in all
        .iter()
        .filter(|o| o.ar.kind == "Pod" && o.o.metadata.deletion_timestamp.is_some())
    {
        let node = o.o.data["spec"]["nodeName"].as_str().unwrap_or("");
        if !node.is_empty() && !nodes.contains(node) {
            tracing::info!(
                "deleting orphaned pod {}/{} (node {node} is gone)",
                o.o.metadata.namespace.as_deref().unwrap_or(""),
                o.name()
            );
            ignore_missing(
                o.api(client)
                    .delete(&o.name(), &DeleteParams::default().grace_period(0))
                    .await
                    .map(|_| ()),
            )?;
        }
    }

    // Dependents whose owners are all gone.
    for o in &all {
        let refs: Vec<_> = o.o.metadata.owner_references.iter().flatten().collect();
        if refs.is_empty() || o.o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if refs.iter().any(|r| uids.contains(&r.uid)) {
            continue;
        }
        let ns = o.o.metadata.namespace.as_deref();
        let mut all_gone = true;
        for r in &refs {
            if owner_exists(client, ns, &r.kind, &r.name, &r.uid).await? {
                all_gone = false;
                break;
            }
        }
        if all_gone {
            tracing::info!(
                "garbage collecting {} {}/{}",
                o.ar.kind,
                ns.unwrap_or(""),
                o.name()
            );
            busy = true;
            ignore_missing(
                o.api(client)
                    .delete(&o.name(), &DeleteParams::background())
                    .await
                    .map(|_| ()),
            )?;
        }
    }
    Ok(busy)
}

/// Removes finalizer `f` with a compare-and-swap on the resourceVersion, re-reading the
/// object when it changed meanwhile. Whether it is gone (false: still racing, try later).
async fn remove_finalizer(client: &Client, o: &Obj, f: &str) -> Result<bool, kube::Error> {
    let api = o.api(client);
    let mut cur = o.o.clone();
    for _ in 0..5 {
        let left: Vec<String> = cur
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .cloned()
            .collect();
        let rv = cur.metadata.resource_version.clone();
        let patch = json!({"metadata": {"finalizers": left, "resourceVersion": rv}});
        match api
            .patch(&o.name(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&o.name()).await? {
                Some(fresh) if fresh.metadata.uid == o.o.metadata.uid => cur = fresh,
                _ => return Ok(true),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
