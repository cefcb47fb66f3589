//! Projected volumes (service account tokens, ConfigMap and Secret keys, downward API
//! fields in one directory) and downwardAPI volumes, as the kubelet makes them.
//!
//! A `serviceAccountToken` source is a TokenRequest for the pod's service account, bound to
//! the pod (so the token dies with it), asked for by the agent through the API. Tokens are
//! kept in memory and renewed once 80% of their lifetime has passed (or after 24 h), as the
//! kubelet's token manager does; the volume is then rewritten atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, ServiceAccount,
    ServiceAccountTokenProjection,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::PodRefs;
use super::atomic::File;

/// The mode of files in a projected, configMap, secret or downwardAPI volume by default.
pub const DEFAULT_MODE: u32 = 0o644;
/// A projection's token lifetime when it names none (the API's default).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// Tokens are renewed after this long at the latest, whatever their lifetime.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Which token of which pod: (pod directory, volume name, path in the volume).
type TokenKey = (PathBuf, String, String);

struct Issued {
    token: String,
    refresh_at: SystemTime,
}

/// The tokens this agent holds. One agent runs per process, and a restarted agent simply
/// asks for fresh tokens, so process-wide memory is enough.
static TOKENS: LazyLock<Mutex<HashMap<TokenKey, Issued>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn tokens() -> std::sync::MutexGuard<'static, HashMap<TokenKey, Issued>> {
    TOKENS.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a failed renewal, a pod (by directory) waits this long before the next attempt, so
/// a deleted service account does not turn every sync into an API call.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
static FAILED: LazyLock<Mutex<HashMap<PathBuf, SystemTime>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// When a token valid for `ttl` from now is due for renewal.
fn refresh_time(now: SystemTime, ttl: Duration) -> SystemTime {
    now + (ttl.mul_f64(0.8)).min(MAX_TOKEN_AGE)
}

fn service_account_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .clone()
                .or_else(|| s.service_account.clone())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// The token sources of the pod's volumes: (volume name, projection).
fn token_sources(pod: &Pod) -> Vec<(String, ServiceAccountTokenProjection)> {
    let mut out = Vec::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        for s in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(t) = &s.service_account_token {
                out.push((v.name.clone(), t.clone()));
            }
        }
    }
    out
}

/// Asks the API server for a token for the pod's service account, bound to the pod.
async fn request_token(
    client: &Client,
    pod: &Pod,
    t: &ServiceAccountTokenProjection,
) -> Result<Issued> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = service_account_name(pod);
    let seconds = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: t
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let now = SystemTime::now();
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("requesting a token for service account {ns}/{sa}"))?;
    let status = resp
        .status
        .ok_or_else(|| anyhow!("the TokenRequest for {ns}/{sa} came back without a token"))?;
    // The lifetime the server granted (it may differ from the one asked for).
    let granted = status.expiration_timestamp.0.as_second() - jiff::Timestamp::now().as_second();
    let ttl = Duration::from_secs(granted.max(0) as u64);
    Ok(Issued {
        token: status.token,
        refresh_at: refresh_time(now, ttl),
    })
}

/// Fills `refs.tokens` with a valid token for every token source of the pod, asking the API
/// only for missing and due ones. `pod_dir` identifies the pod.
pub async fn fetch_tokens(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    refs: &mut PodRefs,
) -> Result<()> {
    for (volume, t) in token_sources(pod) {
        let key: TokenKey = (pod_dir.to_path_buf(), volume.clone(), t.path.clone());
        let cached = tokens()
            .get(&key)
            .filter(|i| i.refresh_at > SystemTime::now())
            .map(|i| i.token.clone());
        let token = match cached {
            Some(t) => t,
            None => {
                let issued = request_token(client, pod, &t)
                    .await
                    .with_context(|| format!("volume {volume}"))?;
                let token = issued.token.clone();
                let mut all = tokens();
                // Forget the tokens of pods whose directory is gone.
                all.retain(|(dir, _, _), _| dir == pod_dir || dir.exists());
                all.insert(key, issued);
                token
            }
        };
        refs.tokens.insert((volume, t.path.clone()), token);
    }
    Ok(())
}

/// Whether a token of the pod is due for renewal (or not held at all).
pub fn tokens_due(pod: &Pod, pod_dir: &Path) -> bool {
    let all = tokens();
    let now = SystemTime::now();
    token_sources(pod).into_iter().any(|(volume, t)| {
        all.get(&(pod_dir.to_path_buf(), volume, t.path))
            .is_none_or(|i| i.refresh_at <= now)
    })
}

/// The mode of an item: its own, else the volume's default.
fn mode(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default).map(|m| m as u32).unwrap_or(DEFAULT_MODE) & 0o7777
}

/// Files from `data` (all keys, or `items`); missing keys are errors unless `optional`.
pub fn key_files(
    what: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: Option<i32>,
    out: &mut BTreeMap<String, File>,
) -> Result<()> {
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        bail!("{what} not found");
    };
    match items {
        Some(items) => {
            for i in items {
                match data.get(&i.key) {
                    Some(v) => {
                        out.insert(
                            i.path.clone(),
                            File {
                                content: v.clone(),
                                mode: mode(i.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => bail!("{what}: key {} not found", i.key),
                }
            }
        }
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    File {
                        content: v.clone(),
                        mode: mode(None, default_mode),
                    },
                );
            }
        }
    }
    Ok(())
}

/// `key="value"` lines, sorted by key, as the kubelet writes labels and annotations.
fn map_lines(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API field path.
fn field(pod: &Pod, path: &str) -> Result<String> {
    let m = &pod.metadata;
    if let Some(key) = path
        .strip_prefix("metadata.labels['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return Ok(m
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return Ok(m
            .annotations
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(m.labels.as_ref()),
        "metadata.annotations" => map_lines(m.annotations.as_ref()),
        other => bail!(
            "fieldRef {other:?} is not supported in a downward API volume (metadata.name, namespace, uid, labels, annotations are)"
        ),
    })
}

/// Files of downward API items.
pub fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    out: &mut BTreeMap<String, File>,
) -> Result<()> {
    for i in items {
        let Some(f) = &i.field_ref else {
            bail!(
                "downward API item {}: only fieldRef items are supported (not resourceFieldRef)",
                i.path
            );
        };
        out.insert(
            i.path.clone(),
            File {
                content: field(pod, &f.field_path)?.into_bytes(),
                mode: mode(i.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The files of projected volume `volume` of `pod`.
pub fn files(
    pod: &Pod,
    volume: &str,
    p: &ProjectedVolumeSource,
    refs: &PodRefs,
) -> Result<BTreeMap<String, File>> {
    let mut out = BTreeMap::new();
    let default_mode = p.default_mode;
    for s in p.sources.iter().flatten() {
        if let Some(t) = &s.service_account_token {
            let token = refs
                .tokens
                .get(&(volume.to_string(), t.path.clone()))
                .ok_or_else(|| anyhow!("no service account token for path {}", t.path))?;
            out.insert(
                t.path.clone(),
                File {
                    content: token.clone().into_bytes(),
                    mode: mode(None, default_mode),
                },
            );
        }
        if let Some(c) = &s.config_map {
            key_files(
                &format!("configmap \"{}\"", c.name),
                refs.config_maps.get(&c.name),
                c.items.as_ref(),
                c.optional.unwrap_or(false),
                default_mode,
                &mut out,
            )?;
        }
        if let Some(c) = &s.secret {
            key_files(
                &format!("secret \"{}\"", c.name),
                refs.secrets.get(&c.name),
                c.items.as_ref(),
                c.optional.unwrap_or(false),
                default_mode,
                &mut out,
            )?;
        }
        if let Some(d) = &s.downward_api {
            downward_files(
                pod,
                d.items.as_deref().unwrap_or(&[]),
                default_mode,
                &mut out,
            )?;
        }
        if s.cluster_trust_bundle.is_some() {
            bail!("clusterTrustBundle projections are not supported");
        }
    }
    Ok(out)
}

/// Renews the pod's tokens that are due and rewrites its projected volumes with them (and
/// with the current ConfigMap/Secret keys and fields). Only volumes already made are
/// touched: a pod whose containers have not started gets its tokens when they start.
pub async fn refresh(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<()> {
    let done = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if done || !tokens_due(pod, pod_dir) {
        return Ok(());
    }
    {
        let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|dir, _| dir.exists());
        if failed.get(pod_dir).is_some_and(|t| *t > SystemTime::now()) {
            return Ok(());
        }
    }
    let result = rewrite(client, pod, pod_dir).await;
    if result.is_err() {
        FAILED.lock().unwrap_or_else(|e| e.into_inner()).insert(
            pod_dir.to_path_buf(),
            SystemTime::now() + RETRY_AFTER_FAILURE,
        );
    }
    result
}

/// Rewrites the pod's projected volumes that exist on disk, with fresh tokens.
async fn rewrite(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<()> {
    let volumes_dir = pod_dir.join(super::VOLUMES_DIR);
    let made: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| v.projected.is_some() && volumes_dir.join(&v.name).is_dir())
        .collect();
    if made.is_empty() {
        return Ok(());
    }
    let refs = PodRefs::fetch_for(client, pod, pod_dir).await?;
    for v in made {
        let p = v.projected.as_ref().expect("filtered on projected");
        let files = files(pod, &v.name, p, &refs).with_context(|| format!("volume {}", v.name))?;
        super::atomic::write(&volumes_dir.join(&v.name), &files)
            .with_context(|| format!("volume {}", v.name))?;
        tracing::info!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            volume = %v.name,
            "refreshed projected volume"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"b": "2", "a": "1"}, "annotations": {"note": "hi \"there\""}},
            "spec": {"containers": [], "volumes": [{"name": "kube-api-access-abcde", "projected": {
                "defaultMode": 0o640,
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"secret": {"name": "missing", "optional": true}},
                    {"downwardAPI": {"items": [
                        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        {"path": "info/labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o600},
                        {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}},
                    ]}},
                ]}}]},
        }))
        .unwrap()
    }

    #[test]
    fn projected_sources_become_files() {
        let pod = pod();
        let mut refs = PodRefs::default();
        refs.config_maps.insert(
            "kube-root-ca.crt".into(),
            [("ca.crt".to_string(), b"PEM".to_vec())].into(),
        );
        refs.tokens.insert(
            ("kube-api-access-abcde".into(), "token".into()),
            "jwt".into(),
        );
        let v = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let f = files(&pod, &v.name, v.projected.as_ref().unwrap(), &refs).unwrap();
        let text = |k: &str| String::from_utf8(f[k].content.clone()).unwrap();
        assert_eq!(text("token"), "jwt");
        assert_eq!(f["token"].mode, 0o640);
        assert_eq!(text("ca.crt"), "PEM");
        assert_eq!(text("namespace"), "ns");
        assert_eq!(text("info/labels"), "a=\"1\"\nb=\"2\"");
        assert_eq!(f["info/labels"].mode, 0o600);
        assert_eq!(text("note"), "hi \"there\"");
        assert_eq!(f.len(), 5);
        // Without the CA ConfigMap the volume cannot be made.
        refs.config_maps.clear();
        let err = files(&pod, &v.name, v.projected.as_ref().unwrap(), &refs).unwrap_err();
        assert!(err.to_string().contains("kube-root-ca.crt"), "{err}");
    }

    #[test]
    fn tokens_renew_at_eighty_percent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_time(now, Duration::from_secs(3600)),
            now + Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_time(now, Duration::from_secs(365 * 24 * 3600)),
            now + MAX_TOKEN_AGE
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(tokens_due(&pod(), dir.path()), "no token held yet");
        tokens().insert(
            (
                dir.path().to_path_buf(),
                "kube-api-access-abcde".into(),
                "token".into(),
            ),
            Issued {
                token: "t".into(),
                refresh_at: SystemTime::now() + Duration::from_secs(60),
            },
        );
        assert!(!tokens_due(&pod(), dir.path()));
    }
}
