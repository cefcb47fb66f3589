//! Recording core/v1 Events about objects (what `kubectl describe` shows).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, PostParams};

/// Creates an Event about `object`; a failure is logged, not returned (events are best effort).
pub async fn record(
    client: &Client,
    object: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let now = jiff::Timestamp::now();
    let name = format!(
        "{}.{:x}",
        object.name.as_deref().unwrap_or("object"),
        now.as_nanosecond() as u64 ^ rand::random::<u32>() as u64
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: object,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some(reason.into()),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!("recording event {reason}: {e}");
    }
}

/// A reference to a namespaced object for an Event.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}
