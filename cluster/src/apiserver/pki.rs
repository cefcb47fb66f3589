//! The server's certificates: a cluster CA, the serving certificate and an admin client
//! certificate, created on first start and kept in `DIR/pki`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::fsutil::atomic_write;

/// The group whose members may do everything (as in Kubernetes).
pub const ADMIN_GROUP: &str = "system:masters";
pub const ADMIN_USER: &str = "admin";

/// PEM texts of the server's PKI.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// Signs service account tokens (PKCS#8 PEM, ECDSA P-256).
    pub sa_key: String,
}

fn paths(dir: &Path) -> [PathBuf; 6] {
    [
        dir.join("ca.crt"),
        dir.join("ca.key"),
        dir.join("apiserver.crt"),
        dir.join("apiserver.key"),
        dir.join("admin.crt"),
        dir.join("admin.key"),
    ]
}

/// Loads the PKI from `dir`, creating what is missing: the CA if there is none, and the
/// server and admin certificates (signed by the CA) if either is missing. `sans` are the
/// serving certificate's extra names (DNS names or IP addresses).
pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki> {
    let [ca_crt, ca_key, srv_crt, srv_key, adm_crt, adm_key] = paths(dir);
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));

    let (ca_cert_pem, ca_key_pem) = if ca_crt.exists() && ca_key.exists() {
        (read(&ca_crt)?, read(&ca_key)?)
    } else {
        let (cert, key) = new_ca()?;
        atomic_write(&ca_key, key.as_bytes(), 0o600)?;
        atomic_write(&ca_crt, cert.as_bytes(), 0o644)?;
        (cert, key)
    };
    let issuer = issuer(&ca_key_pem)?;

    let (server_cert, server_key) = if srv_crt.exists() && srv_key.exists() {
        (read(&srv_crt)?, read(&srv_key)?)
    } else {
        let (cert, key) = issue_server(&issuer, sans)?;
        atomic_write(&srv_key, key.as_bytes(), 0o600)?;
        atomic_write(&srv_crt, cert.as_bytes(), 0o644)?;
        (cert, key)
    };
    let (admin_cert, admin_key) = if adm_crt.exists() && adm_key.exists() {
        (read(&adm_crt)?, read(&adm_key)?)
    } else {
        let (cert, key) = issue_client(&issuer, ADMIN_USER, &[ADMIN_GROUP])?;
        atomic_write(&adm_key, key.as_bytes(), 0o600)?;
        atomic_write(&adm_crt, cert.as_bytes(), 0o644)?;
        (cert, key)
    };
    let sa_path = dir.join("sa.key");
    let sa_key = if sa_path.exists() {
        read(&sa_path)?
    } else {
        let key = KeyPair::generate()?.serialize_pem();
        atomic_write(&sa_path, key.as_bytes(), 0o600)?;
        key
    };
    Ok(Pki {
        sa_key,
        ca_cert: ca_cert_pem,
        ca_key: ca_key_pem,
        server_cert,
        server_key,
        admin_cert,
        admin_key,
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    // Back-dated an hour so a client with a slightly late clock accepts it.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The CA's parameters. Certificates are issued from these rather than from the parsed CA
/// certificate: the issuer name must be byte-for-byte the CA's subject, and re-encoding a
/// parsed name may change its string types.
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ros-cluster-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn new_ca() -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issuer(ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(ca_key_pem).context("parsing pki/ca.key")?;
    Ok(Issuer::new(ca_params()?, key))
}

/// The names every serving certificate carries, plus `extra`.
fn server_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in extra {
        if !n.is_empty() && !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

fn issue_server(issuer: &Issuer<'_, KeyPair>, extra: &[String]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = dn;
    for name in server_names(extra) {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("TLS name {name:?}"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, 3650);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a client certificate: CN = user, O = groups (how Kubernetes reads them).
pub fn issue_client(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 3650);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a client certificate signed by the CA kept in `pki`.
pub fn issue_client_with(pki: &Pki, user: &str, groups: &[&str]) -> Result<(String, String)> {
    issue_client(&issuer(&pki.ca_key)?, user, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_and_issuing_matches_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &["node1.example".into()]).unwrap();
        let again = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_cert, again.ca_cert);
        assert_eq!(first.admin_cert, again.admin_cert);
        let (crt, _) = issue_client_with(&again, "bob", &["dev"]).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(crt.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
            .unwrap();
        let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(first.ca_cert.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        // The issuer name must be the CA's subject byte for byte (TLS verifiers compare bytes).
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
        let user = crate::apiserver::auth::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "bob");
        assert!(user.groups.contains(&"dev".to_string()));
    }
}
