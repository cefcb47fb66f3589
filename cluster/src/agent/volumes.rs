//! Pod inputs from the API: the ConfigMaps and Secrets a pod refers to (env `valueFrom`,
//! `envFrom`, volumes), its service account tokens, the service env vars, and the pod's
//! volumes made as directories on the node (emptyDir, configMap, secret, hostPath,
//! projected, downwardAPI) that the containers bind-mount. Contents that can change are
//! swapped in atomically ([`atomic`]).

pub mod atomic;
pub mod projected;
pub mod service_env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

/// Where a pod's volumes live under its directory.
pub const VOLUMES_DIR: &str = "_volumes";

/// The ConfigMaps and Secrets of the pod's namespace it refers to (absent ones are
/// missing), its service account tokens, and the service env vars.
#[derive(Default)]
pub struct PodRefs {
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Tokens of projected volumes, by (volume name, path in the volume).
    pub tokens: BTreeMap<(String, String), String>,
    /// `KUBERNETES_SERVICE_HOST` and the other service variables, in order.
    pub service_env: Vec<(String, String)>,
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        out.insert(k, v.0);
    }
    out
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

impl PodRefs {
    /// Everything a container of `pod` (whose directory is `pod_dir`) needs from the API:
    /// ConfigMaps, Secrets, service account tokens and service env vars.
    pub async fn fetch_for(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<PodRefs> {
        let mut refs = PodRefs::fetch(client, pod).await?;
        projected::fetch_tokens(client, pod, pod_dir, &mut refs).await?;
        refs.service_env = service_env::for_pod(client, pod).await?;
        Ok(refs)
    }

    /// Reads every ConfigMap and Secret `pod` names.
    pub async fn fetch(client: &Client, pod: &Pod) -> Result<PodRefs> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.clone().unwrap_or_default();
        let mut cms = Vec::new();
        let mut secrets = Vec::new();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            for e in c.env.iter().flatten() {
                if let Some(vf) = &e.value_from {
                    if let Some(r) = &vf.config_map_key_ref {
                        cms.push(r.name.clone());
                    }
                    if let Some(r) = &vf.secret_key_ref {
                        secrets.push(r.name.clone());
                    }
                }
            }
            for e in c.env_from.iter().flatten() {
                if let Some(r) = &e.config_map_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &e.secret_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = &v.config_map {
                cms.push(c.name.clone());
            }
            if let Some(s) = &v.secret {
                secrets.push(s.secret_name.clone().unwrap_or_default());
            }
            for s in v
                .projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .into_iter()
                .flatten()
            {
                if let Some(c) = &s.config_map {
                    cms.push(c.name.clone());
                }
                if let Some(c) = &s.secret {
                    secrets.push(c.name.clone());
                }
            }
        }
        cms.sort();
        cms.dedup();
        secrets.sort();
        secrets.dedup();
        let mut refs = PodRefs::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        for name in cms {
            if let Some(cm) = cm_api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading ConfigMap {ns}/{name}"))?
            {
                refs.config_maps.insert(name, config_map_data(cm));
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
        for name in secrets {
            if let Some(s) = secret_api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading Secret {ns}/{name}"))?
            {
                refs.secrets.insert(name, secret_data(s));
            }
        }
        Ok(refs)
    }

    fn lookup(
        &self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>> {
        let (kind, all) = if secret {
            ("secret", &self.secrets)
        } else {
            ("configmap", &self.config_maps)
        };
        match all.get(name).map(|d| d.get(key)) {
            Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).to_string())),
            _ if optional => Ok(None),
            None => Err(anyhow!("{kind} \"{name}\" not found")),
            Some(None) => Err(anyhow!("couldn't find key {key} in {kind} {name}")),
        }
    }

    /// The env of container `c` from ConfigMaps and Secrets; an error names what is missing.
    /// The service variables come first, so the container's own `envFrom` and `env` win
    /// over them, as in the kubelet.
    pub fn env(&self, c: &Container) -> Result<RefEnv> {
        let mut out = RefEnv {
            env_from: self.service_env.clone(),
            ..Default::default()
        };
        for e in c.env_from.iter().flatten() {
            let prefix = e.prefix.clone().unwrap_or_default();
            let (secret, name, optional) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), _) => (false, r.name.clone(), r.optional.unwrap_or(false)),
                (_, Some(r)) => (true, r.name.clone(), r.optional.unwrap_or(false)),
                _ => continue,
            };
            let data = if secret {
                self.secrets.get(&name)
            } else {
                self.config_maps.get(&name)
            };
            match data {
                Some(d) => {
                    for (k, v) in d {
                        out.env_from.push((
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).to_string(),
                        ));
                    }
                }
                None if optional => {}
                None => bail!(
                    "{} \"{name}\" not found",
                    if secret { "secret" } else { "configmap" }
                ),
            }
        }
        for e in c.env.iter().flatten() {
            let Some(vf) = &e.value_from else { continue };
            let value = if let Some(r) = &vf.config_map_key_ref {
                self.lookup(false, &r.name, &r.key, r.optional.unwrap_or(false))?
            } else if let Some(r) = &vf.secret_key_ref {
                self.lookup(true, &r.name, &r.key, r.optional.unwrap_or(false))?
            } else {
                continue;
            };
            if let Some(v) = value {
                out.value_from.insert(e.name.clone(), v);
            }
        }
        Ok(out)
    }
}

/// Env values a container takes from ConfigMaps and Secrets.
#[derive(Default, Debug, PartialEq)]
pub struct RefEnv {
    /// Service variables, then `envFrom`, in order (the container's own `env` overrides
    /// these).
    pub env_from: Vec<(String, String)>,
    /// `env[].valueFrom` ConfigMap/Secret keys, by env name.
    pub value_from: BTreeMap<String, String>,
}

/// Makes the pod's volumes under `pod_dir/_volumes` (ConfigMap, Secret, projected and
/// downward API contents brought up to date atomically); returns each volume's host
/// directory by name.
pub fn prepare(pod: &Pod, refs: &PodRefs, pod_dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let base = pod_dir.join(VOLUMES_DIR);
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let dir = base.join(&v.name);
        let path = if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("volume {}: creating {}", v.name, dir.display()))?;
            dir
        } else if let Some(c) = &v.config_map {
            let mut files = BTreeMap::new();
            projected::key_files(
                &format!("configmap \"{}\"", c.name),
                refs.config_maps.get(&c.name),
                c.items.as_ref(),
                c.optional.unwrap_or(false),
                c.default_mode,
                &mut files,
            )
            .and_then(|()| atomic::write(&dir, &files))
            .with_context(|| format!("volume {}", v.name))?;
            dir
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mut files = BTreeMap::new();
            projected::key_files(
                &format!("secret \"{name}\""),
                refs.secrets.get(&name),
                s.items.as_ref(),
                s.optional.unwrap_or(false),
                s.default_mode,
                &mut files,
            )
            .and_then(|()| atomic::write(&dir, &files))
            .with_context(|| format!("volume {}", v.name))?;
            dir
        } else if let Some(p) = &v.projected {
            projected::files(pod, &v.name, p, refs)
                .and_then(|files| atomic::write(&dir, &files))
                .with_context(|| format!("volume {}", v.name))?;
            dir
        } else if let Some(d) = &v.downward_api {
            let mut files = BTreeMap::new();
            projected::downward_files(
                pod,
                d.items.as_deref().unwrap_or(&[]),
                d.default_mode,
                &mut files,
            )
            .and_then(|()| atomic::write(&dir, &files))
            .with_context(|| format!("volume {}", v.name))?;
            dir
        } else if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p)
                    .with_context(|| format!("volume {}: creating {}", v.name, h.path))?,
                "Directory" if !p.is_dir() => {
                    bail!("volume {}: hostPath {} is not a directory", v.name, h.path)
                }
                "File" if !p.is_file() => {
                    bail!("volume {}: hostPath {} is not a file", v.name, h.path)
                }
                _ => {}
            }
            p
        } else {
            bail!(
                "volume {}: only emptyDir, configMap, secret, hostPath, projected and downwardAPI volumes are supported",
                v.name
            )
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The OCI bind mounts of container `c`'s volumeMounts.
pub fn mounts(c: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| anyhow!("volumeMounts {}: no volume of that name", m.name))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                anyhow::ensure!(
                    !sub.split('/').any(|p| p == ".."),
                    "volumeMounts {}: subPath {sub:?} leaves the volume",
                    m.name
                );
                base.join(sub)
            }
            None => base.clone(),
        };
        let mode = if m.read_only.unwrap_or(false) {
            "ro"
        } else {
            "rw"
        };
        out.push(json!({
            "destination": m.mount_path,
            "type": "bind",
            "source": source,
            "options": ["rbind", mode],
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_from_refs_and_missing_ones() {
        let mut refs = PodRefs::default();
        refs.config_maps
            .insert("cm".into(), [("a".to_string(), b"1".to_vec())].into());
        refs.secrets
            .insert("s".into(), [("pw".to_string(), b"hunter2".to_vec())].into());
        let c: Container = serde_json::from_value(json!({"name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}]}))
        .unwrap();
        let env = refs.env(&c).unwrap();
        assert_eq!(env.env_from, vec![("CM_a".to_string(), "1".to_string())]);
        assert_eq!(
            env.value_from,
            [("PW".to_string(), "hunter2".to_string())].into()
        );
        let missing: Container = serde_json::from_value(json!({"name": "c",
            "env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s", "key": "other"}}}]}))
        .unwrap();
        assert!(
            refs.env(&missing)
                .unwrap_err()
                .to_string()
                .contains("couldn't find key other")
        );
    }

    #[test]
    fn volumes_become_directories_and_bind_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let mut refs = PodRefs::default();
        refs.config_maps.insert(
            "cm".into(),
            [("app.conf".to_string(), b"x=1".to_vec())].into(),
        );
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "cm", "items": [{"key": "app.conf", "path": "etc/app.conf"}]}},
        ]}}))
        .unwrap();
        let vols = prepare(&pod, &refs, dir.path()).unwrap();
        assert!(vols["scratch"].is_dir());
        assert_eq!(
            std::fs::read_to_string(vols["conf"].join("etc/app.conf")).unwrap(),
            "x=1"
        );
        let c: Container = serde_json::from_value(json!({"name": "c",
            "volumeMounts": [{"name": "conf", "mountPath": "/etc/app", "readOnly": true}]}))
        .unwrap();
        let m = mounts(&c, &vols).unwrap();
        assert_eq!(m[0]["destination"], "/etc/app");
        assert_eq!(m[0]["options"], json!(["rbind", "ro"]));
        let bad: Container = serde_json::from_value(
            json!({"name": "c", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}),
        )
        .unwrap();
        assert!(mounts(&bad, &vols).is_err());
    }
}
