//! Resource handlers: read (get, list), watch, write (create, update, patch, delete) and
//! subresources. `dispatch` picks one from the method and the path's shape.

pub mod exec;
mod portforward;
mod read;
mod sub;
mod watch;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use serde_json::Value;

use super::ApiServer;
use super::http::{Body, json};
use super::objects;
use super::registry::ResourceDef;
use super::request::{Query, ResourceRequest};
use super::status::{ApiError, ApiResult};
use super::storage;

pub use write::{DeleteOptions, create_object, delete_one};

/// One resource request, with everything the handlers need.
pub struct Call {
    pub api: Arc<ApiServer>,
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    pub body: Bytes,
}

impl Call {
    pub fn new(
        api: Arc<ApiServer>,
        r: ResourceRequest,
        query: Query,
        accept: String,
        content_type: String,
        body: Bytes,
    ) -> Self {
        Call {
            api,
            def: r.def,
            namespace: r.namespace,
            name: r.name,
            subresource: r.subresource,
            query,
            accept,
            content_type,
            body,
        }
    }

    pub fn query_clone(&self) -> Query {
        Query(self.query.0.clone())
    }

    pub fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The name from the path (handlers that need one are only reached with one).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn key(&self) -> String {
        storage::key(self.def, self.ns(), self.name())
    }

    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(self.def.group, self.def.plural, self.name())
    }

    /// Whether the client asked for metadata only (PartialObjectMetadata[List]).
    pub fn wants_metadata(&self) -> bool {
        self.accept
            .split(',')
            .next()
            .is_some_and(|first| first.replace(' ', "").contains("as=PartialObjectMetadata"))
    }

    pub fn wants_table(&self) -> bool {
        self.accept
            .split(',')
            .next()
            .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
    }

    pub fn parse_body(&self) -> ApiResult<Value> {
        objects::parse_body(&self.content_type, &self.body)
    }

    /// The current object and its store record, or NotFound.
    pub async fn current(&self) -> ApiResult<(Value, ros_store::KeyValue)> {
        let kv = self
            .api
            .store
            .get(&self.key(), None)
            .await?
            .ok_or_else(|| self.not_found())?;
        Ok((storage::decode(&kv)?, kv))
    }
}

pub async fn dispatch(call: Call, method: &Method) -> ApiResult<Response<Body>> {
    if call.def.namespaced
        && call.namespace.is_none()
        && (call.name.is_some() || *method == Method::POST)
    {
        return Err(ApiError::path_not_found(&format!(
            "{} without a namespace",
            call.def.plural
        )));
    }
    // As upstream, the cluster-wide path of a namespaced resource only lists and watches:
    // a DELETE there must not empty every namespace at once.
    if call.def.namespaced && call.namespace.is_none() && *method == Method::DELETE {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource (DELETE {} in all namespaces)",
            call.def.plural
        )));
    }
    if *method != Method::GET || call.name.is_none() {
        super::query_options::check(method, &call.query)?;
    }
    let watch = call.query.flag("watch");
    match (
        method.clone(),
        call.name.is_some(),
        call.subresource.as_deref(),
    ) {
        (Method::GET, false, None) if watch => watch::watch(call).await,
        (Method::GET, false, None) => read::list(&call).await,
        (Method::GET, true, None) => read::get(&call).await,
        (Method::GET, true, Some("status")) => read::get(&call).await,
        (Method::GET, true, Some("scale")) => sub::get_scale(&call).await,
        (Method::GET, true, Some("log")) => sub::pod_log(&call).await,
        (Method::GET | Method::POST, true, Some("log" | "exec")) => {
            Err(sub::node_agent_missing(&call))
        }
        (Method::POST, false, None) => write::create(&call).await,
        (Method::POST, true, Some("binding")) => sub::bind(&call).await,
        (Method::POST, true, Some("token")) => sub::token(&call).await,
        (Method::PUT, true, None | Some("status") | Some("finalize")) => write::update(&call).await,
        (Method::PATCH, true, None | Some("status")) => write::patch(&call).await,
        (Method::PUT | Method::PATCH, true, Some("scale")) => {
            sub::update_scale(&call, method == Method::PATCH).await
        }
        (Method::DELETE, true, None) => write::delete(&call).await,
        (Method::DELETE, false, None) => write::delete_collection(&call).await,
        (m, _, sub) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m} {}{})",
            call.def.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// An object reduced to its metadata, as PartialObjectMetadata.
pub fn partial(obj: &Value) -> Value {
    serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

pub fn ok(code: u16, v: &Value) -> ApiResult<Response<Body>> {
    Ok(json(code, v))
}
