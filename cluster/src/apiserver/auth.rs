//! Who is calling (authentication) and may they do it (authorization).

use x509_parser::prelude::{FromDer, X509Certificate};

use super::pki::ADMIN_GROUP;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMIN_GROUP)
    }
}

/// The user a verified client certificate names: CN = user name, O = groups.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".to_string());
    Some(UserInfo { name, groups })
}

/// Paths anyone may read, authenticated or not (as Kubernetes' system:public-info-viewer).
pub fn is_public_path(path: &str) -> bool {
    matches!(
        path,
        "/version" | "/version/" | "/healthz" | "/livez" | "/readyz"
    )
}

/// What a request wants to do, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Decides whether `user` may do `attrs`. Admins may do everything; every authenticated user
/// may read discovery (checked by the caller); nodes may read everything and write their own
/// Node, Lease, Events and the status of pods.
pub fn allowed(user: &UserInfo, attrs: &Attributes<'_>) -> bool {
    if user.is_admin() {
        return true;
    }
    // Without RBAC: kube-system's service accounts run the cluster's own controllers; other
    // service accounts may read their own namespace.
    if let Some(rest) = user.name.strip_prefix("system:serviceaccount:") {
        let ns = rest.split(':').next().unwrap_or("");
        return ns == "kube-system"
            || (matches!(attrs.verb, "get" | "list" | "watch") && attrs.namespace == Some(ns));
    }
    if user.groups.iter().any(|g| g == "system:nodes")
        && let Some(node) = user.name.strip_prefix("system:node:")
    {
        if matches!(attrs.verb, "get" | "list" | "watch") {
            return true;
        }
        return match (attrs.resource, attrs.subresource) {
            ("nodes", _) => attrs.name.is_none_or(|n| n == node),
            ("leases", _) => {
                attrs.namespace == Some("kube-node-lease") && attrs.name.is_none_or(|n| n == node)
            }
            ("events", None) => true,
            ("pods", Some("status")) => true,
            ("pods", None) => matches!(attrs.verb, "delete" | "create"),
            _ => false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn attrs<'a>(
        verb: &'a str,
        resource: &'a str,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            resource,
            subresource: None,
            namespace: ns,
            name,
        }
    }

    #[test]
    fn admin_may_do_everything_others_nothing() {
        assert!(allowed(
            &user("admin", &[ADMIN_GROUP]),
            &attrs("delete", "pods", Some("x"), Some("y"))
        ));
        assert!(!allowed(
            &user("bob", &["dev"]),
            &attrs("get", "pods", Some("x"), Some("y"))
        ));
    }

    #[test]
    fn service_accounts_read_their_namespace() {
        let sa = user(
            "system:serviceaccount:app:robot",
            &["system:serviceaccounts"],
        );
        assert!(allowed(&sa, &attrs("list", "pods", Some("app"), None)));
        assert!(!allowed(&sa, &attrs("list", "pods", Some("other"), None)));
        assert!(!allowed(
            &sa,
            &attrs("delete", "pods", Some("app"), Some("p"))
        ));
        let sys = user(
            "system:serviceaccount:kube-system:controller",
            &["system:serviceaccounts"],
        );
        assert!(allowed(
            &sys,
            &attrs("delete", "pods", Some("app"), Some("p"))
        ));
    }

    #[test]
    fn node_touches_only_its_own_node_and_lease() {
        let n = user("system:node:n1", &["system:nodes"]);
        assert!(allowed(&n, &attrs("update", "nodes", None, Some("n1"))));
        assert!(!allowed(&n, &attrs("update", "nodes", None, Some("n2"))));
        assert!(allowed(
            &n,
            &attrs("update", "leases", Some("kube-node-lease"), Some("n1"))
        ));
        assert!(!allowed(
            &n,
            &attrs("update", "leases", Some("kube-system"), Some("n1"))
        ));
        assert!(allowed(&n, &attrs("list", "secrets", None, None)));
        assert!(!allowed(
            &n,
            &attrs("delete", "deployments", Some("d"), Some("x"))
        ));
    }
}
