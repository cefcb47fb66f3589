//! Who is calling (authentication): client certificates signed by the cluster CA and service
//! account bearer tokens. What they may do is decided in [`super::authz`].

use x509_parser::prelude::{FromDer, X509Certificate};

use super::pki::ADMIN_GROUP;

pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn is_admin(&self) -> bool {
        self.in_group(ADMIN_GROUP)
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node this user is, when it is a node identity (`system:node:<name>` in
    /// `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group(NODES_GROUP) {
            return None;
        }
        self.name
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|n| !n.is_empty())
    }
}

/// How a connection authenticated at the TLS layer.
#[derive(Debug, Clone)]
pub enum PeerIdentity {
    /// No client certificate: the request may still carry a bearer token.
    None,
    /// A certificate that chains to the cluster CA.
    User(UserInfo),
    /// A certificate that does not verify (another CA, expired): every request gets 401.
    Invalid,
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
    groups.push(AUTHENTICATED_GROUP.to_string());
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
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    /// Upstream's 403 message: `pods is forbidden: User "x" cannot list resource "pods" in
    /// API group "" in the namespace "default"`.
    pub fn forbidden_message(&self, user: &str) -> String {
        let qualified = if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let what = match self.name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified,
        };
        let res = match self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.to_string(),
        };
        let scope = match self.namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        format!(
            "{what} is forbidden: User \"{user}\" cannot {} resource \"{res}\" in API group \"{}\"{scope}",
            self.verb, self.group
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_need_the_nodes_group() {
        let n = UserInfo {
            name: "system:node:n1".into(),
            groups: vec![NODES_GROUP.into()],
        };
        assert_eq!(n.node_name(), Some("n1"));
        let fake = UserInfo {
            name: "system:node:n1".into(),
            groups: vec![],
        };
        assert_eq!(fake.node_name(), None);
    }

    #[test]
    fn forbidden_messages_read_like_upstream() {
        let a = Attributes {
            verb: "list",
            group: "",
            resource: "pods",
            subresource: None,
            namespace: Some("default"),
            name: None,
        };
        assert_eq!(
            a.forbidden_message("x"),
            "pods is forbidden: User \"x\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let a = Attributes {
            verb: "update",
            group: "",
            resource: "nodes",
            subresource: None,
            namespace: None,
            name: Some("n2"),
        };
        assert_eq!(
            a.forbidden_message("system:node:n1"),
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot update resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
