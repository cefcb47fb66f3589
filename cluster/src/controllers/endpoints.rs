//! Endpoints and EndpointSlices from Services with a selector and the pods they select:
//! ready pods are addresses, others notReadyAddresses (and `ready: false` in slices).
//! Both are owned by the Service, so the garbage collector removes them with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::{Ctx, Error};

pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

pub async fn run(client: Client) {
    let ctx = Ctx::new(client.clone());
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let stream = controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| {
                let ns = pod.metadata.namespace.clone();
                services
                    .state()
                    .into_iter()
                    .filter(|s| s.metadata.namespace == ns)
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, ctx);
    super::drain("endpoints", stream).await;
}

fn error_policy(s: Arc<Service>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!("endpoints for {}: {e}", super::key_of(&s.metadata));
    ctx.backoff.failed(&super::key_of(&s.metadata))
}

/// The container port a service port's targetPort names in this pod.
fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

type PortSet = Vec<(Option<String>, i32, String)>;

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = super::key_of(&svc.metadata);
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return Ok(Action::await_change()); // Endpoints of selector-less services are the user's.
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let sel: String = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut pods = pods.list(&ListParams::default().labels(&sel)).await?.items;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();

    // Group addresses by the ports they resolve to.
    let mut groups: BTreeMap<PortSet, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let mut slice_endpoints: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    for pod in &pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let set: PortSet = ports
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    target_port(pod, p.target_port.as_ref(), p.port)?,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let target = ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        let addr = EndpointAddress {
            ip: ip.clone(),
            node_name: node.clone(),
            target_ref: Some(target.clone()),
            hostname: None,
        };
        let ready = super::pod_ready(pod);
        let g = groups.entry(set.clone()).or_default();
        if ready {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
        slice_endpoints.entry(set).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            node_name: node,
            target_ref: Some(target),
            ..Default::default()
        });
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.clone(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                set.into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name,
                        port,
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    let ep = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    let eps: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    upsert(&eps, &name, ep, |a, b| a.subsets == b.subsets).await?;

    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut wanted = Vec::new();
    if slice_endpoints.is_empty() {
        slice_endpoints.insert(
            ports
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
                .collect(),
            Vec::new(),
        );
    }
    for (i, (set, endpoints)) in slice_endpoints.into_iter().enumerate() {
        let slice_name = if i == 0 {
            name.clone()
        } else {
            format!("{name}-{i}")
        };
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/service-name".to_string(), name.clone());
        labels.insert(
            "endpointslice.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        );
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                set.into_iter()
                    .map(|(name, port, protocol)| SlicePort {
                        name,
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        };
        upsert(&slices, &slice_name, slice, |a, b| {
            a.endpoints == b.endpoints && a.ports == b.ports
        })
        .await?;
        wanted.push(slice_name);
    }
    // Slices of this service we no longer need.
    let existing = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?;
    for s in existing.items {
        let n = s.metadata.name.clone().unwrap_or_default();
        if !wanted.contains(&n) && super::controlled_by(&s.metadata, owner.uid.as_str()) {
            let _ = slices.delete(&n, &Default::default()).await;
        }
    }
    ctx.backoff.ok(&key);
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Creates `obj`, or replaces the current one when `same` says it differs.
async fn upsert<K>(
    api: &Api<K>,
    name: &str,
    mut obj: K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => {
            api.create(&PostParams::default(), &obj).await?;
        }
        Some(cur) if !same(&cur, &obj) => {
            obj.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &obj).await?;
        }
        Some(_) => {}
    }
    Ok(())
}
