//! Mutual TLS and roles: readers read (secrets redacted), operators also control services and
//! power, admins do everything; certificates from another CA are refused at the handshake.

mod common;

use common::*;
use ros_api::client::{self, Credentials};
use ros_api::machine::*;
use tonic::Code;

#[tokio::test]
async fn roles_are_enforced_on_every_call() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;

    let mut reader = node.as_role(&pki, "os:reader").await;
    assert!(reader.version(VersionRequest {}).await.is_ok());
    assert!(reader.service_list(ServiceListRequest {}).await.is_ok());
    let s = reader.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("os:operator"), "{}", s.message());
    assert_eq!(
        reader
            .service_restart(ServiceActionRequest { id: "x".into() })
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let apply = ApplyConfigurationRequest {
        data: pki.with_hostname("x").into_bytes(),
        ..Default::default()
    };
    assert_eq!(
        reader
            .apply_configuration(apply.clone())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let mut operator = node.as_role(&pki, "os:operator").await;
    assert_eq!(
        operator
            .reset(ResetRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        operator
            .apply_configuration(apply)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        operator
            .kubeconfig(KubeconfigRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // Not found (no such service), so the role check passed.
    assert_eq!(
        operator
            .service_restart(ServiceActionRequest { id: "x".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // An unknown organisation gets no role at all.
    let nobody = client::connect(&node.addr, &pki.creds("developers"))
        .await
        .unwrap()
        .version(VersionRequest {})
        .await;
    assert_eq!(nobody.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn secrets_are_redacted_for_readers_and_operators() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;
    let key_b64 = {
        let doc: serde_json::Value = serde_yaml_ng::from_str(&pki.controlplane).unwrap();
        doc["machine"]["ca"]["key"].as_str().unwrap().to_string()
    };
    for role in ["os:reader", "os:operator"] {
        let mut c = node.as_role(&pki, role).await;
        let cfg = c
            .get_machine_config(GetMachineConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(cfg.redacted, "{role}");
        assert!(
            !cfg.yaml.contains(&key_b64),
            "{role} must not see machine.ca.key"
        );
        assert!(cfg.yaml.contains("******"), "{role}");
        let res = c
            .get_resource(GetResourceRequest {
                r#type: "mc".into(),
                id: "v1alpha1".into(),
            })
            .await
            .unwrap();
        assert!(
            !res.into_inner()
                .resource
                .unwrap()
                .spec_json
                .contains(&key_b64),
            "{role}: resource"
        );
    }
    let mut admin = node.as_role(&pki, "os:admin").await;
    let cfg = admin
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!cfg.redacted && cfg.yaml.contains(&key_b64));
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;

    let other = Pki::generate();
    // Trusts the right server CA, but presents an admin certificate from another CA.
    let Credentials::Mutual {
        crt_pem, key_pem, ..
    } = other.creds("os:admin")
    else {
        unreachable!()
    };
    let forged = Credentials::Mutual {
        ca_pem: pki.ca_crt.clone(),
        crt_pem,
        key_pem,
    };
    let refused = match client::connect(&node.addr, &forged).await {
        Err(_) => true,
        Ok(mut c) => c.version(VersionRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "a client certificate from another CA must be refused"
    );

    // A client that trusts another CA refuses the node's certificate.
    let err = client::connect(&node.addr, &other.creds("os:admin")).await;
    let refused = match err {
        Err(_) => true,
        Ok(mut c) => c.version(VersionRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "the node's certificate must not verify against another CA"
    );

    // The right credentials still work.
    assert!(
        node.as_role(&pki, "os:admin")
            .await
            .version(VersionRequest {})
            .await
            .is_ok()
    );
}
