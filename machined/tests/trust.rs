//! Nodes without the machine CA key (workers) get their API certificate signed by a control
//! plane over the trust port, proving themselves with the machine token.

mod common;

use common::*;
use ros_api::client::{self, Credentials};
use ros_api::machine::*;

#[tokio::test]
async fn worker_gets_its_api_certificate_from_the_control_plane() {
    let pki = Pki::generate();
    let cp = Node::start(&[]);
    configure(&cp, &pki, &pki.with_hostname("cp-1")).await;

    let worker = Node::start(&["--trust-endpoint", &cp.trust_addr]);
    let worker_yaml = {
        let mut doc: serde_json::Value = serde_yaml_ng::from_str(&pki.worker).unwrap();
        assert!(
            doc["machine"]["ca"]["key"].is_null(),
            "worker configs carry no CA key"
        );
        doc["machine"]["network"] = serde_json::json!({"hostname": "worker-1"});
        serde_yaml_ng::to_string(&doc).unwrap()
    };
    configure(&worker, &pki, &worker_yaml).await;

    // Once the certificate arrives, clients verifying against the machine CA get in.
    let version = eventually("the worker's CA-signed certificate", || {
        let (addr, creds) = (worker.addr.clone(), pki.creds("os:admin"));
        async move {
            client::connect(&addr, &creds)
                .await
                .ok()?
                .version(VersionRequest {})
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(version.into_inner().node, "worker-1");

    // A wrong token gets nothing signed.
    let mut trust = client::trust_client(
        &cp.trust_addr,
        &Credentials::ServerOnly {
            ca_pem: pki.ca_crt.clone(),
        },
    )
    .await
    .unwrap();
    let err = trust
        .certificate(CertificateRequest {
            token: "wrong0.0000000000000000".into(),
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
