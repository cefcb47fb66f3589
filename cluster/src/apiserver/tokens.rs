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

    /// A token for service account `namespace/name` (uid), valid for `seconds`.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        seconds: i64,
    ) -> ApiResult<(String, i64)> {
        let now = jiff::Timestamp::now().as_second();
        let exp = now + seconds;
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": audiences,
            "iat": now, "nbf": now, "exp": exp,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
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
        Some(Claims {
            namespace: k["namespace"].as_str()?.to_string(),
            name: k["serviceaccount"]["name"].as_str()?.to_string(),
            uid: k["serviceaccount"]["uid"].as_str()?.to_string(),
        })
    }
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
        let (t, exp) = s.issue("ns", "robot", "u-1", &["api".into()], 600).unwrap();
        assert!(exp > jiff::Timestamp::now().as_second());
        assert_eq!(
            s.verify(&t),
            Some(Claims {
                namespace: "ns".into(),
                name: "robot".into(),
                uid: "u-1".into()
            })
        );
        let mut bad = t.clone();
        bad.insert(bad.find('.').unwrap() + 2, 'x');
        assert_eq!(s.verify(&bad), None);
        assert_eq!(signer().verify(&t), None, "another key's token");
        let (expired, _) = s.issue("ns", "robot", "u-1", &[], -10).unwrap();
        assert_eq!(s.verify(&expired), None);
        assert_eq!(
            user_for(&s.verify(&t).unwrap()).name,
            "system:serviceaccount:ns:robot"
        );
    }
}
