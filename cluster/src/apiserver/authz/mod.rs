//! Authorization: may this user do this request? Checked on every resource request and by
//! `kubectl auth can-i` (SelfSubjectAccessReview), in upstream's order:
//! 1. `system:masters` may do everything;
//! 2. the node authorizer lets a kubelet (`system:node:<name>` in `system:nodes`) do what its
//!    node needs, and nothing about other nodes' pods, secrets or config maps;
//! 3. every authenticated user may review its own access (as `system:basic-user`);
//! 4. RBAC: Roles, ClusterRoles and their bindings stored in rbac.authorization.k8s.io/v1.
//!
//! Anything else is denied (403).

pub mod bootstrap;
mod escalation;
mod node;
mod node_labels;
pub mod rbac;

use serde_json::Value;

use super::ApiServer;
use super::auth::{Attributes, UserInfo};
use super::status::{ApiError, ApiResult};

/// Why a request was allowed (for SelfSubjectAccessReview's `status.reason`), or None.
pub async fn authorize(
    api: &ApiServer,
    user: &UserInfo,
    a: &Attributes<'_>,
) -> ApiResult<Option<String>> {
    if user.is_admin() {
        return Ok(Some("allowed: member of system:masters".into()));
    }
    if let Some(node) = user.node_name()
        && node::allows(api, node, a).await?
    {
        return Ok(Some(format!(
            "allowed by the node authorizer for node {node}"
        )));
    }
    if basic_user_allows(a) {
        return Ok(Some("allowed: every user may review its own access".into()));
    }
    rbac::allows(api, user, a).await
}

/// Authorizes `a` for `user`; a denial is upstream's 403 Forbidden.
pub async fn check(api: &ApiServer, user: &UserInfo, a: &Attributes<'_>) -> ApiResult<()> {
    match authorize(api, user, a).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::forbidden(a.forbidden_message(&user.name))),
    }
}

/// What a write's body must satisfy beyond its verb: a node creates only its own Node and
/// Lease and sets only the labels a node may set on it (upstream's NodeRestriction
/// admission; a control plane's identity also its role label); RBAC writes grant no permission the writer
/// does not hold (escalation prevention).
pub async fn admit(
    api: &ApiServer,
    user: &UserInfo,
    a: &Attributes<'_>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<()> {
    if user.is_admin() {
        return Ok(());
    }
    if a.verb == "create" && user.node_name().is_some() {
        admit_create(user, a, &super::objects::parse_body(content_type, body)?)?;
    }
    if let Some(node) = user.node_name() {
        node_labels::admit(api, user, node, a, content_type, body).await?;
    }
    if let Some(node) = user.node_name()
        && a.verb == "create"
        && a.subresource == Some("token")
    {
        let req = super::objects::parse_body(content_type, body)?;
        node::admit_token_request(api, node, a, &req).await?;
    }
    escalation::check(api, user, a, content_type, body).await
}

fn admit_create(user: &UserInfo, a: &Attributes<'_>, body: &Value) -> ApiResult<()> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if user.is_admin() || a.verb != "create" || a.subresource.is_some() {
        return Ok(());
    }
    let name = body["metadata"]["name"].as_str().unwrap_or("");
    // Upstream NodeRestriction's wording.
    let denial = match (a.group, a.resource) {
        ("", "nodes") if name != node => format!(
            "nodes \"{name}\" is forbidden: node \"{node}\" is not allowed to modify node \"{name}\""
        ),
        ("coordination.k8s.io", "leases") if name != node => format!(
            "leases.coordination.k8s.io \"{name}\" is forbidden: can only access node lease with the same name as the requesting node"
        ),
        _ => return Ok(()),
    };
    Err(ApiError::forbidden(denial))
}

/// SelfSubjectRulesReview's status: what `user` may do in `namespace` (`kubectl auth can-i
/// --list`). The node authorizer's object-based rules are listed broadly, so a node's answer
/// is marked incomplete.
pub async fn rules_review(api: &ApiServer, user: &UserInfo, namespace: &str) -> ApiResult<Value> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| serde_json::json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let mut rules = vec![
        rule(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            &["create"],
        ),
        rule(
            &["authentication.k8s.io"],
            &["selfsubjectreviews"],
            &["create"],
        ),
    ];
    let mut incomplete = false;
    if user.is_admin() {
        rules.insert(0, rule(&["*"], &["*"], &["*"]));
    }
    if user.node_name().is_some() {
        incomplete = true;
        rules.push(rule(
            &[""],
            &["pods", "services", "endpoints", "nodes"],
            &["get", "list", "watch"],
        ));
        rules.push(rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "watch"],
        ));
        rules.push(rule(&[""], &["events"], &["create", "update", "patch"]));
    }
    let ns = (!namespace.is_empty()).then_some(namespace);
    rules.extend(rbac::rules_for(api, user, ns).await?);
    let paths = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
    ];
    Ok(serde_json::json!({
        "resourceRules": rules,
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": paths}],
        "incomplete": incomplete,
    }))
}

/// `system:basic-user`: self reviews (`kubectl auth can-i`, `kubectl auth whoami`).
fn basic_user_allows(a: &Attributes<'_>) -> bool {
    a.verb == "create"
        && matches!(
            (a.group, a.resource),
            (
                "authorization.k8s.io",
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            ) | ("authentication.k8s.io", "selfsubjectreviews")
        )
}
