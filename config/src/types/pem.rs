//! Certificates and keys as they appear in configs: base64 of the PEM text (Talos style).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A certificate and (optionally) its private key, each the base64 encoding of PEM text.
/// Worker configs carry CA certificates without keys, so `key` may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PemPair {
    /// Base64 of the PEM certificate.
    #[serde(default)]
    pub crt: String,
    /// Base64 of the PEM private key; empty when the holder must not sign.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Why a base64-PEM field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("is empty")]
    Empty,
    #[error("is not valid base64 ({0})")]
    Base64(String),
    #[error("does not decode to UTF-8 PEM text")]
    NotText,
    #[error("does not contain a PEM {expected} block")]
    WrongBlock { expected: &'static str },
}

impl PemPair {
    /// Builds a pair from PEM texts.
    pub fn from_pem(crt_pem: &str, key_pem: &str) -> Self {
        PemPair {
            crt: encode_pem(crt_pem),
            key: encode_pem(key_pem),
        }
    }

    /// The same certificate without its key (what workers and clients receive).
    pub fn without_key(&self) -> Self {
        PemPair {
            crt: self.crt.clone(),
            key: String::new(),
        }
    }

    /// The certificate as PEM text.
    pub fn crt_pem(&self) -> Result<String, PemError> {
        decode_pem(&self.crt, PemKind::Certificate)
    }

    /// The private key as PEM text.
    pub fn key_pem(&self) -> Result<String, PemError> {
        decode_pem(&self.key, PemKind::PrivateKey)
    }

    /// Whether the pair carries a private key.
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }
}

/// What a base64-PEM field must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    Certificate,
    PrivateKey,
}

/// Base64 of PEM text, as stored in configs.
pub fn encode_pem(pem: &str) -> String {
    STANDARD.encode(pem.as_bytes())
}

/// Decodes a base64-PEM field and checks it holds the expected PEM block.
pub fn decode_pem(b64: &str, kind: PemKind) -> Result<String, PemError> {
    if b64.trim().is_empty() {
        return Err(PemError::Empty);
    }
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|e| PemError::Base64(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| PemError::NotText)?;
    let (marker, expected) = match kind {
        PemKind::Certificate => ("-----BEGIN CERTIFICATE-----", "CERTIFICATE"),
        // PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY").
        PemKind::PrivateKey => ("PRIVATE KEY-----", "PRIVATE KEY"),
    };
    if !text.contains(marker) {
        return Err(PemError::WrongBlock { expected });
    }
    Ok(text)
}
