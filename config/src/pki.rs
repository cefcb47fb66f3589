//! Certificate authorities and the certificates they issue (rcgen, ECDSA P-256).
//!
//! Everything goes in and out as PEM text; configs store base64 of that text (see `PemPair`).

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// CAs live long; rotating them means re-issuing every config.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Leaf certificates (server, client) are re-issued by the holders.
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// Back-date `notBefore` so machines with a slightly slow clock accept new certificates.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// Why a certificate or key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("CA certificate: {0}")]
    CaCert(rcgen::Error),
    #[error("CA private key: {0}")]
    CaKey(rcgen::Error),
    #[error("{0:?} is neither an IP address nor a valid DNS name for a certificate")]
    BadSan(String),
    #[error("certificate generation failed: {0}")]
    Generate(rcgen::Error),
    #[error("organizations {0:?}: a certificate here carries at most two (groups)")]
    TooManyOrganizations(Vec<String>),
}

/// The attribute type of a second `O=`: rcgen keeps one value per type, so it goes in under
/// the same OID (id-at-organizationName) as a custom type. Kubernetes reads every `O=` as a
/// group; a node identity of a control plane needs two.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// Adds one `O=` attribute per organization (at most two) to `dn`.
pub fn push_organizations(
    dn: &mut rcgen::DistinguishedName,
    organizations: &[&str],
) -> Result<(), PkiError> {
    if organizations.len() > 2 {
        return Err(PkiError::TooManyOrganizations(
            organizations.iter().map(|o| o.to_string()).collect(),
        ));
    }
    for (i, o) in organizations.iter().enumerate() {
        let ty = if i == 0 {
            DnType::OrganizationName
        } else {
            DnType::CustomDnType(ORGANIZATION_OID.to_vec())
        };
        dn.push(ty, o.to_string());
    }
    Ok(())
}

// Not `#[from]`: that would also make it the `source`, and the message already includes it.
impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e)
    }
}

/// A certificate and its private key, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertAndKey {
    /// As stored in configs (base64 of PEM).
    pub fn to_pem_pair(&self) -> crate::PemPair {
        crate::PemPair::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The kind of leaf certificate, which fixes its extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (`serverAuth`).
    Server,
    /// TLS client (`clientAuth`).
    Client,
    /// Both, for etcd peers and members of a mesh.
    Peer,
}

/// A new private key (ECDSA P-256, PKCS#8 PEM), e.g. for service-account token signing.
pub fn generate_key() -> Result<String, PkiError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// The public key of a PEM private key, as PEM (`PUBLIC KEY`).
pub fn public_key_pem(key_pem: &str) -> Result<String, PkiError> {
    Ok(KeyPair::from_pem(key_pem)
        .map_err(PkiError::CaKey)?
        .public_key_pem())
}

/// A self-signed CA with subject `CN=common_name[, O=organization]`.
pub fn generate_ca(common_name: &str, organization: Option<&str>) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = base_params(common_name, organization, Duration::days(CA_VALIDITY_DAYS));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a leaf certificate should say.
#[derive(Debug, Clone, Default)]
pub struct LeafRequest<'a> {
    pub common_name: &'a str,
    /// Subject organisations; for machine API clients this carries the role (`os:admin`).
    pub organizations: &'a [&'a str],
    /// Subject alternative names: each an IP address or a DNS name.
    pub sans: &'a [String],
    /// How long it is valid from now; `None` means [`LEAF_VALIDITY_DAYS`].
    pub validity: Option<Duration>,
}

/// Issues a leaf certificate signed by the CA (`ca_cert_pem`, `ca_key_pem`).
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    usage: Usage,
    req: &LeafRequest<'_>,
) -> Result<CertAndKey, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(PkiError::CaKey)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(PkiError::CaCert)?;
    let validity = req.validity.unwrap_or(Duration::days(LEAF_VALIDITY_DAYS));
    let mut params = base_params(req.common_name, None, validity);
    push_organizations(&mut params.distinguished_name, req.organizations)?;
    params.subject_alt_names = req.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A TLS server certificate for `sans`.
pub fn issue_server_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    sans: &[String],
) -> Result<CertAndKey, PkiError> {
    let req = LeafRequest {
        common_name,
        sans,
        ..Default::default()
    };
    issue(ca_cert_pem, ca_key_pem, Usage::Server, &req)
}

/// A TLS client certificate `CN=common_name, O=organizations...`.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    organizations: &[&str],
) -> Result<CertAndKey, PkiError> {
    let req = LeafRequest {
        common_name,
        organizations,
        ..Default::default()
    };
    issue(ca_cert_pem, ca_key_pem, Usage::Client, &req)
}

/// A random token `[a-z0-9]{6}.[a-z0-9]{16}` (the kubeadm/Talos bootstrap token format).
pub fn generate_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let a = part(6);
    let b = part(16);
    format!("{a}.{b}")
}

fn base_params(
    common_name: &str,
    organization: Option<&str>,
    validity: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}

/// 16 random bytes, top bit clear so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn san(s: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !crate::syntax::is_san(s) {
        return Err(PkiError::BadSan(s.to_string()));
    }
    Ok(SanType::DnsName(
        s.to_string()
            .try_into()
            .map_err(|_| PkiError::BadSan(s.to_string()))?,
    ))
}

/// What a certificate says, for display (`rosctl config info`) and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<IpAddr>,
    pub is_ca: bool,
}

/// Reads a PEM certificate's subject, validity and SANs.
pub fn describe(cert_pem: &str) -> Result<CertInfo, String> {
    use x509_parser::prelude::*;
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    let (_, cert) =
        parse_x509_certificate(&pem.contents).map_err(|e| format!("not a certificate: {e}"))?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let mut dns_sans = Vec::new();
    let mut ip_sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_sans.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ip_sans.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    16 => ip_sans.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        common_name,
        organizations,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        dns_sans,
        ip_sans,
        is_ca: cert.is_ca(),
    })
}
