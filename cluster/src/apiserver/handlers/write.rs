//! create, update, patch, delete and deletecollection, and the rules every write follows
//! (system metadata, generation, status kept apart from spec, finalizers).

use http::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions as DeleteOptionsBody;
use serde_json::{Value, json};

use super::read::{Filter, list_objects};
use super::{Call, ok};
use crate::apiserver::ApiServer;
use crate::apiserver::http::Body;
use crate::apiserver::managed_fields::{self, Writer};
use crate::apiserver::objects::{self, meta_mut, meta_str, now_rfc3339};
use crate::apiserver::registry::ResourceDef;
use crate::apiserver::request::WriteOpts;
use crate::apiserver::status::{ApiError, ApiResult, Cause};
use crate::apiserver::{defaults, patch, storage, validation};
use ros_store::StoreError;

/// Which part of an object a write may change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    /// Everything but status (for kinds with a status subresource).
    Main,
    /// Only status (the status subresource).
    Status,
    /// Only spec.finalizers (namespaces/finalize).
    Finalize,
}

impl Part {
    fn of(call: &Call) -> Part {
        match call.subresource.as_deref() {
            Some("status") => Part::Status,
            Some("finalize") => Part::Finalize,
            _ => Part::Main,
        }
    }
}

/// Creates `obj` as a new `def` object in `namespace`: fills the system metadata, applies
/// defaults, validates, and stores it. Returns the stored object.
pub async fn create_object(
    api: &ApiServer,
    def: &'static ResourceDef,
    namespace: Option<&str>,
    obj: Value,
    opts: WriteOpts,
) -> ApiResult<Value> {
    let dry_run = opts.dry_run;
    let mut obj = objects::check_and_normalize(def, obj, opts.strict)?;
    let m = meta_mut(&mut obj);
    if def.namespaced {
        let ns = namespace.unwrap_or("");
        match m
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => {
                m.insert("namespace".into(), json!(ns));
            }
            Some(x) if x == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        m.remove("namespace");
    }
    if m.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        match m
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(prefix) => {
                let name = format!("{prefix}{}", objects::random_suffix(5));
                m.insert("name".into(), json!(name));
            }
            None => {
                return Err(ApiError::invalid(
                    def.group,
                    def.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        }
    }
    m.insert("uid".into(), json!(objects::new_uid()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(f);
    }
    if def.has_spec() {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    if def.has_status()
        && !matches!(def.kind, "Node" | "Pod")
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    defaults::apply(def, &mut obj, None);
    if def.kind == "Pod" {
        let ns = namespace.unwrap_or("");
        api.check_namespace_open(ns).await?;
        crate::apiserver::sa_admission::admit(api, ns, &mut obj).await?;
    }
    let name = objects::name(&obj).to_string();
    let causes = validation::validate(def, &obj, None);
    if !causes.is_empty() {
        return Err(ApiError::invalid(def.group, def.kind, &name, causes));
    }
    if def.namespaced {
        api.check_namespace_open(namespace.unwrap_or("")).await?;
    }
    let key = storage::key(def, namespace, &name);
    // Service IPs are allocated and the service stored under one lock: never twice.
    let _ip_guard = if def.kind == "Service" {
        let guard = api.service_ips.lock().await;
        // An existing service is AlreadyExists, not an address conflict with itself.
        if api.store.get(&key, None).await?.is_some() {
            return Err(ApiError::already_exists(def.group, def.plural, &name));
        }
        api.service_ips.assign(api, &mut obj).await?;
        Some(guard)
    } else {
        None
    };
    if dry_run {
        if api.store.get(&key, None).await?.is_some() {
            return Err(ApiError::already_exists(def.group, def.plural, &name));
        }
        return Ok(obj);
    }
    let lease = if def.kind == "Event" {
        api.event_lease().await
    } else {
        None
    };
    let rev = api
        .store
        .create(&key, storage::encode(&obj), lease)
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists => ApiError::already_exists(def.group, def.plural, &name),
            other => other.into(),
        })?;
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
    if def.kind == "Namespace"
        && let Err(e) = crate::apiserver::namespaces::populate(api, &name).await
    {
        tracing::warn!("populating namespace {name}: {}", e.message);
    }
    Ok(obj)
}

/// The field manager of a write (`?fieldManager=`, else from the User-Agent).
fn writer<'a>(call: &'a Call, api_version: &'a str) -> Writer<'a> {
    Writer {
        manager: call.query.get("fieldManager").unwrap_or("unknown"),
        api_version,
        subresource: (Part::of(call) == Part::Status).then_some("status"),
        kind: call.def.kind,
    }
}

pub async fn create(call: &Call) -> ApiResult<Response<Body>> {
    let mut obj = call.parse_body()?;
    let api_version = call.def.api_version();
    managed_fields::on_create(&mut obj, &writer(call, &api_version), None);
    let created = create_object(&call.api, call.def, call.ns(), obj, call.query.write()).await?;
    ok(201, &created)
}

/// Turns the `desired` object of a write into the object to store, given the `old` one.
fn prepare_update(
    def: &'static ResourceDef,
    old: &Value,
    desired: Value,
    part: Part,
    strict: bool,
) -> ApiResult<Value> {
    let name = objects::name(old).to_string();
    let desired = objects::check_and_normalize(def, desired, strict)?;
    if let Some(n) = meta_str(&desired, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(want), Some(have)) = (meta_str(&desired, "namespace"), meta_str(old, "namespace"))
        && want != have
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(uid) = meta_str(&desired, "uid")
        && Some(uid) != meta_str(old, "uid")
    {
        return Err(ApiError::conflict(
            def.group,
            def.plural,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                meta_str(old, "uid").unwrap_or("")
            ),
        ));
    }
    if let Some(rv) = meta_str(&desired, "resourceVersion")
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::stale(def.group, def.plural, &name));
    }
    let mut new = match part {
        Part::Main => {
            let mut n = desired;
            if def.has_status() {
                set_or_remove(&mut n, "status", old.get("status"));
            }
            n
        }
        Part::Status => {
            let mut n = desired;
            set_or_remove(&mut n, "spec", old.get("spec"));
            n
        }
        Part::Finalize => {
            let mut n = old.clone();
            n["spec"]["finalizers"] = desired["spec"]["finalizers"].clone();
            n
        }
    };
    {
        let old_meta = &old["metadata"];
        let m = meta_mut(&mut new);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old_meta.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
    }
    if def.has_spec() && new.get("spec") != old.get("spec") {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(generation));
    }
    defaults::apply(def, &mut new, Some(old));
    let causes = validation::validate(def, &new, Some(old));
    if !causes.is_empty() {
        return Err(ApiError::invalid(def.group, def.kind, &name, causes));
    }
    Ok(new)
}

fn set_or_remove(obj: &mut Value, field: &str, v: Option<&Value>) {
    if let Some(o) = obj.as_object_mut() {
        match v {
            Some(v) => o.insert(field.into(), v.clone()),
            None => o.remove(field),
        };
    }
}

fn finalizers_empty(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

/// Reads the object, lets `mutate` produce the desired one, and writes it with optimistic
/// concurrency, retrying on a concurrent write unless the caller pinned a resourceVersion.
pub async fn update_object(
    api: &ApiServer,
    def: &'static ResourceDef,
    key: &str,
    part: Part,
    opts: WriteOpts,
    mut mutate: impl FnMut(&Value) -> ApiResult<Value>,
) -> ApiResult<Value> {
    let dry_run = opts.dry_run;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let kv = api.store.get(key, None).await?.ok_or_else(|| {
            ApiError::not_found(def.group, def.plural, key.rsplit('/').next().unwrap_or(""))
        })?;
        let old = storage::decode(&kv)?;
        let desired = mutate(&old)?;
        let new = prepare_update(def, &old, desired, part, opts.strict)?;
        if new == old || dry_run {
            return Ok(new);
        }
        // The last finalizer removed from an object being deleted ends it (a pod waiting for
        // its node's grace period is ended by the node agent instead).
        let pod_in_grace = def.kind == "Pod"
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                > 0;
        let result = if meta_str(&new, "deletionTimestamp").is_some()
            && finalizers_empty(&new)
            && !pod_in_grace
        {
            api.store
                .delete(key, Some(kv.mod_revision))
                .await
                .map(|(rev, _)| rev)
        } else {
            api.store
                .update(key, storage::encode(&new), kv.mod_revision)
                .await
        };
        match result {
            Ok(rev) => {
                let mut new = new;
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) if attempts < 10 => continue,
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::stale(def.group, def.plural, objects::name(&old)));
            }
            Err(StoreError::NotFound) => {
                return Err(ApiError::not_found(
                    def.group,
                    def.plural,
                    objects::name(&old),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn update(call: &Call) -> ApiResult<Response<Body>> {
    let desired = call.parse_body()?;
    let part = Part::of(call);
    let pinned = meta_str(&desired, "resourceVersion").is_some();
    let mut first = true;
    let api_version = call.def.api_version();
    let w = writer(call, &api_version);
    let obj = update_object(
        &call.api,
        call.def,
        &call.key(),
        part,
        call.query.write(),
        |old| {
            // A resourceVersion in the body pins the write to that version: no retry past it.
            if pinned && !first {
                return Err(ApiError::stale(
                    call.def.group,
                    call.def.plural,
                    call.name(),
                ));
            }
            first = false;
            Ok(desired.clone()).map(|mut d: Value| {
                if !pinned {
                    meta_mut(&mut d).insert(
                        "resourceVersion".into(),
                        old["metadata"]["resourceVersion"].clone(),
                    );
                }
                managed_fields::on_update(old, &mut d, &w);
                d
            })
        },
    )
    .await?;
    ok(200, &obj)
}

pub async fn patch(call: &Call) -> ApiResult<Response<Body>> {
    let kind = patch::PatchKind::from_content_type(&call.content_type)?;
    let part = Part::of(call);
    let api_version = call.def.api_version();
    let w = writer(call, &api_version);
    if kind == patch::PatchKind::Apply {
        // Apply bodies arrive here as JSON (see objects::yaml_body_to_json).
        let applied = objects::parse_body("application/json", &call.body)?;
        if call.query.get("fieldManager").is_none() {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager query parameter",
            ));
        }
        if part == Part::Main && call.api.store.get(&call.key(), None).await?.is_none() {
            let mut obj = applied.clone();
            managed_fields::on_create(&mut obj, &w, Some(&applied));
            let created =
                create_object(&call.api, call.def, call.ns(), obj, call.query.write()).await?;
            return ok(201, &created);
        }
        let obj = update_object(
            &call.api,
            call.def,
            &call.key(),
            part,
            call.query.write(),
            |old| {
                let merged = patch::strategic_merge(call.def.kind, old, &applied)?;
                managed_fields::on_apply(old, merged, &applied, &w, call.query.flag("force"))
            },
        )
        .await?;
        return ok(200, &obj);
    }
    let body = &call.body;
    let obj = update_object(
        &call.api,
        call.def,
        &call.key(),
        part,
        call.query.write(),
        |old| {
            let mut new = patch::apply(kind, call.def.kind, old, body)?;
            managed_fields::on_update(old, &mut new, &w);
            Ok(new)
        },
    )
    .await?;
    ok(200, &obj)
}

/// The parts of DeleteOptions the server honours.
#[derive(Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// The finalizer a Foreground (`foregroundDeletion`) or Orphan (`orphan`) delete puts on
    /// the object; the garbage collector removes it once the dependents are handled.
    pub propagation_finalizer: Option<&'static str>,
}

impl DeleteOptions {
    fn from_call(call: &Call) -> ApiResult<Self> {
        // Decoded as the typed DeleteOptions, so a field of the wrong type (`"dryRun": "All"`
        // rather than a list) is a 400 as upstream, never silently a real delete.
        let body: DeleteOptionsBody = if call.body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptionsBody::default()
        } else {
            serde_json::from_value(objects::parse_body(&call.content_type, &call.body)?)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        let policy = body
            .propagation_policy
            .as_deref()
            .or(call.query.get("propagationPolicy"));
        let propagation_finalizer = match policy {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            Some("Background") => None,
            None if body.orphan_dependents == Some(true) || call.query.flag("orphanDependents") => {
                Some("orphan")
            }
            None => None,
            Some(p) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        };
        let preconditions = body.preconditions.unwrap_or_default();
        Ok(DeleteOptions {
            grace_period: body
                .grace_period_seconds
                .or(call.query.int("gracePeriodSeconds")?),
            precondition_uid: preconditions.uid,
            precondition_rv: preconditions.resource_version,
            dry_run: call.query.dry_run() || body.dry_run.is_some_and(|a| !a.is_empty()),
            propagation_finalizer,
        })
    }
}

/// Deletes one object as Kubernetes does: gracefully (deletionTimestamp) when it has
/// finalizers, is a namespace, or is a pod on a node; at once otherwise.
pub async fn delete_one(
    api: &ApiServer,
    def: &'static ResourceDef,
    key: &str,
    opts: &DeleteOptions,
) -> ApiResult<Value> {
    if def.kind == "Namespace" {
        crate::apiserver::namespaces::check_deletable(key.rsplit('/').next().unwrap_or(""))?;
    }
    for _ in 0..10 {
        let kv = api.store.get(key, None).await?.ok_or_else(|| {
            ApiError::not_found(def.group, def.plural, key.rsplit('/').next().unwrap_or(""))
        })?;
        let old = storage::decode(&kv)?;
        let name = objects::name(&old).to_string();
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                def.group,
                def.plural,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                def.group,
                def.plural,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        let already = meta_str(&old, "deletionTimestamp").is_some();
        let bound_pod = def.kind == "Pod"
            && old["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
        let grace = opts.grace_period.unwrap_or_else(|| {
            if def.kind == "Pod" {
                old["spec"]["terminationGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(30)
            } else {
                0
            }
        });
        let needs_finalizer = opts.propagation_finalizer.filter(|f| {
            !old["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == f))
        });
        let graceful = def.kind == "Namespace"
            || !finalizers_empty(&old)
            || needs_finalizer.is_some()
            || (bound_pod && grace > 0);
        if !graceful {
            if opts.dry_run {
                return Ok(old);
            }
            match api.store.delete(key, Some(kv.mod_revision)).await {
                Ok((rev, _)) => {
                    let mut obj = old;
                    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
                    return Ok(obj);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => {
                    return Err(ApiError::not_found(def.group, def.plural, &name));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if already && !(bound_pod && grace == 0) && needs_finalizer.is_none() {
            return Ok(old);
        }
        let mut new = old.clone();
        if let Some(f) = needs_finalizer {
            let m = meta_mut(&mut new);
            let list = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(json!(f));
            }
        }
        let when = if bound_pod {
            let at = jiff::Timestamp::now().as_second() + grace;
            jiff::Timestamp::from_second(at)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| now_rfc3339())
        } else {
            now_rfc3339()
        };
        // An object already being deleted keeps its deletionTimestamp (only a pod's grace
        // period may be shortened).
        if !already || (bound_pod && grace == 0) {
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(when));
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(if bound_pod { grace } else { 0 }),
            );
        }
        if def.kind == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        if opts.dry_run {
            return Ok(new);
        }
        match api
            .store
            .update(key, storage::encode(&new), kv.mod_revision)
            .await
        {
            Ok(rev) => {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
                if def.kind == "Namespace" {
                    api.kick_namespace_finalizer();
                }
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        def.group,
        def.plural,
        key.rsplit('/').next().unwrap_or(""),
        "too many concurrent writes",
    ))
}

pub async fn delete(call: &Call) -> ApiResult<Response<Body>> {
    let opts = DeleteOptions::from_call(call)?;
    let obj = delete_one(&call.api, call.def, &call.key(), &opts).await?;
    // 202 Accepted when the object is only marked for deletion.
    let code = if meta_str(&obj, "deletionTimestamp").is_some()
        && call.api.store.get(&call.key(), None).await?.is_some()
    {
        202
    } else {
        200
    };
    ok(code, &obj)
}

pub async fn delete_collection(call: &Call) -> ApiResult<Response<Body>> {
    let opts = DeleteOptions::from_call(call)?;
    let filter = Filter::from_call(call)?;
    let (items, _, _) = list_objects(call, &filter).await?;
    let mut deleted = Vec::new();
    // As upstream, a refused item (a system namespace) does not stop the others.
    let mut refused = None;
    for item in items {
        let key = storage::key(call.def, meta_str(&item, "namespace"), objects::name(&item));
        match delete_one(&call.api, call.def, &key, &opts).await {
            Ok(obj) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) if e.code == 403 => refused = refused.or(Some(e)),
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    let rev = call.api.store.current_revision().await?;
    ok(
        200,
        &json!({
            "kind": format!("{}List", call.def.kind),
            "apiVersion": call.def.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
            "items": deleted,
        }),
    )
}
