//! The server's certificates: a cluster CA, the serving certificate and an admin client
//! certificate, created on first start and kept in `DIR/pki`.
//!
//! The CA and the service-account key may also be given (`cluster server --ca-cert --ca-key
//! --service-account-key`, as machined does from the machine config): [`install_given`] puts
//! them into `DIR/pki` and drops what the previous CA had signed, so it is issued again.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use ros_config::atomic_write_mode as atomic_write;

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
    let issuer = issuer_for(&ca_cert_pem, &ca_key_pem)?;

    let wanted_names = server_names(sans);
    let current_server = if srv_crt.exists() && srv_key.exists() {
        let cert = read(&srv_crt)?;
        // A serving certificate missing a wanted name (new SANs) is issued again.
        covers(&cert, &wanted_names).then_some(cert)
    } else {
        None
    };
    let (server_cert, server_key) = if let Some(cert) = current_server {
        (cert, read(&srv_key)?)
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

/// The issuer for a CA: its subject is copied from the certificate with the same string
/// types, so issued certificates name it byte for byte.
fn issuer_for(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(ca_key_pem).context("parsing pki/ca.key")?;
    let der = pem_der(ca_cert_pem).context("parsing pki/ca.crt")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing pki/ca.crt: {e}"))?;
    let mut params = ca_params()?;
    params.distinguished_name = copy_name(cert.subject())?;
    Ok(Issuer::new(params, key))
}

fn pem_der(pem: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?
        .to_vec())
}

/// An X.509 name as rcgen parameters, keeping each value's ASN.1 string type.
fn copy_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    use x509_parser::oid_registry as oids;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid = attr.attr_type();
        let ty = if *oid == oids::OID_X509_COMMON_NAME {
            DnType::CommonName
        } else if *oid == oids::OID_X509_ORGANIZATION_NAME {
            DnType::OrganizationName
        } else if *oid == oids::OID_X509_ORGANIZATIONAL_UNIT {
            DnType::OrganizationalUnitName
        } else if *oid == oids::OID_X509_COUNTRY_NAME {
            DnType::CountryName
        } else if *oid == oids::OID_X509_LOCALITY_NAME {
            DnType::LocalityName
        } else if *oid == oids::OID_X509_STATE_OR_PROVINCE_NAME {
            DnType::StateOrProvinceName
        } else {
            let arcs = oid
                .iter()
                .with_context(|| format!("CA subject attribute {oid}: OID too large"))?
                .collect();
            DnType::CustomDnType(arcs)
        };
        let text = attr
            .as_str()
            .map_err(|e| anyhow::anyhow!("CA subject attribute {oid}: {e}"))?
            .to_string();
        let value = match attr.attr_value().tag() {
            Tag::PrintableString => rcgen::DnValue::PrintableString(
                text.as_str()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("CA subject attribute {oid}: {e}"))?,
            ),
            Tag::Ia5String => rcgen::DnValue::Ia5String(
                text.as_str()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("CA subject attribute {oid}: {e}"))?,
            ),
            _ => rcgen::DnValue::Utf8String(text),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Whether a PEM certificate names every one of `names` (DNS names and IP addresses).
fn covers(cert_pem: &str, names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(der) = pem_der(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut have = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => have.push(d.to_string()),
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                    _ => None,
                };
                have.extend(ip.map(|ip| ip.to_string()));
            }
            _ => {}
        }
    }
    names.iter().all(|n| {
        let n = n
            .parse::<IpAddr>()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|_| n.clone());
        have.contains(&n)
    })
}

/// Puts a given CA (and service-account key) into `dir`: when they differ from what is
/// there, they replace it, and the serving and admin certificates the old CA signed are
/// removed so [`load_or_create`] issues them again. Keys are written 0600.
pub fn install_given(dir: &Path, ca: Option<(&str, &str)>, sa_key: Option<&str>) -> Result<()> {
    let [ca_crt, ca_key, srv_crt, srv_key, adm_crt, adm_key] = paths(dir);
    let same = |p: &Path, text: &str| std::fs::read_to_string(p).is_ok_and(|t| t == text);
    if let Some((cert, key)) = ca {
        // Check them now, so a bad file is reported against the flag and not later.
        issuer_for(cert, key).context("--ca-cert/--ca-key")?;
        if !(same(&ca_crt, cert) && same(&ca_key, key)) {
            for stale in [&srv_crt, &srv_key, &adm_crt, &adm_key] {
                match std::fs::remove_file(stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", stale.display()));
                    }
                    _ => {}
                }
            }
            atomic_write(&ca_key, key.as_bytes(), 0o600)?;
            atomic_write(&ca_crt, cert.as_bytes(), 0o644)?;
        }
    }
    if let Some(key) = sa_key {
        KeyPair::from_pem(key).context("--service-account-key: not a PEM private key")?;
        let sa_path = dir.join("sa.key");
        if !same(&sa_path, key) {
            atomic_write(&sa_path, key.as_bytes(), 0o600)?;
        }
    }
    Ok(())
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
    ros_config::pki::push_organizations(&mut dn, groups)?;
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
    issue_client(&issuer_for(&pki.ca_cert, &pki.ca_key)?, user, groups)
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

    fn der_of(pem: &str) -> Vec<u8> {
        super::pem_der(pem).unwrap()
    }

    /// A CA as the machine config carries it (made elsewhere, with its own subject).
    fn outside_ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            rcgen::DnValue::PrintableString("kubernetes".try_into().unwrap()),
        );
        dn.push(DnType::OrganizationName, "ros cluster");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_given_ca_replaces_the_generated_one_and_signs_everything() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &[]).unwrap();
        let (ca_crt, ca_key) = outside_ca();
        let sa = KeyPair::generate().unwrap().serialize_pem();
        install_given(dir.path(), Some((&ca_crt, &ca_key)), Some(&sa)).unwrap();
        let pki = load_or_create(dir.path(), &["10.5.0.2".into()]).unwrap();
        assert_eq!(pki.ca_cert, ca_crt);
        assert_eq!(pki.sa_key, sa);
        assert_ne!(pki.admin_cert, first.admin_cert);
        let ca_der = der_of(&ca_crt);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        for pem in [&pki.server_cert, &pki.admin_cert] {
            let der = der_of(pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
            cert.verify_signature(Some(ca.public_key())).unwrap();
        }
        // Installing the same CA again keeps the issued certificates.
        install_given(dir.path(), Some((&ca_crt, &ca_key)), Some(&sa)).unwrap();
        let again = load_or_create(dir.path(), &["10.5.0.2".into()]).unwrap();
        assert_eq!(again.admin_cert, pki.admin_cert);
        assert_eq!(again.server_cert, pki.server_cert);
    }

    #[test]
    fn a_new_san_issues_the_serving_certificate_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &["a.example".into()]).unwrap();
        assert!(covers(
            &first.server_cert,
            &["a.example".into(), "127.0.0.1".into()]
        ));
        let same = load_or_create(dir.path(), &["a.example".into()]).unwrap();
        assert_eq!(same.server_cert, first.server_cert);
        let more = load_or_create(dir.path(), &["b.example".into(), "10.0.0.9".into()]).unwrap();
        assert_ne!(more.server_cert, first.server_cert);
        assert!(covers(
            &more.server_cert,
            &["b.example".into(), "10.0.0.9".into()]
        ));
    }

    #[test]
    fn a_bad_given_ca_names_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let err = install_given(dir.path(), Some(("nope", "nope")), None).unwrap_err();
        assert!(format!("{err:#}").contains("--ca-cert"), "{err:#}");
    }
}
