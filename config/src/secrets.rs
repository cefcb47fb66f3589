//! The secrets bundle (`rosctl gen secrets`): every CA, key and token of one cluster.
//!
//! Configs are generated from a bundle, so the same bundle always gives configs with the same
//! secrets (re-running `gen config --with-secrets` after a config change keeps the cluster).

use crate::document::decode_all;
use crate::error::{FieldError, FieldPath, ValidationErrors};
use crate::pki::{self, PkiError};
use crate::syntax::is_token;
use crate::types::{CONFIG_VERSION, PemKind, PemPair, decode_pem};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// All secrets of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secrets {
    /// Bundle format version (`v1alpha1`).
    pub version: String,
    pub tokens: Tokens,
    pub certs: SecretCerts,
}

/// Join tokens (`[a-z0-9]{6}.[a-z0-9]{16}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tokens {
    /// `machine.token`: machines use it to obtain their certificates.
    pub machine: String,
    /// `cluster.token`: nodes use it to join Kubernetes.
    pub bootstrap: String,
}

/// The CAs (certificate and key) and the service-account key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretCerts {
    /// Machine API CA (`machine.ca`).
    pub machine: PemPair,
    /// Kubernetes CA (`cluster.ca`).
    pub kubernetes: PemPair,
    /// etcd CA (`cluster.store.etcd.ca`).
    pub etcd: PemPair,
    /// Service-account token signing key (`cluster.serviceAccount.key`), base64 PEM.
    pub service_account_key: String,
}

/// Why a secrets bundle could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: invalid YAML: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: invalid secrets bundle:\n{errors}")]
    Invalid {
        path: String,
        errors: ValidationErrors,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl Secrets {
    /// Fresh CAs, keys and tokens.
    pub fn generate() -> Result<Self, PkiError> {
        Ok(Secrets {
            version: CONFIG_VERSION.to_string(),
            tokens: Tokens {
                machine: pki::generate_token(),
                bootstrap: pki::generate_token(),
            },
            certs: SecretCerts {
                machine: pki::generate_ca("ros machine API CA", Some("ros"))?.to_pem_pair(),
                kubernetes: pki::generate_ca("kubernetes", Some("ros"))?.to_pem_pair(),
                etcd: pki::generate_ca("etcd", Some("ros"))?.to_pem_pair(),
                service_account_key: crate::types::encode_pem(&pki::generate_key()?),
            },
        })
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("secrets always serialise")
    }

    /// Strict parse plus checks of every token and PEM block; `origin` names the source.
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self, SecretsError> {
        let doc = crate::parse_yaml_value(yaml).map_err(|message| SecretsError::Syntax {
            path: origin.to_string(),
            message,
        })?;
        let decoded = decode_all::<Secrets>(doc);
        let mut errors = decoded.errors;
        if let Some(s) = &decoded.value {
            errors.extend(s.check());
        }
        match decoded.value {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(SecretsError::Invalid {
                path: origin.to_string(),
                errors: ValidationErrors { errors },
            }),
        }
    }

    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|error| SecretsError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Writes the bundle atomically with mode 0600.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::atomic_write_private(path, self.to_yaml().as_bytes())
    }

    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let root = FieldPath::root();
        if self.version != CONFIG_VERSION {
            errors.push(FieldError::new(
                root.key("version"),
                format!(
                    "{:?} is not supported (expected {CONFIG_VERSION:?})",
                    self.version
                ),
            ));
        }
        let tp = root.key("tokens");
        for (name, t) in [
            ("machine", &self.tokens.machine),
            ("bootstrap", &self.tokens.bootstrap),
        ] {
            if !is_token(t) {
                errors.push(FieldError::new(
                    tp.key(name),
                    "is not a token of the form [a-z0-9]{6}.[a-z0-9]{16}",
                ));
            }
        }
        let cp = root.key("certs");
        for (name, pair) in [
            ("machine", &self.certs.machine),
            ("kubernetes", &self.certs.kubernetes),
            ("etcd", &self.certs.etcd),
        ] {
            for (field, value, kind) in [
                ("crt", &pair.crt, PemKind::Certificate),
                ("key", &pair.key, PemKind::PrivateKey),
            ] {
                if let Err(e) = decode_pem(value, kind) {
                    errors.push(FieldError::new(cp.key(name).key(field), e.to_string()));
                }
            }
        }
        if let Err(e) = decode_pem(&self.certs.service_account_key, PemKind::PrivateKey) {
            errors.push(FieldError::new(cp.key("serviceAccountKey"), e.to_string()));
        }
        errors
    }
}
