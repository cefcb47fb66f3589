//! The etcd client beyond the store suite, against a real etcd: mutual TLS with a server-name
//! override, fail-over between endpoints, and the Cluster/Maintenance services.

use crate::support::etcd_server::EtcdServer;
use ros_config::pki::{self, LeafRequest, Usage};
use ros_store::Store;
use ros_store::etcd::{EtcdStore, EtcdTls};
use ros_store::etcd_process::{EtcdProcess, ServerTls};

/// A port nothing listens on (connections are refused at once).
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_members_come_from_the_cluster_and_maintenance_services() {
    let server = EtcdServer::start().await;
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), None)
        .await
        .unwrap();
    let status = store.status().await.unwrap();
    assert!(
        status.version.starts_with("3."),
        "version {:?}",
        status.version
    );
    assert_ne!(status.leader, 0, "a single member leads itself");
    assert_eq!(status.header.unwrap().member_id, status.leader);
    assert!(!status.is_learner);
    let members = store.members().await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].id, status.leader);
    assert_eq!(members[0].name, "local");
    assert_eq!(members[0].client_urls, vec![server.endpoint.clone()]);
    assert!(!members[0].is_learner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_over_at_once_and_writes_on_the_next_call() {
    let server = EtcdServer::start().await;
    let endpoints = [dead_endpoint(), server.endpoint.clone()];

    // A read on the dead member is repeated on the next one.
    let store = EtcdStore::connect(&endpoints, None).await.unwrap();
    assert!(store.current_revision().await.unwrap() > 0);
    store
        .create("/failover/a", b"1".to_vec(), None)
        .await
        .unwrap();

    // A write is not repeated (it might have been applied), but the next call moves on.
    let store = EtcdStore::connect(&endpoints, None).await.unwrap();
    let err = store
        .create("/failover/b", b"1".to_vec(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Unavailable"), "{err}");
    store
        .create("/failover/b", b"1".to_vec(), None)
        .await
        .unwrap();
    let listed = store.range("/failover/", None, 0, None).await.unwrap();
    assert_eq!(listed.kvs.len(), 2);

    // Watches open on a live member too.
    let store = EtcdStore::connect(&endpoints, None).await.unwrap();
    let mut watch = store.watch("/failover/", 0).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.kv.key, "/failover/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_server_name_override() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::generate_ca("etcd-ca", None).unwrap();
    // etcd 3.4 also dials itself with its server certificate, so it carries both usages.
    let server_cert = pki::issue(
        &ca.cert_pem,
        &ca.key_pem,
        Usage::Peer,
        &LeafRequest {
            common_name: "etcd",
            sans: &["etcd.ros.test".to_string()],
            ..Default::default()
        },
    )
    .unwrap();
    let client_cert = pki::issue(
        &ca.cert_pem,
        &ca.key_pem,
        Usage::Client,
        &LeafRequest {
            common_name: "ros-apiserver",
            ..Default::default()
        },
    )
    .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server_tls = ServerTls {
        cert_file: write("server.crt", &server_cert.cert_pem),
        key_file: write("server.key", &server_cert.key_pem),
        client_ca_file: Some(write("ca.crt", &ca.cert_pem)),
    };
    // The certificate names etcd.ros.test only; we connect to 127.0.0.1.
    let client_tls = EtcdTls {
        ca_pem: ca.cert_pem.clone(),
        client_cert_pem: Some(client_cert.cert_pem.clone()),
        client_key_pem: Some(client_cert.key_pem.clone()),
        server_name: Some("etcd.ros.test".into()),
    };
    let process = EtcdProcess::start_tls(&dir.path().join("data"), &server_tls, client_tls.clone())
        .await
        .unwrap();
    let endpoint = vec![process.endpoint().to_string()];
    assert!(
        endpoint[0].starts_with("https://127.0.0.1:"),
        "{endpoint:?}"
    );

    let store = EtcdStore::connect(&endpoint, Some(client_tls.clone()))
        .await
        .unwrap();
    let revision = store.create("/tls/a", b"1".to_vec(), None).await.unwrap();
    let got = store.get("/tls/a", None).await.unwrap().unwrap();
    assert_eq!(got.mod_revision, revision);

    let anonymous = EtcdTls {
        client_cert_pem: None,
        client_key_pem: None,
        ..client_tls.clone()
    };
    let store = EtcdStore::connect(&endpoint, Some(anonymous))
        .await
        .unwrap();
    let err = store.get("/tls/a", None).await.unwrap_err();
    assert!(matches!(err, ros_store::StoreError::Other(_)), "{err}");

    let wrong_name = EtcdTls {
        server_name: Some("other.ros.test".into()),
        ..client_tls.clone()
    };
    let store = EtcdStore::connect(&endpoint, Some(wrong_name))
        .await
        .unwrap();
    let err = store.get("/tls/a", None).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "a name mismatch is a certificate error: {err}"
    );

    let other_ca = pki::generate_ca("other-ca", None).unwrap();
    let untrusted = EtcdTls {
        ca_pem: other_ca.cert_pem,
        ..client_tls
    };
    let store = EtcdStore::connect(&endpoint, Some(untrusted))
        .await
        .unwrap();
    let err = store.get("/tls/a", None).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "an unknown issuer is a certificate error: {err}"
    );
}
