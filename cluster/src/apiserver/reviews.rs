//! Self reviews: what the caller is (`kubectl auth whoami`) and whether it may do something
//! (`kubectl auth can-i`), answered from the same authorizer the server uses.

use serde_json::{Value, json};

use super::ApiServer;
use super::auth::{Attributes, UserInfo};
use super::request::Target;
use super::status::ApiResult;

pub async fn answer(
    api: &ApiServer,
    target: &Target,
    mut review: Value,
    user: &UserInfo,
) -> ApiResult<Value> {
    if !review.is_object() {
        review = json!({});
    }
    match target {
        Target::SelfSubjectReview => {
            review["apiVersion"] = json!("authentication.k8s.io/v1");
            review["kind"] = json!("SelfSubjectReview");
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        Target::SelfSubjectRulesReview => {
            review["apiVersion"] = json!("authorization.k8s.io/v1");
            review["kind"] = json!("SelfSubjectRulesReview");
            let ns = review["spec"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            review["status"] = super::authz::rules_review(api, user, &ns).await?;
        }
        _ => {
            review["apiVersion"] = json!("authorization.k8s.io/v1");
            review["kind"] = json!("SelfSubjectAccessReview");
            let spec = &review["spec"];
            let reason = match spec.get("resourceAttributes").filter(|v| v.is_object()) {
                Some(ra) => {
                    let s = |k: &str| ra[k].as_str().filter(|v| !v.is_empty());
                    let attrs = Attributes {
                        verb: s("verb").unwrap_or(""),
                        group: s("group").unwrap_or(""),
                        resource: s("resource").unwrap_or(""),
                        subresource: s("subresource"),
                        namespace: s("namespace"),
                        name: s("name"),
                    };
                    super::authz::authorize(api, user, &attrs).await?
                }
                // Non-resource paths (discovery, health) are open to every authenticated user.
                None => Some("non-resource URLs are open to authenticated users".into()),
            };
            review["status"] =
                json!({"allowed": reason.is_some(), "reason": reason.unwrap_or_default()});
        }
    }
    Ok(review)
}
