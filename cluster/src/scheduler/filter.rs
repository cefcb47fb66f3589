//! The feasibility checks: does a pod fit on a node? Each returns the reason it does not,
//! in the words kube-scheduler uses, so "0/3 nodes are available: ..." reads the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};

use super::quantity;

/// What a pod asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub cpu_milli: i128,
    pub memory: i128,
}

/// A host port a pod takes: (hostIP, port, protocol).
pub type HostPort = (String, i32, String);

/// A node and what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub requested: Request,
    pub pods: usize,
    pub host_ports: Vec<HostPort>,
    /// Pods per controlling owner uid (for spreading).
    pub by_owner: HashMap<String, usize>,
    /// The placed pods' namespaces, labels and anti-affinity (for inter-pod affinity).
    pub placed: Vec<super::affinity::Placed>,
    /// Allocatable cpu (milli), memory and pods, parsed once.
    alloc: [Option<i128>; 3],
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        Self::from_shared(Arc::new(node))
    }

    /// From a node shared with the informer cache.
    pub fn from_shared(node: Arc<Node>) -> Self {
        let alloc = [
            parse_allocatable(&node, "cpu"),
            parse_allocatable(&node, "memory"),
            parse_allocatable(&node, "pods"),
        ];
        NodeInfo {
            alloc,
            node,
            requested: Request::default(),
            pods: 0,
            host_ports: Vec::new(),
            by_owner: HashMap::new(),
            placed: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// Accounts for a pod placed on this node.
    pub fn add(&mut self, pod: &Pod) {
        self.add_shared(Arc::new(pod.clone()));
    }

    /// `add` for a pod shared with the informer cache.
    pub fn add_shared(&mut self, shared: Arc<Pod>) {
        let pod = &*shared;
        let r = request(pod);
        self.requested.cpu_milli += r.cpu_milli;
        self.requested.memory += r.memory;
        self.pods += 1;
        self.host_ports.extend(host_ports(pod));
        if let Some(uid) = controller_uid(pod) {
            *self.by_owner.entry(uid).or_default() += 1;
        }
        self.placed.push(super::affinity::Placed(shared.clone()));
    }

    /// Allocatable (falling back to capacity) of `resource`, in milli-units for cpu.
    pub fn allocatable(&self, resource: &str) -> Option<i128> {
        match resource {
            "cpu" => self.alloc[0],
            "memory" => self.alloc[1],
            "pods" => self.alloc[2],
            _ => parse_allocatable(&self.node, resource),
        }
    }
}

fn parse_allocatable(node: &Node, resource: &str) -> Option<i128> {
    let status = node.status.as_ref()?;
    let q = status
        .allocatable
        .as_ref()
        .and_then(|a| a.get(resource))
        .or_else(|| status.capacity.as_ref().and_then(|c| c.get(resource)))?;
    if resource == "cpu" {
        quantity::milli(&q.0)
    } else {
        quantity::units(&q.0)
    }
}

/// The uid of the pod's controlling owner.
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// Sum of container requests (limits when no request is given), at least the largest init
/// container's.
pub fn request(pod: &Pod) -> Request {
    let Some(spec) = pod.spec.as_ref() else {
        return Request::default();
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| -> Request {
        let res = c.resources.as_ref();
        let get = |name: &str, milli: bool| -> i128 {
            let q = res
                .and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(name))
                .or_else(|| {
                    res.and_then(|r| r.limits.as_ref())
                        .and_then(|m| m.get(name))
                });
            q.and_then(|q| {
                if milli {
                    quantity::milli(&q.0)
                } else {
                    quantity::units(&q.0)
                }
            })
            .unwrap_or(0)
        };
        Request {
            cpu_milli: get("cpu", true),
            memory: get("memory", false),
        }
    };
    let mut sum = Request::default();
    for c in &spec.containers {
        let r = of(c);
        sum.cpu_milli += r.cpu_milli;
        sum.memory += r.memory;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        sum.cpu_milli = sum.cpu_milli.max(r.cpu_milli);
        sum.memory = sum.memory.max(r.memory);
    }
    sum
}

pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|&h| h > 0)?;
            Some((
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                hp,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect()
}

/// Runs every check; `Err` carries the first reason the pod does not fit.
pub fn fits(pod: &Pod, info: &NodeInfo) -> Result<(), &'static str> {
    let node = &info.node;
    if !ready(node) {
        return Err("node(s) were not ready");
    }
    // Borrowed, not cloned: this runs for every (pod, node) pair.
    let no_spec;
    let spec = match pod.spec.as_ref() {
        Some(s) => s,
        None => {
            no_spec = PodSpec::default();
            &no_spec
        }
    };
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let unsched = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(&unsched, spec.tolerations.as_deref().unwrap_or_default()) {
            return Err("node(s) were unschedulable");
        }
    }
    let no_labels = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return Err("node(s) didn't match Pod's node affinity/selector");
    }
    if let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !terms
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, info.name()))
    {
        return Err("node(s) didn't match Pod's node affinity/selector");
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .any(|t| !tolerated(t, tolerations))
    {
        return Err("node(s) had untolerated taint(s)");
    }
    let want = request(pod);
    if let Some(max) = info.allocatable("pods")
        && (info.pods as i128) + 1 > max
    {
        return Err("Too many pods");
    }
    if want.cpu_milli > 0
        && let Some(cpu) = info.allocatable("cpu")
        && info.requested.cpu_milli + want.cpu_milli > cpu
    {
        return Err("Insufficient cpu");
    }
    if want.memory > 0
        && let Some(mem) = info.allocatable("memory")
        && info.requested.memory + want.memory > mem
    {
        return Err("Insufficient memory");
    }
    for (ip, port, proto) in host_ports(pod) {
        let clash = info.host_ports.iter().any(|(oip, oport, oproto)| {
            *oport == port
                && *oproto == proto
                && (ip == *oip || ip == "0.0.0.0" || oip == "0.0.0.0")
        });
        if clash {
            return Err("node(s) didn't have free ports for the requested pod ports");
        }
    }
    Ok(())
}

/// The node's Ready condition is True.
pub fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether some toleration matches the taint (key, value, effect).
pub fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(name);
            requirement(r, v)
        })
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(serde_json::from_value(v).unwrap())
    }

    fn ready_node(extra: serde_json::Value) -> serde_json::Value {
        let mut n = json!({
            "metadata": {"name": "n1", "labels": {"disk": "ssd", "gen": "5"}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "2", "memory": "1Gi", "pods": "2"}}
        });
        json_patch::merge(&mut n, &extra);
        n
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        json_patch::merge(&mut p["spec"], &spec);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn the_control_plane_taint_keeps_out_pods_that_do_not_tolerate_it() {
        // As kubeadm and Talos register a control plane (no value, NoSchedule).
        let cp = node(ready_node(json!({"spec": {"taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}})));
        assert_eq!(
            fits(&pod(json!({})), &cp),
            Err("node(s) had untolerated taint(s)")
        );
        for tolerations in [
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]),
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
            json!([{"operator": "Exists"}]),
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Equal", "value": ""}]),
        ] {
            let p = pod(json!({"tolerations": tolerations}));
            assert_eq!(fits(&p, &cp), Ok(()), "{tolerations}");
        }
        for tolerations in [
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoExecute"}]),
            json!([{"key": "node-role.kubernetes.io/master", "operator": "Exists"}]),
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Equal", "value": "true"}]),
        ] {
            let p = pod(json!({"tolerations": tolerations}));
            assert!(fits(&p, &cp).is_err(), "{tolerations}");
        }
        // PreferNoSchedule only weighs in scoring, it filters nothing out.
        let soft = node(ready_node(json!({"spec": {"taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "PreferNoSchedule"}]}})));
        assert_eq!(fits(&pod(json!({})), &soft), Ok(()));
    }

    #[test]
    fn checks() {
        let n = node(ready_node(json!({})));
        assert_eq!(fits(&pod(json!({})), &n), Ok(()));
        let not_ready = node(ready_node(
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        ));
        assert!(fits(&pod(json!({})), &not_ready).is_err());
        let cordoned = node(ready_node(json!({"spec": {"unschedulable": true}})));
        assert!(fits(&pod(json!({})), &cordoned).is_err());
        assert!(fits(&pod(json!({"nodeSelector": {"disk": "hdd"}})), &n).is_err());
        assert!(fits(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &n).is_ok());
        let aff = |op: &str, vals: serde_json::Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gen", "operator": op, "values": vals}]}]}}}}),
            )
        };
        assert!(fits(&aff("Gt", json!(["4"])), &n).is_ok());
        assert!(fits(&aff("Lt", json!(["4"])), &n).is_err());
        assert!(fits(&aff("In", json!(["5", "6"])), &n).is_ok());
        assert!(fits(&aff("NotIn", json!(["5"])), &n).is_err());
        let tainted = node(ready_node(
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        ));
        assert!(fits(&pod(json!({})), &tainted).is_err());
        let tol = pod(json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v"}]}));
        assert!(fits(&tol, &tainted).is_ok());
        let big = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m"}}}]}),
        );
        let mut busy = n.clone();
        busy.add(&big);
        assert_eq!(fits(&big, &busy), Err("Insufficient cpu"));
        busy.add(&pod(json!({})));
        assert_eq!(fits(&pod(json!({})), &busy), Err("Too many pods"));
        let hp = pod(
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        let mut with_port = n.clone();
        with_port.add(&hp);
        assert!(fits(&hp, &with_port).is_err());
    }
}
