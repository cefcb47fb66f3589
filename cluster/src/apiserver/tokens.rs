//! Service account tokens: JWTs (ES256) signed with the cluster's service account key, issued
//! through `serviceaccounts/<name>/token` (TokenRequest) and accepted as bearer tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::auth::UserInfo;
use super::status::{ApiError, ApiResult};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct Signer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    rng: SystemRandom,
}

/// What a valid token says.
#[derive(Debug, PartialEq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod (name, uid) a bound token dies with.
    pub pod: Option<(String, String)>,
    /// Who the token is meant for; the API server accepts only tokens meant for it.
    pub audiences: Vec<String>,
}

/// How long a token bound to a pod outlives the end of the pod's graceful deletion (as
/// upstream: it stays usable while the pod shuts down).
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// The object a token is bound to (TokenRequest `spec.boundObjectRef`); only pods are.
#[derive(Debug, Clone, Copy)]
pub struct BoundPod<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

impl Signer {
    /// From a PKCS#8 (DER) ECDSA P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| {
                anyhow::anyhow!("the service account key is not an ECDSA P-256 key: {e}")
            })?;
        let public = key.public_key().as_ref().to_vec();
        Ok(Signer { key, public, rng })
    }

    /// A token for service account `namespace/name` (uid), valid for `seconds`, bound to
    /// `pod` if given.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        pod: Option<BoundPod<'_>>,
        audiences: &[String],
        seconds: i64,
    ) -> ApiResult<(String, i64)> {
        let now = jiff::Timestamp::now().as_second();
        let exp = now + seconds;
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let mut claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": audiences,
            "iat": now, "nbf": now, "exp": exp,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        if let Some(p) = pod {
            claims["kubernetes.io"]["pod"] = json!({"name": p.name, "uid": p.uid});
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| ApiError::internal("signing a service account token failed"))?;
        Ok((
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())),
            exp,
        ))
    }

    /// Checks a token's signature, issuer and lifetime; returns its claims.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public);
        public.verify(format!("{h}.{p}").as_bytes(), &sig).ok()?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        let now = jiff::Timestamp::now().as_second();
        if claims["iss"] != ISSUER
            || claims["exp"].as_i64()? < now
            || claims["nbf"].as_i64().unwrap_or(0) > now + 60
        {
            return None;
        }
        let k = &claims["kubernetes.io"];
        let audiences = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(list) => list
                .iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        Some(Claims {
            audiences,
            namespace: k["namespace"].as_str()?.to_string(),
            name: k["serviceaccount"]["name"].as_str()?.to_string(),
            uid: k["serviceaccount"]["uid"].as_str()?.to_string(),
            pod: match &k["pod"] {
                Value::Null => None,
                p => Some((
                    p["name"].as_str()?.to_string(),
                    p["uid"].as_str()?.to_string(),
                )),
            },
        })
    }
}

/// Whether the objects a verified token depends on still hold: its audience is the API
/// server, its service account exists with the same uid and, for a token bound to a pod,
/// that pod exists with the same uid and has not been gone (deleted and past its grace
/// period) for more than a minute.
pub async fn still_valid(api: &super::ApiServer, c: &Claims) -> bool {
    if !c.audiences.iter().any(|a| a == ISSUER) {
        return false;
    }
    let ns = c.namespace.as_str();
    match current(api, "serviceaccounts", ns, &c.name).await {
        Some(sa) if sa["metadata"]["uid"].as_str() == Some(c.uid.as_str()) => {}
        _ => return false,
    }
    let Some((pod_name, pod_uid)) = &c.pod else {
        return true;
    };
    let Some(pod) = current(api, "pods", ns, pod_name).await else {
        return false;
    };
    if pod["metadata"]["uid"].as_str() != Some(pod_uid.as_str()) {
        return false;
    }
    let deleted_at = pod["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match deleted_at {
        Some(t) => t.as_second() + DELETED_POD_GRACE_SECONDS >= jiff::Timestamp::now().as_second(),
        None => true,
    }
}

/// The stored object `resource` `ns/name`, if any.
async fn current(api: &super::ApiServer, resource: &str, ns: &str, name: &str) -> Option<Value> {
    let def = super::registry::lookup("", "v1", resource)?;
    let kv = api
        .store
        .get(&super::storage::key(def, Some(ns), name), None)
        .await
        .ok()??;
    super::storage::decode(&kv).ok()
}

/// The service account a pod runs as.
pub fn pod_service_account(pod: &Value) -> &str {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|f| pod["spec"][*f].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
}

/// The pod (name, uid) a TokenRequest for service account `sa`'s `spec.boundObjectRef`
/// binds the token to: it must exist in the account's namespace (and have the uid, if one
/// is given) and run as `sa`.
pub async fn bound_pod(
    api: &super::ApiServer,
    namespace: Option<&str>,
    sa: &str,
    spec: &Value,
) -> ApiResult<Option<(String, String)>> {
    let r = &spec["boundObjectRef"];
    if r.is_null() {
        return Ok(None);
    }
    let invalid = |msg: &str| {
        ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            "",
            vec![super::status::Cause::invalid("spec.boundObjectRef", r, msg)],
        )
    };
    if r["kind"].as_str() != Some("Pod") {
        return Err(invalid("only tokens bound to a Pod are supported"));
    }
    let name = r["name"].as_str().unwrap_or("");
    let pods = super::registry::lookup("", "v1", "pods").expect("pods are served");
    let key = super::storage::key(pods, namespace, name);
    let pod = match api.store.get(&key, None).await? {
        Some(kv) => super::storage::decode(&kv)?,
        None => return Err(ApiError::not_found("", "pods", name)),
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty())
        && want != uid
    {
        return Err(invalid("the pod's uid does not match"));
    }
    if pod_service_account(&pod) != sa {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{sa}\" to pod running with different serviceaccount name."
        )));
    }
    Ok(Some((name.to_string(), uid)))
}

/// The user a service account token stands for.
pub fn user_for(c: &Claims) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{}:{}", c.namespace, c.name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", c.namespace),
            "system:authenticated".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate().unwrap();
        Signer::from_pkcs8(&key.serialize_der()).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let s = signer();
        let (t, exp) = s
            .issue("ns", "robot", "u-1", None, &["api".into()], 600)
            .unwrap();
        assert!(exp > jiff::Timestamp::now().as_second());
        assert_eq!(
            s.verify(&t),
            Some(Claims {
                namespace: "ns".into(),
                name: "robot".into(),
                uid: "u-1".into(),
                pod: None,
                audiences: vec!["api".into()],
            })
        );
        let mut bad = t.clone();
        bad.insert(bad.find('.').unwrap() + 2, 'x');
        assert_eq!(s.verify(&bad), None);
        assert_eq!(signer().verify(&t), None, "another key's token");
        let (expired, _) = s.issue("ns", "robot", "u-1", None, &[], -10).unwrap();
        assert_eq!(s.verify(&expired), None);
        assert_eq!(
            user_for(&s.verify(&t).unwrap()).name,
            "system:serviceaccount:ns:robot"
        );
        let pod = BoundPod {
            name: "p",
            uid: "u-2",
        };
        let (bound, _) = s.issue("ns", "robot", "u-1", Some(pod), &[], 600).unwrap();
        assert_eq!(
            s.verify(&bound).unwrap().pod,
            Some(("p".into(), "u-2".into()))
        );
    }
}
