//! Every certificate of a generated cluster chains to its CA and carries the right SANs and
//! usages (signatures verified with x509-parser).

use ros_config::generate::{GenOptions, generate};
use ros_config::pki::{self, LeafRequest, Usage};
use ros_config::secrets::Secrets;
use std::net::IpAddr;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, GeneralName, parse_x509_pem};

fn der(pem: &str) -> Vec<u8> {
    parse_x509_pem(pem.as_bytes()).expect("PEM").1.contents
}

fn cert(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).expect("certificate").1
}

/// Asserts `leaf` is signed by `ca` (and is not signed by an unrelated CA).
fn assert_chains(leaf_pem: &str, ca_pem: &str, what: &str) {
    let (leaf_der, ca_der) = (der(leaf_pem), der(ca_pem));
    let (leaf, ca) = (cert(&leaf_der), cert(&ca_der));
    leaf.verify_signature(Some(ca.public_key()))
        .unwrap_or_else(|e| panic!("{what}: signature does not verify against its CA: {e}"));
    assert_eq!(leaf.issuer(), ca.subject(), "{what}: issuer is not the CA");
    let other = pki::generate_ca("other", None).unwrap();
    let other_der = der(&other.cert_pem);
    assert!(
        leaf.verify_signature(Some(cert(&other_der).public_key()))
            .is_err(),
        "{what}: must not verify against an unrelated CA"
    );
}

fn assert_ca(ca_pem: &str, what: &str) {
    let d = der(ca_pem);
    let c = cert(&d);
    assert!(c.is_ca(), "{what}: not a CA");
    c.verify_signature(None)
        .unwrap_or_else(|e| panic!("{what}: not self-signed: {e}"));
    let ku = c.key_usage().unwrap().expect("key usage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign(), "{what}: CA key usage");
    assert!(c.validity().is_valid(), "{what}: not valid now");
}

struct Usages {
    server: bool,
    client: bool,
    digital_signature: bool,
}

fn usages(pem: &str) -> Usages {
    let d = der(pem);
    let c = cert(&d);
    let eku = c
        .extended_key_usage()
        .unwrap()
        .expect("extended key usage")
        .value;
    let ku = c.key_usage().unwrap().expect("key usage").value;
    assert!(!c.is_ca());
    Usages {
        server: eku.server_auth,
        client: eku.client_auth,
        digital_signature: ku.digital_signature(),
    }
}

fn sans(pem: &str) -> (Vec<String>, Vec<IpAddr>) {
    let d = der(pem);
    let c = cert(&d);
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for ext in c.extensions() {
        if let ParsedExtension::SubjectAlternativeName(s) = ext.parsed_extension() {
            for n in &s.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
                    }
                    GeneralName::IPAddress(b) if b.len() == 16 => {
                        ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
                    }
                    _ => {}
                }
            }
        }
    }
    (dns, ips)
}

fn gen_for(endpoint: &str) -> ros_config::generate::Generated {
    generate(&GenOptions {
        cluster_name: "demo".into(),
        endpoint: endpoint.into(),
        secrets: Secrets::generate().unwrap(),
        patches: vec![],
        patches_control_plane: vec![],
        patches_worker: vec![],
    })
    .unwrap()
}

#[test]
fn cas_are_self_signed_cas() {
    let g = gen_for("https://10.5.0.2:6443");
    let c = &g.control_plane;
    assert_ca(&c.machine.ca.crt_pem().unwrap(), "machine CA");
    assert_ca(&c.cluster.ca.crt_pem().unwrap(), "kubernetes CA");
    let etcd = c
        .cluster
        .store
        .etcd
        .as_ref()
        .expect("etcd CA on control plane");
    assert_ca(&etcd.ca.crt_pem().unwrap(), "etcd CA");
    // The worker carries the same CA certificates, without keys.
    assert_eq!(g.worker.machine.ca.crt, c.machine.ca.crt);
    assert_eq!(g.worker.cluster.ca.crt, c.cluster.ca.crt);
    assert!(!g.worker.machine.ca.has_key() && !g.worker.cluster.ca.has_key());
}

#[test]
fn admin_client_cert_chains_to_machine_ca_with_admin_role() {
    let g = gen_for("https://10.5.0.2:6443");
    let (name, ctx) = g.rosconfig.context(None, "rosconfig").unwrap();
    assert_eq!(name, "demo");
    assert_eq!(ctx.endpoints, vec!["10.5.0.2"]);
    let ca = ctx.ca_pem().unwrap();
    assert_eq!(ca, g.control_plane.machine.ca.crt_pem().unwrap());
    let crt = ctx.crt_pem().unwrap();
    assert_chains(&crt, &ca, "admin client certificate");
    let u = usages(&crt);
    assert!(u.client && !u.server && u.digital_signature);
    let info = pki::describe(&crt).unwrap();
    assert_eq!(info.organizations, vec!["os:admin"]);
    assert_eq!(info.common_name, "admin");
    // The key in the rosconfig belongs to the certificate.
    let key_pub = pki::public_key_pem(&ctx.key_pem().unwrap()).unwrap();
    let d = der(&crt);
    let spki = cert(&d).public_key().raw.to_vec();
    let key_der = x509_parser::pem::parse_x509_pem(key_pub.as_bytes())
        .unwrap()
        .1
        .contents;
    assert_eq!(spki, key_der);
}

/// The server certificates machined issues from a generated config carry the endpoint host.
fn check_server_certs(endpoint: &str, host_is_ip: bool, host: &str) {
    let g = gen_for(endpoint);
    let c = &g.control_plane;

    let k8s_ca = (
        c.cluster.ca.crt_pem().unwrap(),
        c.cluster.ca.key_pem().unwrap(),
    );
    let api_sans = c.api_server_sans();
    let api = pki::issue_server_cert(&k8s_ca.0, &k8s_ca.1, "kube-apiserver", &api_sans).unwrap();
    assert_chains(&api.cert_pem, &k8s_ca.0, "API server certificate");
    let u = usages(&api.cert_pem);
    assert!(u.server && !u.client && u.digital_signature);
    let (dns, ips) = sans(&api.cert_pem);
    if host_is_ip {
        assert!(ips.contains(&host.parse().unwrap()), "{ips:?} lacks {host}");
    } else {
        assert!(dns.contains(&host.to_string()), "{dns:?} lacks {host}");
    }
    assert!(dns.contains(&"kubernetes.default.svc.cluster.local".to_string()));
    assert!(ips.contains(&"10.96.0.1".parse().unwrap()));

    let m_ca = (
        c.machine.ca.crt_pem().unwrap(),
        c.machine.ca.key_pem().unwrap(),
    );
    let mapi = pki::issue_server_cert(&m_ca.0, &m_ca.1, "machined", &c.machine_api_sans()).unwrap();
    assert_chains(&mapi.cert_pem, &m_ca.0, "machine API certificate");
    let (dns, ips) = sans(&mapi.cert_pem);
    assert!(
        dns.contains(&host.to_string()) || ips.iter().any(|i| i.to_string() == host),
        "machine API certificate lacks {host}: {dns:?} {ips:?}"
    );

    let etcd = &c.cluster.store.etcd.as_ref().unwrap().ca;
    let (ecrt, ekey) = (etcd.crt_pem().unwrap(), etcd.key_pem().unwrap());
    let peer_sans = vec![host.to_string()];
    let peer = pki::issue(
        &ecrt,
        &ekey,
        Usage::Peer,
        &LeafRequest {
            common_name: "etcd-peer",
            sans: &peer_sans,
            ..Default::default()
        },
    )
    .unwrap();
    assert_chains(&peer.cert_pem, &ecrt, "etcd peer certificate");
    let u = usages(&peer.cert_pem);
    assert!(u.server && u.client);
}

#[test]
fn server_certs_carry_ip_endpoint() {
    check_server_certs("https://10.5.0.2:6443", true, "10.5.0.2");
}

#[test]
fn server_certs_carry_dns_endpoint() {
    check_server_certs(
        "https://cp.example.internal:6443",
        false,
        "cp.example.internal",
    );
}

#[test]
fn tokens_have_the_bootstrap_format() {
    let s = Secrets::generate().unwrap();
    for t in [
        &s.tokens.machine,
        &s.tokens.bootstrap,
        &pki::generate_token(),
    ] {
        assert!(ros_config::syntax::is_token(t), "{t}");
    }
    assert_ne!(s.tokens.machine, s.tokens.bootstrap);
}

#[test]
fn service_account_key_is_a_usable_key() {
    let s = Secrets::generate().unwrap();
    let pem = ros_config::decode_pem(
        &s.certs.service_account_key,
        ros_config::PemKind::PrivateKey,
    )
    .unwrap();
    assert!(pki::public_key_pem(&pem).unwrap().contains("PUBLIC KEY"));
}

#[test]
fn issuing_rejects_bad_sans_and_foreign_keys() {
    let ca = pki::generate_ca("ca", None).unwrap();
    let err =
        pki::issue_server_cert(&ca.cert_pem, &ca.key_pem, "x", &["not a name".into()]).unwrap_err();
    assert!(err.to_string().contains("\"not a name\""), "{err}");
    let err = pki::issue_server_cert(&ca.cert_pem, "garbage", "x", &[]).unwrap_err();
    assert!(err.to_string().starts_with("CA private key"), "{err}");
}
