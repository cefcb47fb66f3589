//! The client config file (`rosconfig`, like talosconfig): named contexts, each with the
//! endpoints and nodes to talk to and the credentials (machine CA, client certificate and key).

use crate::error::{FieldPath, ValidationErrors};
use crate::types::{PemKind, decode_pem, encode_pem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the rosconfig file.
pub const ENV_VAR: &str = "ROSCONFIG";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosConfig {
    /// Name of the current context.
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One cluster's connection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Machine API endpoints (host or host:port) calls go through.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Nodes calls are about (proxied by the endpoint); empty means the endpoint itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// base64 PEM of the machine CA certificate.
    #[serde(default)]
    pub ca: String,
    /// base64 PEM of the client certificate.
    #[serde(default)]
    pub crt: String,
    /// base64 PEM of the client key.
    #[serde(default)]
    pub key: String,
}

impl Context {
    pub fn ca_pem(&self) -> Result<String, crate::PemError> {
        decode_pem(&self.ca, PemKind::Certificate)
    }
    pub fn crt_pem(&self) -> Result<String, crate::PemError> {
        decode_pem(&self.crt, PemKind::Certificate)
    }
    pub fn key_pem(&self) -> Result<String, crate::PemError> {
        decode_pem(&self.key, PemKind::PrivateKey)
    }

    /// A context from PEM texts.
    pub fn from_pem(endpoints: Vec<String>, ca_pem: &str, crt_pem: &str, key_pem: &str) -> Self {
        Context {
            endpoints,
            nodes: Vec::new(),
            ca: encode_pem(ca_pem),
            crt: encode_pem(crt_pem),
            key: encode_pem(key_pem),
        }
    }
}

/// Why a rosconfig could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RosConfigError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: invalid YAML: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: invalid rosconfig:\n{errors}")]
    Invalid {
        path: String,
        errors: ValidationErrors,
    },
    #[error("no rosconfig path: pass --rosconfig, set $ROSCONFIG, or set $HOME")]
    NoPath,
    #[error("context {name:?} not found in {path} (known: {known})")]
    UnknownContext {
        name: String,
        path: String,
        known: String,
    },
    #[error("{path} has no current context (run `rosctl config context NAME`)")]
    NoContext { path: String },
}

/// Where the rosconfig is: `--rosconfig`, then `$ROSCONFIG`, then `~/.ros/config`.
pub fn resolve_path(explicit: Option<&Path>) -> Result<PathBuf, RosConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".ros").join("config")),
        None => Err(RosConfigError::NoPath),
    }
}

impl RosConfig {
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self, RosConfigError> {
        let doc = crate::parse_yaml_value(yaml).map_err(|message| RosConfigError::Syntax {
            path: origin.to_string(),
            message,
        })?;
        // An empty file is an empty config.
        if doc.is_null() {
            return Ok(RosConfig::default());
        }
        let decoded = crate::document::decode_all::<RosConfig>(doc);
        match decoded.value {
            Some(c) if decoded.errors.is_empty() => Ok(c),
            _ => Err(RosConfigError::Invalid {
                path: origin.to_string(),
                errors: ValidationErrors {
                    errors: decoded.errors,
                },
            }),
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("rosconfig always serialises")
    }

    pub fn load(path: &Path) -> Result<Self, RosConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| RosConfigError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Loads the file, or an empty config when it does not exist yet.
    pub fn load_or_default(path: &Path) -> Result<Self, RosConfigError> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(RosConfig::default())
        }
    }

    /// Writes atomically with mode 0600 (it holds a private key), creating the directory.
    pub fn save(&self, path: &Path) -> Result<(), RosConfigError> {
        let io = |error| RosConfigError::Io {
            path: path.display().to_string(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            // Like ~/.ssh: only the owner may list it.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        crate::atomic_write_private(path, self.to_yaml().as_bytes()).map_err(io)
    }

    /// The context named `name`, or the current one; `origin` names the file in errors.
    pub fn context(
        &self,
        name: Option<&str>,
        origin: &str,
    ) -> Result<(&str, &Context), RosConfigError> {
        let name = match name {
            Some(n) => n,
            None if self.context.is_empty() => {
                return Err(RosConfigError::NoContext {
                    path: origin.to_string(),
                });
            }
            None => self.context.as_str(),
        };
        match self.contexts.get_key_value(name) {
            Some((k, v)) => Ok((k.as_str(), v)),
            None => Err(self.unknown(name, origin)),
        }
    }

    /// Mutable access to the context named `name` or the current one.
    pub fn context_mut(
        &mut self,
        name: Option<&str>,
        origin: &str,
    ) -> Result<&mut Context, RosConfigError> {
        let key = self.context(name, origin)?.0.to_string();
        Ok(self.contexts.get_mut(&key).expect("context just found"))
    }

    fn unknown(&self, name: &str, origin: &str) -> RosConfigError {
        let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
        RosConfigError::UnknownContext {
            name: name.to_string(),
            path: origin.to_string(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
        }
    }

    /// Adds every context of `other`. A name already present gets a `-1`, `-2`... suffix (as
    /// `talosctl config merge` does); returns `(original, stored-as)` for each renamed context.
    /// The current context becomes `other`'s current context.
    pub fn merge(&mut self, other: RosConfig) -> Vec<(String, String)> {
        let mut renamed = Vec::new();
        let mut new_current = None;
        for (name, ctx) in other.contexts {
            let mut stored = name.clone();
            let mut n = 1;
            while let Some(existing) = self.contexts.get(&stored) {
                if *existing == ctx {
                    break;
                }
                stored = format!("{name}-{n}");
                n += 1;
            }
            if stored != name {
                renamed.push((name.clone(), stored.clone()));
            }
            if name == other.context {
                new_current = Some(stored.clone());
            }
            self.contexts.insert(stored, ctx);
        }
        if let Some(c) = new_current {
            self.context = c;
        }
        renamed
    }

    /// Checks each context's PEM fields (used by `rosctl config info`).
    pub fn check_context(ctx: &Context, name: &str) -> ValidationErrors {
        let p = FieldPath::root().key("contexts").key(name);
        let mut errors = Vec::new();
        for (field, value, kind) in [
            ("ca", &ctx.ca, PemKind::Certificate),
            ("crt", &ctx.crt, PemKind::Certificate),
            ("key", &ctx.key, PemKind::PrivateKey),
        ] {
            if let Err(e) = decode_pem(value, kind) {
                errors.push(crate::FieldError::new(p.key(field), e.to_string()));
            }
        }
        ValidationErrors { errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ep: &str) -> Context {
        Context {
            endpoints: vec![ep.into()],
            ..Default::default()
        }
    }

    #[test]
    fn merge_renames_conflicts_and_switches_context() {
        let mut a = RosConfig {
            context: "demo".into(),
            contexts: [("demo".to_string(), ctx("10.0.0.1"))].into(),
        };
        let b = RosConfig {
            context: "demo".into(),
            contexts: [("demo".to_string(), ctx("10.0.0.2"))].into(),
        };
        let renamed = a.merge(b.clone());
        assert_eq!(renamed, vec![("demo".to_string(), "demo-1".to_string())]);
        assert_eq!(a.context, "demo-1");
        assert_eq!(a.contexts["demo-1"].endpoints, vec!["10.0.0.2"]);
        // Merging the identical context again does not add a copy.
        let renamed = a.merge(b);
        assert_eq!(renamed, vec![("demo".to_string(), "demo-1".to_string())]);
        assert_eq!(a.contexts.len(), 2);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = RosConfig::from_yaml("context: a\ncontexts:\n  a:\n    endpoint: [x]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("contexts.a.endpoint: unknown field"), "{err}");
    }
}
