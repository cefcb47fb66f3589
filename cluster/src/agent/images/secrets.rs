//! Pod image pull secrets (`spec.imagePullSecrets`): `kubernetes.io/dockerconfigjson`
//! (and the older `kubernetes.io/dockercfg`) Secrets give credentials per registry host.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

/// Credentials by registry host (`docker.io`, `127.0.0.1:5000`).
pub type PodCredentials = BTreeMap<String, RegistryAuth>;

/// The credentials in the pod's image pull secrets. A missing or malformed Secret is
/// skipped (the kubelet then pulls without it too) and logged.
pub async fn pod_credentials(client: &kube::Client, pod: &Pod) -> PodCredentials {
    let mut out = PodCredentials::new();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone());
    for name in names {
        match api.get(&name).await {
            Ok(secret) => {
                for (key, doc) in secret.data.iter().flatten() {
                    if key == ".dockerconfigjson" || key == ".dockercfg" {
                        out.extend(parse(&doc.0));
                    }
                }
            }
            Err(e) => tracing::warn!(secret = %name, error = %e, "image pull secret"),
        }
    }
    out
}

/// `{"auths": {server: {username, password} | {auth}}}` (or the bare map of `.dockercfg`).
pub fn parse(json: &[u8]) -> PodCredentials {
    let mut out = PodCredentials::new();
    let Ok(doc) = serde_json::from_slice::<Value>(json) else {
        return out;
    };
    let auths = doc.get("auths").unwrap_or(&doc);
    for (server, entry) in auths.as_object().into_iter().flatten() {
        let pair = match (entry["username"].as_str(), entry["password"].as_str()) {
            (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
            _ => entry["auth"]
                .as_str()
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|t| {
                    t.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                }),
        };
        if let Some((u, p)) = pair {
            out.insert(host_of(server), RegistryAuth::Basic(u, p));
        }
    }
    out
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://r.example:5000/x` -> `r.example:5000`.
fn host_of(server: &str) -> String {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_json_gives_credentials_by_host() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dTpw"},
            "127.0.0.1:5000": {"username": "a", "password": "b"},
            "bad": {"auth": "!!"}
        }}"#;
        let c = parse(json);
        assert_eq!(c.len(), 2);
        assert_eq!(c["docker.io"], RegistryAuth::Basic("u".into(), "p".into()));
        assert_eq!(
            c["127.0.0.1:5000"],
            RegistryAuth::Basic("a".into(), "b".into())
        );
    }
}
