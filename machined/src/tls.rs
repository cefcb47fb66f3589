//! Server TLS for the machine API. Maintenance mode: a self-signed certificate and no client
//! certificate. Configured: a server certificate issued by the machine CA, and client
//! certificates required and verified against that CA (wrong CA, expired or missing certificate
//! fail the handshake).

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("machine.ca: {0}")]
    Ca(String),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn san(name: &str) -> Result<SanType, rcgen::Error> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

fn server_params(sans: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

fn with_h2(mut config: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Maintenance mode: self-signed, no client authentication.
pub fn maintenance_config(sans: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = KeyPair::generate()?;
    let cert = server_params(sans)?.self_signed(&key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der(&key))?;
    Ok(with_h2(config))
}

/// Configured mode: server certificate from the machine CA (self-signed when this node does
/// not hold the CA key), client certificates verified against the CA.
pub fn configured_config(
    ca_pem: &str,
    ca_key_pem: Option<&str>,
    sans: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TlsError::Ca(format!("certificate is not PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    roots.add(ca_der).map_err(|e| TlsError::Ca(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;

    let key = KeyPair::generate()?;
    let params = server_params(sans)?;
    let cert = match ca_key_pem {
        Some(ca_key) => {
            let ca_key =
                KeyPair::from_pem(ca_key).map_err(|e| TlsError::Ca(format!("key: {e}")))?;
            let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)
                .map_err(|e| TlsError::Ca(format!("certificate: {e}")))?;
            params.signed_by(&key, &issuer)?
        }
        None => params.self_signed(&key)?,
    };
    let mut chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    if ca_key_pem.is_some() {
        chain.push(
            rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes())
                .map_err(|e| TlsError::Ca(e.to_string()))?,
        );
    }
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der(&key))?;
    Ok(with_h2(config))
}

/// The server config new connections use; swapped when the machine changes mode.
#[derive(Clone)]
pub struct TlsSwitch {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl TlsSwitch {
    pub fn new(initial: Arc<rustls::ServerConfig>) -> Self {
        Self {
            current: Arc::new(RwLock::new(initial)),
        }
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().expect("tls lock").clone()
    }

    pub fn set(&self, config: Arc<rustls::ServerConfig>) {
        *self.current.write().expect("tls lock") = config;
    }
}
