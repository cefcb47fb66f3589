//! Required inter-pod affinity and anti-affinity (`requiredDuringSchedulingIgnoredDuringExecution`)
//! over any topology key (kubernetes.io/hostname is the usual one): a pod goes only where
//! its affinity terms find a matching pod in the same topology domain, never where its
//! anti-affinity terms do, and never where an existing pod's anti-affinity matches it.
//!
//! Namespaces of a term: its `namespaces` list, all namespaces for an empty
//! `namespaceSelector`, otherwise the pod's own namespace. A non-empty `namespaceSelector`
//! (namespace labels) is not evaluated: it selects nothing beyond the listed namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::filter::NodeInfo;

/// A pod already placed on a node (shared with the informer cache, not copied).
#[derive(Debug, Clone)]
pub struct Placed(pub Arc<Pod>);

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Placed {
    pub fn of(pod: &Pod) -> Placed {
        Placed(Arc::new(pod.clone()))
    }

    pub fn namespace(&self) -> &str {
        self.0.metadata.namespace.as_deref().unwrap_or_default()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.0.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// Its required anti-affinity terms (checked against pods that come later).
    pub fn anti(&self) -> &[PodAffinityTerm] {
        required_anti_affinity(&self.0)
    }
}

pub fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

pub fn required_anti_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// Whether a label selector matches `labels` (an absent selector matches nothing, an empty
/// one everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && sel.match_expressions.iter().flatten().all(|r| {
            let value = labels.get(&r.key);
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether `term` (of a pod in `owner_ns`) selects `other`.
pub fn term_selects(term: &PodAffinityTerm, owner_ns: &str, other: &Placed) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = if !listed.is_empty() {
        listed.iter().any(|n| n == other.namespace())
    } else {
        match &term.namespace_selector {
            Some(s) if s.match_labels.is_none() && s.match_expressions.is_none() => true,
            Some(_) => false,
            None => other.namespace() == owner_ns,
        }
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, other.labels()))
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.metadata.labels.as_ref()?.get(key)
}

/// Nodes in the same topology domain as `node` for `key` (none when it lacks the label).
fn domain<'a>(
    key: &'a str,
    node: &'a Node,
    all: &'a BTreeMap<String, NodeInfo>,
) -> impl Iterator<Item = &'a NodeInfo> + 'a {
    let value = label(node, key);
    all.values()
        .filter(move |n| value.is_some() && label(&n.node, key) == value)
}

/// Pods placed so far that carry required anti-affinity terms, with their node.
pub type AntiIndex = Vec<(String, Placed)>;

pub fn anti_index(all: &BTreeMap<String, NodeInfo>) -> AntiIndex {
    all.iter()
        .flat_map(|(name, info)| {
            info.placed
                .iter()
                .filter(|p| !p.anti().is_empty())
                .map(move |p| (name.clone(), p.clone()))
        })
        .collect()
}

/// The inter-pod checks of `pod` on `candidate`; `Err` names the first rule broken.
pub fn check(
    pod: &Pod,
    candidate: &NodeInfo,
    all: &BTreeMap<String, NodeInfo>,
    anti: &AntiIndex,
) -> Result<(), &'static str> {
    let affinity = required_affinity(pod);
    let own_anti = required_anti_affinity(pod);
    if affinity.is_empty() && own_anti.is_empty() && anti.is_empty() {
        return Ok(());
    }
    let me = Placed::of(pod);
    for term in affinity {
        let key = &term.topology_key;
        if label(&candidate.node, key).is_none() {
            return Err("node(s) didn't match pod affinity rules");
        }
        let near = domain(key, &candidate.node, all).any(|n| {
            n.placed
                .iter()
                .any(|o| term_selects(term, me.namespace(), o))
        });
        if !near {
            // The first pod of a group that selects itself may start anywhere.
            let anywhere = all.values().any(|n| {
                n.placed
                    .iter()
                    .any(|o| term_selects(term, me.namespace(), o))
            });
            if anywhere || !term_selects(term, me.namespace(), &me) {
                return Err("node(s) didn't match pod affinity rules");
            }
        }
    }
    for term in own_anti {
        let clash = domain(&term.topology_key, &candidate.node, all).any(|n| {
            n.placed
                .iter()
                .any(|o| term_selects(term, me.namespace(), o))
        });
        if clash {
            return Err("node(s) didn't match pod anti-affinity rules");
        }
    }
    for (node, other) in anti {
        let Some(theirs) = all.get(node) else {
            continue;
        };
        for term in other.anti() {
            let key = &term.topology_key;
            let same =
                label(&theirs.node, key).is_some_and(|v| label(&candidate.node, key) == Some(v));
            if same && term_selects(term, other.namespace(), &me) {
                return Err("node(s) didn't satisfy existing pods anti-affinity rules");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(name: &str, zone: &str) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name, "zone": zone}}}))
            .unwrap(),
        )
    }

    fn pod(labels: serde_json::Value, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default", "labels": labels},
            "spec": {"containers": [], "affinity": affinity}}),
        )
        .unwrap()
    }

    fn term(key: &str, app: &str) -> serde_json::Value {
        json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]})
    }

    #[test]
    fn anti_affinity_keeps_pods_apart_both_ways() {
        let mut all: BTreeMap<String, NodeInfo> = [("a", "z1"), ("b", "z1"), ("c", "z2")]
            .iter()
            .map(|(n, z)| (n.to_string(), info(n, z)))
            .collect();
        let web = pod(
            json!({"app": "web"}),
            json!({"podAntiAffinity": term("kubernetes.io/hostname", "web")}),
        );
        all.get_mut("a").unwrap().add(&web);
        let idx = anti_index(&all);
        assert!(check(&web, &all["a"], &all, &idx).is_err());
        assert!(check(&web, &all["b"], &all, &idx).is_ok());
        // A plain pod labelled app=web is kept off node a by the existing pod's rule.
        let plain = pod(json!({"app": "web"}), json!({}));
        assert_eq!(
            check(&plain, &all["a"], &all, &idx),
            Err("node(s) didn't satisfy existing pods anti-affinity rules")
        );
        assert!(check(&plain, &all["c"], &all, &idx).is_ok());
        // Zone-wide anti-affinity excludes the whole zone.
        let zonal = pod(
            json!({"app": "db"}),
            json!({"podAntiAffinity": term("zone", "web")}),
        );
        assert!(check(&zonal, &all["b"], &all, &idx).is_err());
        assert!(check(&zonal, &all["c"], &all, &idx).is_ok());
    }

    #[test]
    fn affinity_follows_matching_pods() {
        let mut all: BTreeMap<String, NodeInfo> = [("a", "z1"), ("b", "z2")]
            .iter()
            .map(|(n, z)| (n.to_string(), info(n, z)))
            .collect();
        let follower = pod(
            json!({"app": "cache"}),
            json!({"podAffinity": term("kubernetes.io/hostname", "web")}),
        );
        let idx = AntiIndex::new();
        // No web pod anywhere and the follower does not select itself: nowhere.
        assert!(check(&follower, &all["a"], &all, &idx).is_err());
        let web = pod(json!({"app": "web"}), json!({}));
        all.get_mut("b").unwrap().add(&web);
        assert!(check(&follower, &all["a"], &all, &idx).is_err());
        assert!(check(&follower, &all["b"], &all, &idx).is_ok());
        // A pod whose term selects itself may start a group anywhere.
        let first = pod(
            json!({"app": "solo"}),
            json!({"podAffinity": term("kubernetes.io/hostname", "solo")}),
        );
        assert!(check(&first, &all["a"], &all, &idx).is_ok());
        let sel: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}),
        )
        .unwrap();
        assert!(selector_matches(&sel, &BTreeMap::new()));
    }
}
