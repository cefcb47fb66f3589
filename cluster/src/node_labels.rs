//! Which labels a node may put on its own Node, as upstream's kubelet (`--node-labels`) and
//! NodeRestriction admission decide: labels outside the `kubernetes.io` and `k8s.io`
//! namespaces are free; inside them only the kubelet's own set. So a node cannot steer
//! workloads meant for other nodes (a `node-role.kubernetes.io/control-plane` selector, a
//! `node-restriction.kubernetes.io/` one) to itself.
//!
//! ros's one addition: the control-plane role label, for a node whose certificate is in
//! [`CONTROL_PLANE_NODES_GROUP`]. Only a control plane's machined issues such a certificate (it
//! holds the cluster CA key); the trust port signs workers' requests as `system:nodes` only.

/// The role label kubectl shows in ROLES, and the key of the control planes' NoSchedule taint.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The group (certificate O) of a control plane's own node identity.
pub const CONTROL_PLANE_NODES_GROUP: &str = "ros:control-plane-nodes";

/// Labels the kubelet sets on its Node itself.
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];
/// Label namespaces (and their subdomains) a kubelet may use freely.
const KUBELET_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

fn namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Whether the label is in Kubernetes' reserved namespaces.
fn is_kubernetes_label(key: &str) -> bool {
    let ns = namespace(key);
    in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io")
}

/// Whether a node may set (add, change or remove) this label on its own Node.
pub fn node_may_set(key: &str, control_plane: bool) -> bool {
    if !is_kubernetes_label(key) {
        return true;
    }
    if in_namespace(namespace(key), "node-restriction.kubernetes.io") {
        return false;
    }
    KUBELET_LABELS.contains(&key)
        || KUBELET_NAMESPACES
            .iter()
            .any(|d| in_namespace(namespace(key), d))
        || (control_plane && key == CONTROL_PLANE_LABEL)
}

/// The labels among `keys` a node may not set, sorted (for the error message).
pub fn forbidden<'a>(keys: impl IntoIterator<Item = &'a str>, control_plane: bool) -> Vec<String> {
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|k| !node_may_set(k, control_plane))
        .map(String::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_and_foreign_namespaces_are_free() {
        for key in [
            "tier",
            "example.com/pool",
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "kubelet.kubernetes.io/x",
            "sub.node.kubernetes.io/x",
            "notkubernetes.io/x",
        ] {
            assert!(node_may_set(key, false), "{key}");
        }
    }

    #[test]
    fn roles_and_node_restriction_labels_are_reserved() {
        for key in [
            "node-role.kubernetes.io/worker",
            CONTROL_PLANE_LABEL,
            "node-restriction.kubernetes.io/pci",
            "a.node-restriction.kubernetes.io/pci",
            "k8s.io/x",
            "kubernetes.io/role",
        ] {
            assert!(!node_may_set(key, false), "{key}");
        }
        // A control plane's own identity may carry its role label, and nothing else reserved.
        assert!(node_may_set(CONTROL_PLANE_LABEL, true));
        assert!(!node_may_set("node-role.kubernetes.io/worker", true));
        assert!(!node_may_set("node-restriction.kubernetes.io/pci", true));
        assert_eq!(
            forbidden(["tier", "node-role.kubernetes.io/b", "k8s.io/a"], false),
            ["k8s.io/a", "node-role.kubernetes.io/b"]
        );
    }
}
