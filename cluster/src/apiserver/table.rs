//! meta.k8s.io/v1 Table responses with the columns `kubectl get` shows for each kind
//! (priority 1 columns only with `-o wide`).

use serde_json::{Value, json};

use super::registry::ResourceDef;
use super::request::Query;
use super::selectors::LabelSelector;

/// (name, type, priority)
type Col = (&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Col] {
    match kind {
        "Pod" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Namespace" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "Node" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Service" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Endpoints" => &[
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Secret" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "ServiceAccount" => &[
            ("Name", "string", 0),
            ("Secrets", "integer", 0),
            ("Age", "string", 0),
        ],
        "Event" => &[
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "Deployment" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "DaemonSet" => &[
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Job" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ControllerRevision" => &[
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ],
        "Lease" => &[
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        "EndpointSlice" => &[
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "Ingress" => &[
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

/// Kubernetes' short human duration: 45s, 5m3s, 3h, 2d4h, 3y...
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn since(ts: &Value) -> String {
    match ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn containers_images(template_spec: &Value) -> (String, String) {
    let cs = arr(&template_spec["containers"]);
    (
        cs.iter()
            .map(|c| s(&c["name"]))
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| s(&c["image"]))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn selector_string(sel: &Value) -> String {
    or_none(
        LabelSelector::from_object(sel)
            .map(|s| s.to_string_form())
            .unwrap_or_default(),
    )
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    let st = &o["status"];
    let statuses = arr(&st["containerStatuses"]);
    let total = arr(&spec["containers"]).len();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
    let mut reason = if st["reason"].is_string() {
        s(&st["reason"])
    } else {
        s(&st["phase"])
    };
    for c in statuses {
        if let Some(r) = c["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    let gates = arr(&spec["readinessGates"]);
    vec![
        json!(format!("{ready}/{total}")),
        json!(or_none(reason)),
        json!(restarts.to_string()),
        json!(since(&o["metadata"]["creationTimestamp"])),
        json!(or_none(s(&st["podIP"]))),
        json!(or_none(s(&spec["nodeName"]))),
        json!(or_none(s(&st["nominatedNodeName"]))),
        json!(if gates.is_empty() {
            "<none>".to_string()
        } else {
            format!("0/{}", gates.len())
        }),
    ]
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = arr(&spec["ports"])
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", int(&p["port"])),
                None => format!("{}/{proto}", int(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn node_status(o: &Value) -> String {
    let ready = arr(&o["status"]["conditions"])
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| s(&c["status"]));
    let mut st = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"] == true {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn node_address(o: &Value, kind: &str) -> String {
    or_none(
        arr(&o["status"]["addresses"])
            .iter()
            .find(|a| a["type"] == kind)
            .map(|a| s(&a["address"]))
            .unwrap_or_default(),
    )
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(&o["metadata"]["name"]));
    let age = json!(since(&o["metadata"]["creationTimestamp"]));
    let spec = &o["spec"];
    let st = &o["status"];
    let mut row = match kind {
        "Pod" => {
            let mut r = vec![name];
            r.extend(pod_cells(o));
            return r;
        }
        "Namespace" => vec![name, json!(s(&st["phase"])), age],
        "Node" => {
            let labels = o["metadata"]["labels"].as_object();
            let roles: Vec<String> = labels
                .map(|m| {
                    m.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ni = &st["nodeInfo"];
            vec![
                name,
                json!(node_status(o)),
                json!(or_none(roles.join(","))),
                age,
                json!(s(&ni["kubeletVersion"])),
                json!(node_address(o, "InternalIP")),
                json!(node_address(o, "ExternalIP")),
                json!(or_none(s(&ni["osImage"]))),
                json!(or_none(s(&ni["kernelVersion"]))),
                json!(or_none(s(&ni["containerRuntimeVersion"]))),
            ]
        }
        "Service" => {
            let ext: Vec<String> = arr(&st["loadBalancer"]["ingress"])
                .iter()
                .map(|i| s(&i["ip"]))
                .chain(arr(&spec["externalIPs"]).iter().map(s))
                .collect();
            let ext = if ext.is_empty() {
                if spec["type"] == "LoadBalancer" {
                    "<pending>".to_string()
                } else {
                    "<none>".to_string()
                }
            } else {
                ext.join(",")
            };
            let sel = spec["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(ext),
                json!(service_ports(spec)),
                age,
                json!(or_none(sel)),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in arr(&o["subsets"]) {
                for a in arr(&sub["addresses"]) {
                    for p in arr(&sub["ports"]) {
                        eps.push(format!("{}:{}", s(&a["ip"]), int(&p["port"])));
                    }
                    if arr(&sub["ports"]).is_empty() {
                        eps.push(s(&a["ip"]));
                    }
                }
            }
            let text = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(or_none(text)), age]
        }
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), age]
        }
        "Secret" => vec![
            name,
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            age,
        ],
        "ServiceAccount" => vec![name, json!(arr(&o["secrets"]).len()), age],
        "Event" => {
            let io = &o["involvedObject"];
            let last = if o["lastTimestamp"].is_string() {
                &o["lastTimestamp"]
            } else if o["eventTime"].is_string() {
                &o["eventTime"]
            } else {
                &o["metadata"]["creationTimestamp"]
            };
            vec![
                json!(since(last)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!(
                    "{}/{}",
                    s(&io["kind"]).to_lowercase(),
                    s(&io["name"])
                )),
                json!(s(&o["message"])),
            ]
        }
        "Deployment" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&st["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(int(&st["updatedReplicas"])),
                json!(int(&st["availableReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(int(&spec["replicas"])),
                json!(int(&st["replicas"])),
                json!(int(&st["readyReplicas"])),
                age,
                json!(c),
                json!(i),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "DaemonSet" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            let ns = spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(int(&st["desiredNumberScheduled"])),
                json!(int(&st["currentNumberScheduled"])),
                json!(int(&st["numberReady"])),
                json!(int(&st["updatedNumberScheduled"])),
                json!(int(&st["numberAvailable"])),
                json!(or_none(ns)),
                age,
                json!(c),
                json!(i),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "Job" => {
            let (c, i) = containers_images(&spec["template"]["spec"]);
            let completions = spec["completions"].as_i64();
            let succeeded = int(&st["succeeded"]);
            let status = arr(&st["conditions"])
                .iter()
                .filter(|c| c["status"] == "True")
                .find_map(|c| match c["type"].as_str() {
                    Some("Complete") => Some("Complete"),
                    Some("Failed") => Some("Failed"),
                    Some("Suspended") => Some("Suspended"),
                    _ => None,
                })
                .unwrap_or("Running");
            let comp = match completions {
                Some(n) => format!("{succeeded}/{n}"),
                None => format!("{succeeded}/1 of {}", int(&spec["parallelism"]).max(1)),
            };
            let duration = match (
                st["startTime"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
                st["completionTime"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
            ) {
                (Some(a), Some(b)) => human_duration(b.as_second() - a.as_second()),
                (Some(a), None) => {
                    human_duration(jiff::Timestamp::now().as_second() - a.as_second())
                }
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(comp),
                json!(duration),
                age,
                json!(c),
                json!(i),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "Lease" => vec![name, json!(or_none(s(&spec["holderIdentity"]))), age],
        "ControllerRevision" => {
            // upstream: the controlling owner as `kind.group/name`
            let owner = arr(&o["metadata"]["ownerReferences"])
                .iter()
                .find(|r| r["controller"] == true)
                .map(|r| {
                    let api = s(&r["apiVersion"]);
                    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                    let kind = s(&r["kind"]).to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", s(&r["name"]))
                })
                .unwrap_or_default();
            vec![name, json!(or_none(owner)), json!(int(&o["revision"])), age]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = arr(&o["ports"])
                .iter()
                .map(|p| int(&p["port"]).to_string())
                .collect();
            let addrs: Vec<String> = arr(&o["endpoints"])
                .iter()
                .flat_map(|e| arr(&e["addresses"]).iter().map(s))
                .collect();
            vec![
                name,
                json!(s(&o["addressType"])),
                json!(or_none(ports.join(","))),
                json!(or_none(addrs.join(","))),
                age,
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = arr(&spec["rules"])
                .iter()
                .filter_map(|r| r["host"].as_str().map(String::from))
                .collect();
            let addr: Vec<String> = arr(&st["loadBalancer"]["ingress"])
                .iter()
                .map(|i| {
                    if i["ip"].is_string() {
                        s(&i["ip"])
                    } else {
                        s(&i["hostname"])
                    }
                })
                .collect();
            let ports = if arr(&spec["tls"]).is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name,
                json!(or_none(s(&spec["ingressClassName"]))),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(addr.join(",")),
                json!(ports),
                age,
            ]
        }
        _ => vec![name, age],
    };
    row.truncate(columns(kind).len());
    row
}

/// The object a row carries: the full object with `includeObject=Object`, else its metadata.
fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
        }
    }
}

pub fn table(
    def: &ResourceDef,
    items: &[Value],
    query: &Query,
    rv: &str,
    cont: Option<&str>,
) -> Value {
    let include = query.get("includeObject").unwrap_or("Metadata");
    let cols: Vec<Value> = columns(def.kind)
        .iter()
        .map(|(name, ty, prio)| {
            let mut c = json!({"name": name, "type": ty, "format": "", "description": "", "priority": prio});
            if *name == "Name" {
                c["format"] = json!("name");
            }
            c
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(def.kind, o), "object": row_object(o, include)}))
        .collect();
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::{RESOURCES, lookup};

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(86400 * 3 + 3600), "3d1h");
        assert_eq!(human_duration(86400 * 30), "30d");
    }

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        for r in RESOURCES {
            assert_eq!(
                cells(r.kind, &obj).len(),
                columns(r.kind).len(),
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let t = table(
            lookup("", "v1", "pods").unwrap(),
            &[pod],
            &Query::default(),
            "7",
            None,
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "p");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }
}
