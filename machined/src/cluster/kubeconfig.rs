//! Kubernetes identities signed by `cluster.ca` and the kubeconfigs that carry them: the admin
//! (`rosctl kubeconfig`) and a node's agent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";
/// The extra group of a control plane's own node identity: the API server lets it put the
/// `node-role.kubernetes.io/control-plane` label on its Node (`cluster`'s
/// `node_labels::CONTROL_PLANE_NODES_GROUP`). Never in a certificate the trust port signs.
pub const CONTROL_PLANE_NODES_GROUP: &str = "ros:control-plane-nodes";

/// The groups of the node identity a node that holds the CA key signs for itself.
pub fn own_node_groups(cfg: &ros_config::MachineConfig) -> Vec<&'static str> {
    if cfg.machine.machine_type == ros_config::MachineType::ControlPlane {
        vec![NODES_GROUP, CONTROL_PLANE_NODES_GROUP]
    } else {
        vec![NODES_GROUP]
    }
}

/// The user name a node's agent authenticates as.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// A client certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub crt_pem: String,
    pub key_pem: String,
}

/// Issues a client certificate `CN=user, O=groups` signed by the cluster CA.
pub fn issue_client(
    ca_pem: &str,
    ca_key_pem: &str,
    user: &str,
    groups: &[&str],
) -> Result<ClientIdentity, String> {
    let id = ros_config::pki::issue_client_cert(ca_pem, ca_key_pem, user, groups)
        .map_err(|e| format!("cluster.ca: {e}"))?;
    Ok(ClientIdentity {
        crt_pem: id.cert_pem,
        key_pem: id.key_pem,
    })
}

/// A new key and a certificate request for it (the subject is set by the signer).
pub fn node_csr() -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((csr.pem().map_err(|e| e.to_string())?, key.serialize_pem()))
}

/// Signs a node's certificate request as `CN=system:node:<node>, O=system:nodes` (client
/// auth only, whatever the request asked for).
pub fn sign_node_csr(
    ca_pem: &str,
    ca_key_pem: &str,
    csr_pem: &str,
    node: &str,
) -> Result<String, String> {
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!("node_name {node:?}: not a valid node name"));
    }
    let key = KeyPair::from_pem(ca_key_pem).map_err(|e| format!("cluster.ca.key: {e}"))?;
    let issuer =
        Issuer::from_ca_cert_pem(ca_pem, key).map_err(|e| format!("cluster.ca.crt: {e}"))?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| format!("csr_pem: {e}"))?;
    let p = &mut csr.params;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_user(node));
    dn.push(DnType::OrganizationName, NODES_GROUP);
    p.distinguished_name = dn;
    p.subject_alt_names.clear();
    p.is_ca = rcgen::IsCa::NoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    Ok(csr
        .signed_by(&issuer)
        .map_err(|e| format!("signing: {e}"))?
        .pem())
}

/// A kubeconfig with one cluster, user and context, credentials embedded.
pub fn render(
    cluster: &str,
    user: &str,
    server: &str,
    ca_pem: &str,
    id: &ClientIdentity,
) -> String {
    let context = format!("{user}@{cluster}");
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster,
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            }
        }],
        "users": [{
            "name": context,
            "user": {
                "client-certificate-data": STANDARD.encode(&id.crt_pem),
                "client-key-data": STANDARD.encode(&id.key_pem),
            }
        }],
        "contexts": [{
            "name": context,
            "context": { "cluster": cluster, "user": context, "namespace": "default" }
        }],
        "current-context": context,
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).expect("a JSON value always serializes to YAML")
}

/// The subject of a PEM certificate as (CN, organisations), for checks and tests.
pub fn subject(crt_pem: &str) -> Option<(String, Vec<String>)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(crt_pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let ca = ros_config::pki::generate_ca("kubernetes", None).unwrap();
        (ca.cert_pem, ca.key_pem)
    }

    #[test]
    fn node_requests_get_the_node_identity_whatever_they_ask() {
        let (ca, key) = ca();
        // A request claiming to be an admin still gets only the node identity.
        let k = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, ADMIN_GROUP);
        let csr = params.serialize_request(&k).unwrap().pem().unwrap();
        let crt = sign_node_csr(&ca, &key, &csr, "worker-1").unwrap();
        assert_eq!(
            subject(&crt).unwrap(),
            ("system:node:worker-1".into(), vec![NODES_GROUP.to_string()])
        );
        let (csr, _) = node_csr().unwrap();
        assert!(sign_node_csr(&ca, &key, &csr, "bad name").is_err());
        assert!(sign_node_csr(&ca, &key, "garbage", "w").is_err());
    }

    #[test]
    fn a_control_planes_own_node_identity_is_in_both_groups() {
        let (ca, key) = ca();
        let id = issue_client(
            &ca,
            &key,
            &node_user("cp-1"),
            &[NODES_GROUP, CONTROL_PLANE_NODES_GROUP],
        )
        .unwrap();
        assert_eq!(
            subject(&id.crt_pem).unwrap(),
            (
                "system:node:cp-1".into(),
                vec![
                    NODES_GROUP.to_string(),
                    CONTROL_PLANE_NODES_GROUP.to_string()
                ]
            )
        );
        let err = issue_client(&ca, &key, "u", &["a", "b", "c"]).unwrap_err();
        assert!(err.contains("at most two"), "{err}");
    }

    #[test]
    fn admin_kubeconfig_names_context_after_user_and_cluster() {
        let (ca, key) = ca();
        let id = issue_client(&ca, &key, ADMIN_USER, &[ADMIN_GROUP]).unwrap();
        assert_eq!(
            subject(&id.crt_pem).unwrap(),
            ("admin".into(), vec![ADMIN_GROUP.to_string()])
        );
        let text = render("demo", "admin", "https://10.5.0.2:6443", &ca, &id);
        let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "admin@demo");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.5.0.2:6443"
        );
        let ca_data = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(STANDARD.decode(ca_data).unwrap(), ca.as_bytes());
    }
}
