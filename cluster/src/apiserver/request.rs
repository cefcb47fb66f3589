//! Turning a request path and query into what it asks for (as Kubernetes' RequestInfo).

use std::collections::HashMap;

use super::registry::{self, ResourceDef};
use super::status::{ApiError, ApiResult};

/// A request for a resource (not discovery).
#[derive(Debug)]
pub struct ResourceRequest {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path addresses.
#[derive(Debug)]
pub enum Target {
    Version,
    Health,
    ApiVersions,
    ApiGroups,
    ApiGroup(String),
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV2,
    /// `/openapi/v3` (empty) or one group-version's document (`api/v1`, `apis/apps/v1`).
    OpenApiV3(String),
    /// POST authorization.k8s.io/v1 selfsubjectaccessreviews (`kubectl auth can-i`).
    SelfSubjectAccessReview,
    /// POST authorization.k8s.io/v1 selfsubjectrulesreviews (`kubectl auth can-i --list`).
    SelfSubjectRulesReview,
    /// POST authentication.k8s.io/v1 selfsubjectreviews (`kubectl auth whoami`).
    SelfSubjectReview,
    Resource(ResourceRequest),
}

pub fn parse_path(path: &str) -> ApiResult<Target> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let not_found = || ApiError::path_not_found(path);
    match parts.as_slice() {
        ["version"] => Ok(Target::Version),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Target::Health),
        ["openapi", "v2"] | ["swagger.json"] => Ok(Target::OpenApiV2),
        ["openapi", "v3", rest @ ..] => Ok(Target::OpenApiV3(rest.join("/"))),
        ["api"] => Ok(Target::ApiVersions),
        ["apis"] => Ok(Target::ApiGroups),
        ["api", "v1"] => Ok(Target::ResourceList {
            group: String::new(),
            version: "v1".into(),
        }),
        ["apis", group] => Ok(Target::ApiGroup(group.to_string())),
        ["apis", group, version] => Ok(Target::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        }),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => Ok(Target::SelfSubjectAccessReview),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
        ] => Ok(Target::SelfSubjectRulesReview),
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] => {
            Ok(Target::SelfSubjectReview)
        }
        ["api", "v1", rest @ ..] => resource("", "v1", rest, path),
        ["apis", group, version, rest @ ..] => resource(group, version, rest, path),
        _ => Err(not_found()),
    }
}

fn resource(group: &str, version: &str, rest: &[&str], path: &str) -> ApiResult<Target> {
    let mut rest = rest;
    let mut namespace = None;
    // /namespaces/{ns}/{resource}... except the namespace's own subresources.
    if rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    let def =
        registry::lookup(group, version, rest[0]).ok_or_else(|| ApiError::path_not_found(path))?;
    if namespace.is_some() && !def.namespaced {
        return Err(ApiError::path_not_found(path));
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(ApiError::path_not_found(path));
    }
    if let Some(sub) = &subresource
        && def.subresource(sub).is_none()
    {
        return Err(ApiError::path_not_found(path));
    }
    Ok(Target::Resource(ResourceRequest {
        def,
        namespace,
        name,
        subresource,
    }))
}

/// How a write is done: for real or not (dryRun), and whether fields the kind does not have
/// are an error (fieldValidation=Strict) or dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub strict: bool,
}

/// Query parameters.
#[derive(Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(
            self.0.get(k).map(String::as_str),
            Some("1" | "true" | "True")
        )
    }
    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for query parameter {k}: {v:?} is not an integer"
                ))
            }),
        }
    }
    pub fn dry_run(&self) -> bool {
        self.get("dryRun").is_some()
    }

    pub fn write(&self) -> WriteOpts {
        WriteOpts {
            dry_run: self.dry_run(),
            strict: self.get("fieldValidation") == Some("Strict"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceRequest {
        match parse_path(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let r = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                r.def.plural,
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.def.plural, r.namespace, r.name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let r = res("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (r.def.plural, r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let r = res("/apis/apps/v1/deployments");
        assert_eq!(
            (r.def.plural, r.namespace, r.name),
            ("deployments", None, None)
        );
        let r = res("/apis/apps/v1/namespaces/a/deployments/d/scale");
        assert_eq!(r.subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/api/v1/widgets",
            "/apis/apps/v1/namespaces/a/nodes",
            "/api/v1/namespaces/a/pods/p/nope",
            "/foo",
        ] {
            assert_eq!(parse_path(p).unwrap_err().code, 404, "{p}");
        }
    }
}
