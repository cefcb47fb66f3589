//! Checking the query options of a resource request as upstream does before anything runs:
//! an unknown `dryRun`, `fieldValidation` or `resourceVersionMatch` value is an Invalid
//! CreateOptions/UpdateOptions/PatchOptions/DeleteOptions/ListOptions (422), never ignored.

use http::Method;
use serde_json::json;

use super::request::Query;
use super::status::{ApiError, ApiResult, Cause};

/// The meta.k8s.io kind that carries the options of a request with this method.
fn options_kind(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        Method::PATCH => "PatchOptions",
        Method::DELETE => "DeleteOptions",
        _ => return None,
    })
}

pub fn check(method: &Method, query: &Query) -> ApiResult<()> {
    let mut causes = Vec::new();
    let kind = match options_kind(method) {
        Some(kind) => {
            if let Some(v) = query.0.get("dryRun")
                && v != "All"
                && !v.is_empty()
            {
                causes.push(Cause::not_supported("dryRun", &json!([v]), &["All"]));
            }
            if *method != Method::DELETE
                && let Some(v) = query.get("fieldValidation")
                && !matches!(v, "Ignore" | "Warn" | "Strict")
            {
                causes.push(Cause::not_supported(
                    "fieldValidation",
                    &json!(v),
                    &["Ignore", "Strict", "Warn"],
                ));
            }
            kind
        }
        None => {
            if let Some(v) = query.get("resourceVersionMatch") {
                if !matches!(v, "Exact" | "NotOlderThan") {
                    causes.push(Cause::not_supported(
                        "resourceVersionMatch",
                        &json!(v),
                        &["Exact", "NotOlderThan", ""],
                    ));
                } else if query.get("resourceVersion").is_none() {
                    causes.push(Cause::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
            }
            "ListOptions"
        }
    };
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid("meta.k8s.io", kind, "", causes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(method: Method, q: &str) -> Option<String> {
        check(&method, &Query::parse(Some(q))).err().map(|e| {
            assert_eq!(e.code, 422);
            e.message
        })
    }

    #[test]
    fn unknown_values_are_invalid_options() {
        assert_eq!(
            err(Method::POST, "dryRun=Bogus").as_deref(),
            Some(
                "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: [\"Bogus\"]: supported values: \"All\""
            )
        );
        assert!(err(Method::PATCH, "fieldValidation=Bogus").is_some());
        assert!(err(Method::GET, "resourceVersion=1&resourceVersionMatch=bogus").is_some());
        assert!(err(Method::GET, "resourceVersionMatch=Exact").is_some());
    }

    #[test]
    fn known_values_pass() {
        for (m, q) in [
            (Method::POST, "dryRun=All&fieldValidation=Strict"),
            (Method::PUT, "fieldValidation=Ignore"),
            (Method::DELETE, "dryRun=All"),
            (
                Method::GET,
                "resourceVersion=5&resourceVersionMatch=NotOlderThan",
            ),
            (Method::GET, "watch=1"),
        ] {
            assert_eq!(err(m, q), None, "{q}");
        }
    }
}
