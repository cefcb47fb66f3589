//! Validation with Kubernetes-style field causes.

use serde_json::{Value, json};

use super::registry::ResourceDef;
use super::selectors::LabelSelector;
use super::status::Cause;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

fn metadata(def: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let label_name = matches!(def.kind, "Namespace" | "Service");
    if label_name && !is_dns1123_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS1123_LABEL_MSG,
        ));
    } else if !label_name && !is_dns1123_subdomain(name) && !matches!(def.kind, "Event") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(Cause::invalid(format!("metadata.labels.{k}"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
    if let Some(ann) = obj["metadata"]["annotations"].as_object() {
        for k in ann.keys() {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
}

fn port_number(field: String, v: &Value, causes: &mut Vec<Cause>) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        None if v.is_null() => causes.push(Cause::required(field)),
        _ => causes.push(Cause::invalid(
            field,
            v,
            "must be between 1 and 65535, inclusive",
        )),
    }
}

/// Checks a pod spec at `path` (`spec` or `spec.template.spec`).
pub fn pod_spec(path: &str, spec: &Value, causes: &mut Vec<Cause>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names: Vec<&str> = Vec::new();
    for (list, cs) in [
        (
            "initContainers",
            spec["initContainers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        ),
        ("containers", containers),
    ] {
        for (i, c) in cs.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{at}.name"))),
                Some(n) if !is_dns1123_label(n) => causes.push(Cause::invalid(
                    format!("{at}.name"),
                    &json!(n),
                    DNS1123_LABEL_MSG,
                )),
                Some(n) if names.contains(&n) => {
                    causes.push(Cause::duplicate(format!("{at}.name"), &json!(n)))
                }
                Some(n) => names.push(n),
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(format!("{at}.image")));
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                port_number(
                    format!("{at}.ports[{j}].containerPort"),
                    &p["containerPort"],
                    causes,
                );
                if let Some(proto) = p["protocol"].as_str()
                    && !matches!(proto, "TCP" | "UDP" | "SCTP")
                {
                    causes.push(Cause::not_supported(
                        format!("{at}.ports[{j}].protocol"),
                        &json!(proto),
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str()
        && !matches!(rp, "Always" | "OnFailure" | "Never")
    {
        causes.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            &json!(rp),
            &["Always", "OnFailure", "Never"],
        ));
    }
}

fn workload(obj: &Value, causes: &mut Vec<Cause>, kind: &str) {
    let spec = &obj["spec"];
    if let Some(r) = spec["replicas"].as_i64()
        && r < 0
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &json!(r),
            "must be greater than or equal to 0",
        ));
    }
    let selector = &spec["selector"];
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty);
    if selector.is_null() {
        causes.push(Cause::required("spec.selector"));
    } else if empty {
        causes.push(Cause::invalid(
            "spec.selector",
            selector,
            "empty selector is invalid for deployment",
        ));
    } else {
        match LabelSelector::from_object(selector) {
            Ok(sel) if !sel.matches_labels(&spec["template"]["metadata"]["labels"]) => {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &spec["template"]["metadata"]["labels"],
                    "`selector` does not match template `labels`",
                ))
            }
            Ok(_) => {}
            Err(e) => causes.push(Cause::invalid("spec.selector", selector, &e.message)),
        }
    }
    pod_spec("spec.template.spec", &spec["template"]["spec"], causes);
    if kind == "Job" {
        if let Some(rp) = spec["template"]["spec"]["restartPolicy"].as_str()
            && !matches!(rp, "OnFailure" | "Never")
        {
            causes.push(Cause::not_supported(
                "spec.template.spec.restartPolicy",
                &json!(rp),
                &["OnFailure", "Never"],
            ));
        }
    } else if let Some(rp) = spec["template"]["spec"]["restartPolicy"].as_str()
        && rp != "Always"
    {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(rp),
            &["Always"],
        ));
    }
}

fn service(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause::not_supported(
            "spec.type",
            &json!(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let headless = spec["clusterIP"] == "None";
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut seen = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        port_number(format!("spec.ports[{i}].port"), &p["port"], causes);
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        let key = (p["port"].clone(), p["protocol"].clone());
        if seen.contains(&key) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}]"),
                &json!({"port": key.0, "protocol": key.1}),
            ));
        }
        seen.push(key);
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.externalName"));
    }
    if let Some(old) = old
        && let Some(old_ip) = old["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty())
        && spec["clusterIP"].as_str() != Some(old_ip)
        && ty != "ExternalName"
    {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &spec["clusterIP"],
            "may not change once set",
        ));
    }
}

fn immutable(
    obj: &Value,
    old: Option<&Value>,
    path: &[&str],
    field: &str,
    causes: &mut Vec<Cause>,
) {
    let Some(old) = old else { return };
    let get = |v: &Value| path.iter().fold(v.clone(), |acc, p| acc[*p].clone());
    if get(obj) != get(old) {
        causes.push(Cause::invalid(field, &get(obj), "field is immutable"));
    }
}

/// Every problem with `obj` (a `def` object), given the stored `old` one on updates.
/// The most a ConfigMap's or Secret's values may hold together (upstream's MaxSecretSize).
const MAX_DATA_SIZE: usize = 1024 * 1024;

/// The bytes of a ConfigMap's or Secret's values: `data` as text (a ConfigMap) or decoded
/// base64 (a Secret), `binaryData` decoded, `stringData` as text.
fn data_size(kind: &str, obj: &Value) -> usize {
    let values = |field: &str| -> Vec<&str> {
        obj[field]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
            .collect()
    };
    // Base64 holds 3 bytes in every 4 characters, less the padding.
    let decoded = |b64: &str| {
        let padding = b64.bytes().rev().take_while(|&b| b == b'=').count();
        (b64.len() / 4 * 3).saturating_sub(padding)
    };
    let data: usize = values("data")
        .into_iter()
        .map(|v| {
            if kind == "Secret" {
                decoded(v)
            } else {
                v.len()
            }
        })
        .sum();
    let binary: usize = values("binaryData").into_iter().map(decoded).sum();
    let string: usize = values("stringData").into_iter().map(str::len).sum();
    data + binary + string
}

pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    metadata(def, obj, &mut causes);
    match def.kind {
        "Pod" => {
            pod_spec("spec", &obj["spec"], &mut causes);
            if let Some(old) = old {
                // Only images (and a few fields) of a pod may change after creation.
                let strip = |v: &Value| {
                    let mut s = v["spec"].clone();
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                            cs.iter_mut().for_each(|c| c["image"] = Value::Null);
                        }
                    }
                    for f in ["activeDeadlineSeconds", "tolerations", "nodeName"] {
                        if let Some(m) = s.as_object_mut() {
                            m.remove(f);
                        }
                    }
                    s
                };
                if strip(obj) != strip(old) {
                    causes.push(Cause::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)"));
                }
                if let Some(n) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
                    && obj["spec"]["nodeName"].as_str() != Some(n)
                {
                    causes.push(Cause::invalid(
                        "spec.nodeName",
                        &obj["spec"]["nodeName"],
                        "field is immutable",
                    ));
                }
            }
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            workload(obj, &mut causes, def.kind);
            immutable(
                obj,
                old,
                &["spec", "selector"],
                "spec.selector",
                &mut causes,
            );
        }
        "ControllerRevision" => {
            // as upstream: a revision number that is not negative, data fixed once written
            if obj["revision"].as_i64().is_some_and(|r| r < 0) {
                causes.push(Cause::invalid(
                    "revision",
                    &obj["revision"],
                    "must be greater than or equal to 0",
                ));
            }
            immutable(obj, old, &["data"], "data", &mut causes);
        }
        "Service" => service(obj, old, &mut causes),
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj[field].as_object().into_iter().flatten().map(|(k, _)| k) {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !ok {
                        causes.push(Cause::invalid(format!("{field}[{k}]"), &json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
                    }
                }
            }
            if old.is_some_and(|o| o["immutable"] == true)
                && (obj["data"] != old.unwrap()["data"]
                    || obj["binaryData"] != old.unwrap()["binaryData"])
            {
                causes.push(Cause::forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
            if def.kind == "Secret" {
                immutable(obj, old, &["type"], "type", &mut causes);
            }
            if data_size(def.kind, obj) > MAX_DATA_SIZE {
                // Upstream names `data` for a Secret and no field for a ConfigMap.
                let field = if def.kind == "Secret" { "data" } else { "" };
                causes.push(Cause::too_long(field, MAX_DATA_SIZE));
            }
        }
        "Ingress" => {
            for (i, r) in obj["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                for (j, p) in r["http"]["paths"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    if p["pathType"].is_null() {
                        causes.push(Cause::required(format!(
                            "spec.rules[{i}].http.paths[{j}].pathType"
                        )));
                    }
                }
            }
        }
        "Lease" | "Endpoints" | "EndpointSlice" | "Event" | "Namespace" | "Node"
        | "ServiceAccount" => {}
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::lookup;

    fn check(plural: &str, group: &str, obj: Value) -> Vec<String> {
        validate(lookup(group, "v1", plural).unwrap(), &obj, None)
            .into_iter()
            .map(|c| c.field)
            .collect()
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("A"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert_eq!(
            check("namespaces", "", json!({"metadata": {"name": "Bad_Name"}})),
            ["metadata.name"]
        );
    }

    #[test]
    fn pod_needs_containers_with_images() {
        assert_eq!(
            check("pods", "", json!({"metadata": {"name": "p"}, "spec": {}})),
            ["spec.containers"]
        );
        let f = check(
            "pods",
            "",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "x", "ports": [{"containerPort": 0}]}]}}),
        );
        assert_eq!(
            f,
            [
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].ports[0].containerPort"
            ]
        );
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            check("deployments", "apps", d),
            ["spec.template.metadata.labels"]
        );
    }

    #[test]
    fn pod_spec_is_immutable_but_image() {
        let def = lookup("", "v1", "pods").unwrap();
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let new_image = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert!(validate(def, &new_image, Some(&old)).is_empty());
        let new_name = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "d", "image": "a"}]}});
        assert_eq!(
            validate(def, &new_name, Some(&old))[0].reason,
            "FieldValueForbidden"
        );
    }
}
