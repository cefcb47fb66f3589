//! Defaulting: the fields Kubernetes fills in when a client leaves them out.

use serde_json::{Value, json};

use super::registry::ResourceDef;

fn set_default(obj: &mut Value, field: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(field).is_none_or(Value::is_null)
    {
        m.insert(field.into(), v);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    set_default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a pod spec (also in templates).
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
}

fn template(obj: &mut Value) {
    if obj["spec"]["template"]["spec"].is_object() {
        pod_spec(&mut obj["spec"]["template"]["spec"]);
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let has = |c: &Value, part: &str| {
        c["resources"][part]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    };
    if cs.iter().all(|c| !has(c, "requests") && !has(c, "limits")) {
        "BestEffort"
    } else if cs.iter().all(|c| {
        let l = &c["resources"]["limits"];
        l["cpu"].is_string()
            && l["memory"].is_string()
            && (!has(c, "requests") || c["resources"]["requests"] == *l)
    }) {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Fills defaults of `obj` (a `def` object). `old` is the stored object on updates.
pub fn apply(def: &ResourceDef, obj: &mut Value, old: Option<&Value>) {
    match def.kind {
        "Pod" => {
            pod_spec(&mut obj["spec"]);
            // `serviceAccount` is the deprecated spelling: either names the account, and
            // both are kept the same, as upstream's conversion does.
            let legacy = obj["spec"]["serviceAccount"].clone();
            let named = if legacy.as_str().is_some_and(|s| !s.is_empty()) {
                legacy
            } else {
                json!("default")
            };
            set_default(&mut obj["spec"], "serviceAccountName", named);
            let name = obj["spec"]["serviceAccountName"].clone();
            if obj["spec"].is_object() {
                obj["spec"]["serviceAccount"] = name;
            }
            if old.is_none() {
                let qos = qos_class(&obj["spec"]);
                if !obj["status"].is_object() {
                    obj["status"] = json!({});
                }
                set_default(&mut obj["status"], "phase", json!("Pending"));
                set_default(&mut obj["status"], "qosClass", json!(qos));
            }
        }
        "Deployment" => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            set_default(&mut obj["spec"], "revisionHistoryLimit", json!(10));
            set_default(&mut obj["spec"], "progressDeadlineSeconds", json!(600));
            set_default(
                &mut obj["spec"],
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            template(obj);
        }
        "ReplicaSet" => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            template(obj);
        }
        "DaemonSet" => {
            set_default(&mut obj["spec"], "revisionHistoryLimit", json!(10));
            set_default(
                &mut obj["spec"],
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            template(obj);
        }
        "Job" => job(obj),
        "Service" => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
        }
        "Secret" => set_default(obj, "type", json!("Opaque")),
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            if old.is_none() {
                set_default(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
                obj["status"] = json!({"phase": "Active"});
            }
        }
        _ => {}
    }
}

fn job(obj: &mut Value) {
    let spec = &mut obj["spec"];
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if spec["completions"].is_null() && spec["parallelism"] == 1 {
        spec["completions"] = json!(1);
    }
    // The selector is generated from the job's uid unless the user chose one.
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if obj["spec"]["manualSelector"] != true && obj["spec"]["selector"].is_null() && !uid.is_empty()
    {
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let t = &mut obj["spec"]["template"];
        if !t["metadata"].is_object() {
            t["metadata"] = json!({});
        }
        if !t["metadata"]["labels"].is_object() {
            t["metadata"]["labels"] = json!({});
        }
        let labels = &mut t["metadata"]["labels"];
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("job-name", &name),
        ] {
            labels[k] = json!(v);
        }
    }
    template(obj);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::lookup;

    #[test]
    fn pull_policy_from_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
    }

    #[test]
    fn service_and_pod_defaults() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        apply(lookup("", "v1", "services").unwrap(), &mut svc, None);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply(lookup("", "v1", "pods").unwrap(), &mut pod, None);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Guaranteed");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["serviceAccount"], "default");
        let mut legacy = json!({"metadata": {"name": "p"}, "spec": {"serviceAccount": "robot", "containers": []}});
        apply(lookup("", "v1", "pods").unwrap(), &mut legacy, None);
        assert_eq!(legacy["spec"]["serviceAccountName"], "robot");
        assert!(
            pod["spec"].get("initContainers").is_none(),
            "defaulting adds no nulls"
        );
    }
}
