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

/// A server certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn pem_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, TlsError> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Ca(format!("{what} is not PEM: {e}")))
}

pub fn self_signed_identity(sans: &[String]) -> Result<Identity, TlsError> {
    let key = KeyPair::generate()?;
    let cert = server_params(sans)?.self_signed(&key)?;
    Ok(Identity {
        chain: vec![cert.der().clone()],
        key: key_der(&key),
    })
}

/// A server certificate for `sans` issued by the CA.
pub fn issued_identity(
    ca_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
) -> Result<Identity, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| TlsError::Ca(format!("key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)
        .map_err(|e| TlsError::Ca(format!("certificate: {e}")))?;
    let key = KeyPair::generate()?;
    let cert = server_params(sans)?.signed_by(&key, &issuer)?;
    Ok(Identity {
        chain: vec![cert.der().clone(), pem_cert(ca_pem, "certificate")?],
        key: key_der(&key),
    })
}

/// An identity from a certificate (signed elsewhere) and its key, both PEM.
pub fn identity_from_pem(crt_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Identity, TlsError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Ca(format!("server key: {e}")))?;
    Ok(Identity {
        chain: vec![
            pem_cert(crt_pem, "server certificate")?,
            pem_cert(ca_pem, "certificate")?,
        ],
        key: key_der(&key),
    })
}

/// A certificate request for `sans`: (CSR PEM, private key PEM).
pub fn server_csr(sans: &[String]) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let csr = server_params(sans)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Signs a node's server certificate request with the CA; only server use, never a CA.
pub fn sign_server_csr(ca_pem: &str, ca_key_pem: &str, csr_pem: &str) -> Result<String, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| TlsError::Ca(format!("key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)
        .map_err(|e| TlsError::Ca(format!("certificate: {e}")))?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    // Only what a server needs: DNS and IP names, and a subject rebuilt from the first of
    // them, so a request cannot carry a role (O=os:admin) into a certificate the CA signs.
    csr.params
        .subject_alt_names
        .retain(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)));
    let cn = match csr.params.subject_alt_names.first() {
        Some(SanType::DnsName(n)) => n.as_str().to_string(),
        Some(SanType::IpAddress(ip)) => ip.to_string(),
        _ => String::new(),
    };
    csr.params.distinguished_name = rcgen::DistinguishedName::new();
    csr.params.distinguished_name.push(DnType::CommonName, cn);
    csr.params.is_ca = rcgen::IsCa::NoCa;
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    csr.params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    csr.params.not_before = now - time::Duration::hours(1);
    csr.params.not_after = now + time::Duration::days(365);
    Ok(csr.signed_by(&issuer)?.pem())
}

/// Maintenance mode: self-signed, no client authentication.
pub fn maintenance_config(sans: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_only_config(self_signed_identity(sans)?)
}

/// No client certificate (maintenance mode, the trust port).
pub fn server_only_config(id: Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)?;
    Ok(with_h2(config))
}

/// Configured mode: client certificates required and verified against the CA.
pub fn mutual_config(ca_pem: &str, id: Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(pem_cert(ca_pem, "certificate")?)
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain, id.key)?;
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

#[cfg(test)]
mod signing_tests {
    use super::*;

    #[test]
    fn a_signed_server_certificate_keeps_no_requested_role() {
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = server_params(&["node-2".into(), "10.5.0.3".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "os:admin");
        params.distinguished_name.push(DnType::CommonName, "admin");
        params
            .subject_alt_names
            .push(SanType::Rfc822Name("a@b".try_into().unwrap()));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let crt = sign_server_csr(&ca.pem(), &ca_key.serialize_pem(), &csr).unwrap();
        let der = pem_cert(&crt, "certificate").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = cert.subject();
        assert_eq!(subject.iter_organization().count(), 0, "{subject}");
        let cns: Vec<_> = subject
            .iter_common_name()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(cns, ["node-2"]);
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(sans.value.general_names.len(), 2);
    }
}
