//! DaemonSet history as upstream keeps it: one apps/v1 ControllerRevision per pod template,
//! named `<ds>-<hash>`, labelled with the template's labels and `controller-revision-hash`,
//! controlled by the DaemonSet, its `data` the strategic merge patch that restores the
//! template (`{"spec":{"template":{..., "$patch":"replace"}}}`, what `kubectl rollout undo`
//! applies) and its `revision` one more than every other revision's. Going back to an older
//! template re-numbers that template's revision instead of making a new one.

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Error;
use super::daemonset::HASH_LABEL;

/// The revision that is current for a DaemonSet's template, and the others.
pub struct History {
    pub current: ControllerRevision,
    pub old: Vec<ControllerRevision>,
}

impl History {
    /// The template hash of the current revision (what new pods are labelled with).
    pub fn hash(&self) -> String {
        hash_of(&self.current).unwrap_or_default()
    }
}

fn hash_of(cr: &ControllerRevision) -> Option<String> {
    cr.metadata.labels.as_ref()?.get(HASH_LABEL).cloned()
}

/// The patch that restores `template`, as kubectl and upstream's controller write it:
/// Go's encoding of a PodTemplateSpec (`creationTimestamp: null`, `resources: {}`), keys
/// sorted, so `kubectl rollout undo` can tell a revision equals the current template.
pub fn restore_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if !t["metadata"].is_object() {
        t["metadata"] = json!({});
    }
    t["metadata"]
        .as_object_mut()
        .map(|m| m.entry("creationTimestamp").or_insert(Value::Null));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = t["spec"].get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("resources").or_insert_with(|| json!({}));
            }
        }
    }
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// `v` as Go's encoding/json writes it: compact, keys sorted, `<`, `>`, `&`, U+2028 and
/// U+2029 escaped.
pub fn go_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(&Value::String(k.clone()), out);
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(e, out);
                }
                out.push(']');
            }
            Value::String(_) => {
                let s = v.to_string();
                for ch in s.chars() {
                    match ch {
                        '<' => out.push_str("\\u003c"),
                        '>' => out.push_str("\\u003e"),
                        '&' => out.push_str("\\u0026"),
                        '\u{2028}' => out.push_str("\\u2028"),
                        '\u{2029}' => out.push_str("\\u2029"),
                        c => out.push(c),
                    }
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Drops nulls, empty maps and empty lists, and the `$patch` directive, so a template read
/// back from a revision (Go writes `resources: {}`) compares equal to the stored one.
fn pruned(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "$patch")
                .filter_map(|(k, v)| pruned(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a
                .iter()
                .map(|e| pruned(e).unwrap_or_else(|| json!({})))
                .collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

/// Whether `cr` restores exactly `template`.
pub fn matches(cr: &ControllerRevision, template: &PodTemplateSpec) -> bool {
    let Some(RawExtension(data)) = cr.data.as_ref() else {
        return false;
    };
    let theirs = pruned(&data["spec"]["template"]);
    let ours = pruned(&serde_json::to_value(template).unwrap_or_default());
    theirs == ours
}

/// Revisions controlled by `ds` (found through its selector, as kubectl finds them).
async fn controlled(
    client: &Client,
    ds: &DaemonSet,
    selector: &str,
) -> Result<Vec<ControllerRevision>, Error> {
    let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
    let uid = ds.metadata.uid.as_deref().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await?
        .items;
    Ok(list
        .into_iter()
        .filter(|cr| cr.metadata.deletion_timestamp.is_none())
        .filter(|cr| super::controlled_by(&cr.metadata, uid))
        .collect())
}

/// Finds (or records) the revision of `ds`'s current template and gives it the highest
/// revision number. A name taken by a different template bumps the DaemonSet's
/// `status.collisionCount` and fails, so the next pass hashes differently.
pub async fn sync(client: &Client, ds: &DaemonSet, selector: &str) -> Result<History, Error> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let spec = ds
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid("spec: Required value".into()))?;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let (mut current, old): (Vec<ControllerRevision>, Vec<ControllerRevision>) =
        controlled(client, ds, selector)
            .await?
            .into_iter()
            .partition(|cr| matches(cr, &spec.template));
    let next = old.iter().map(|cr| cr.revision).max().unwrap_or(0) + 1;

    // Two revisions of one template (a collision resolved late): keep the newest.
    current.sort_by_key(|cr| std::cmp::Reverse(cr.revision));
    for dup in current.iter().skip(1) {
        let dup_name = dup.metadata.name.as_deref().unwrap_or_default();
        match api.delete(dup_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(mut cur) = current.into_iter().next() {
        if cur.revision < next {
            let cur_name = cur.metadata.name.clone().unwrap_or_default();
            cur = api
                .patch(
                    &cur_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": next})),
                )
                .await?;
        }
        return Ok(History { current: cur, old });
    }

    let collisions = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let hash = super::deployment::template_hash(&spec.template, collisions);
    let mut labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let cr_name = format!("{name}-{hash}");
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(cr_name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![super::controller_ref(
                "apps/v1",
                "DaemonSet",
                &ds.metadata,
            )]),
            ..Default::default()
        },
        data: Some(RawExtension(restore_patch(&spec.template))),
        revision: next,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(created) => Ok(History {
            current: created,
            old,
        }),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&cr_name).await?;
            if matches(&existing, &spec.template)
                && super::controlled_by(
                    &existing.metadata,
                    ds.metadata.uid.as_deref().unwrap_or(""),
                )
            {
                return Ok(History {
                    current: existing,
                    old,
                });
            }
            let dsapi: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
            let live = dsapi.get(&name).await?;
            let live_count = live.status.as_ref().and_then(|s| s.collision_count);
            if live_count.unwrap_or(0) != collisions {
                return Err(Error::Invalid(format!(
                    "status.collisionCount: stale ({collisions}, now {})",
                    live_count.unwrap_or(0)
                )));
            }
            dsapi
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}})),
                )
                .await?;
            Err(Error::Invalid(format!(
                "controllerrevision {cr_name}: name taken by another template; collisionCount is now {}",
                collisions + 1
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest revisions beyond `limit` that no live pod still runs.
pub async fn cleanup(
    client: &Client,
    ns: &str,
    mut old: Vec<ControllerRevision>,
    limit: i32,
    live_hashes: &std::collections::HashSet<String>,
) -> Result<(), Error> {
    let mut excess = old.len() as i64 - limit.max(0) as i64;
    if excess <= 0 {
        return Ok(());
    }
    old.sort_by_key(|cr| cr.revision);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    for cr in &old {
        if excess <= 0 {
            break;
        }
        if hash_of(cr).is_some_and(|h| live_hashes.contains(&h)) {
            continue;
        }
        let name = cr.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        excess -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn patch_is_gos_encoding_of_the_template() {
        let t = template(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "x<y>&z"}]}}));
        assert_eq!(
            go_json(&restore_patch(&t)),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"a"}},"spec":{"containers":[{"image":"x\u003cy\u003e\u0026z","name":"c","resources":{}}]}}}}"#
        );
    }

    #[test]
    fn a_revision_matches_its_template_only() {
        let t = template(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "one"}]}}));
        let cr = ControllerRevision {
            data: Some(RawExtension(restore_patch(&t))),
            ..Default::default()
        };
        assert!(matches(&cr, &t));
        let other = template(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "two"}]}}));
        assert!(!matches(&cr, &other));
        // What the API server stores after `rollout undo` applied the patch (Go's `{}`s).
        let undone = template(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "one", "resources": {}}]}}));
        assert!(matches(&cr, &undone));
    }
}
