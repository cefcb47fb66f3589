//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers, each allowed
//! only when the caller may `impersonate` it, as upstream checks:
//! users (`users`, or `serviceaccounts` in the account's namespace for
//! `system:serviceaccount:<ns>:<name>`), `groups`, and in authentication.k8s.io `uids` and
//! `userextras/<key>`. The request then runs as the impersonated user.

use http::HeaderMap;

use super::ApiServer;
use super::auth::{AUTHENTICATED_GROUP, Attributes, SERVICE_ACCOUNT_PREFIX, UserInfo};
use super::authz;
use super::status::{ApiError, ApiResult};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const ANONYMOUS: &str = "system:anonymous";

/// What the headers ask to impersonate.
#[derive(Debug, Default, PartialEq)]
struct Request {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: Vec<(String, String)>,
}

fn values(headers: &HeaderMap, name: &str) -> ApiResult<Vec<String>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid text")))
        })
        .collect()
}

fn parse(headers: &HeaderMap) -> ApiResult<Request> {
    let single = |name: &str| -> ApiResult<Option<String>> {
        let mut v = values(headers, name)?;
        if v.len() > 1 {
            return Err(ApiError::bad_request(format!(
                "only one {name} header may be given"
            )));
        }
        Ok(v.pop())
    };
    let mut req = Request {
        user: single(USER)?,
        groups: values(headers, GROUP)?,
        uid: single(UID)?,
        extra: Vec::new(),
    };
    for name in headers.keys() {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            // Keys are percent-encoded in the header name (upstream unescapes them).
            let key = percent_decode(key).to_lowercase();
            for v in values(headers, name.as_str())? {
                req.extra.push((key.clone(), v));
            }
        }
    }
    if req.user.is_none() && (!req.groups.is_empty() || req.uid.is_some() || !req.extra.is_empty())
    {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        ));
    }
    Ok(req)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user the request runs as: `caller`, or whom the headers impersonate if `caller` may.
pub async fn apply(api: &ApiServer, caller: UserInfo, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let req = parse(headers)?;
    let Some(name) = req.user else {
        return Ok(caller);
    };
    let mut groups = Vec::new();
    let sa = name
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    let user_check = match sa {
        Some((ns, sa_name)) => {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
            Attributes {
                verb: "impersonate",
                group: "",
                resource: "serviceaccounts",
                subresource: None,
                namespace: Some(ns),
                name: Some(sa_name),
            }
        }
        None => Attributes {
            verb: "impersonate",
            group: "",
            resource: "users",
            subresource: None,
            namespace: None,
            name: Some(&name),
        },
    };
    authz::check(api, &caller, &user_check).await?;
    for g in &req.groups {
        authz::check(api, &caller, &cluster_scoped("", "groups", None, g)).await?;
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    if let Some(uid) = &req.uid {
        authz::check(
            api,
            &caller,
            &cluster_scoped("authentication.k8s.io", "uids", None, uid),
        )
        .await?;
    }
    for (key, value) in &req.extra {
        authz::check(
            api,
            &caller,
            &cluster_scoped("authentication.k8s.io", "userextras", Some(key), value),
        )
        .await?;
    }
    if name != ANONYMOUS && !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    tracing::debug!("{} impersonates {name} {groups:?}", caller.name);
    Ok(UserInfo { name, groups })
}

fn cluster_scoped<'a>(
    group: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    name: &'a str,
) -> Attributes<'a> {
    Attributes {
        verb: "impersonate",
        group,
        resource,
        subresource,
        namespace: None,
        name: Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_are_read_as_upstream_sends_them() {
        let r = parse(&headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "a"),
            ("Impersonate-Group", "b"),
            ("Impersonate-Uid", "u1"),
            ("Impersonate-Extra-Scopes%2Fx", "s1"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request {
                user: Some("bob".into()),
                groups: vec!["a".into(), "b".into()],
                uid: Some("u1".into()),
                extra: vec![("scopes/x".into(), "s1".into())],
            }
        );
        assert_eq!(parse(&headers(&[])).unwrap(), Request::default());
    }

    #[test]
    fn groups_without_a_user_are_refused() {
        let e = parse(&headers(&[("Impersonate-Group", "a")])).unwrap_err();
        assert_eq!(e.code, 400);
        let e = parse(&headers(&[
            ("Impersonate-User", "a"),
            ("Impersonate-User", "b"),
        ]))
        .unwrap_err();
        assert_eq!(e.code, 400);
    }
}
