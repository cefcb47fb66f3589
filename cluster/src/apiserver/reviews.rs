//! Self reviews: what the caller is (`kubectl auth whoami`) and whether it may do something
//! (`kubectl auth can-i`), answered from the same authorizer the server uses.

use serde_json::{Value, json};

use super::auth::{self, Attributes, UserInfo};
use super::request::Target;

pub fn answer(target: &Target, mut review: Value, user: &UserInfo) -> Value {
    if !review.is_object() {
        review = json!({});
    }
    match target {
        Target::SelfSubjectReview => {
            review["apiVersion"] = json!("authentication.k8s.io/v1");
            review["kind"] = json!("SelfSubjectReview");
            review["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
        }
        _ => {
            review["apiVersion"] = json!("authorization.k8s.io/v1");
            review["kind"] = json!("SelfSubjectAccessReview");
            let spec = &review["spec"];
            let allowed = match spec.get("resourceAttributes").filter(|v| v.is_object()) {
                Some(ra) => {
                    let s = |k: &str| ra[k].as_str().filter(|v| !v.is_empty());
                    let attrs = Attributes {
                        verb: s("verb").unwrap_or(""),
                        resource: s("resource").unwrap_or(""),
                        subresource: s("subresource"),
                        namespace: s("namespace"),
                        name: s("name"),
                    };
                    auth::allowed(user, &attrs)
                }
                // Non-resource paths (discovery, health) are open to every authenticated user.
                None => true,
            };
            review["status"] = json!({"allowed": allowed, "reason": if allowed { "allowed by the ros authorizer" } else { "" }});
        }
    }
    review
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn can_i_follows_the_authorizer() {
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["dev".into()],
        };
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec![crate::apiserver::pki::ADMIN_GROUP.into()],
        };
        let q = json!({"spec": {"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "x"}}});
        assert_eq!(
            answer(&Target::SelfSubjectAccessReview, q.clone(), &bob)["status"]["allowed"],
            false
        );
        assert_eq!(
            answer(&Target::SelfSubjectAccessReview, q, &admin)["status"]["allowed"],
            true
        );
        assert_eq!(
            answer(&Target::SelfSubjectReview, json!({}), &bob)["status"]["userInfo"]["username"],
            "bob"
        );
    }
}
