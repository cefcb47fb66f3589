//! One node forwards calls to another (`rosctl -e A -n B`), keeping the caller's role.

mod common;

use common::*;
use ros_api::client;
use ros_api::machine::*;
use tonic::Code;

#[tokio::test]
async fn endpoint_forwards_calls_with_the_callers_role() {
    let pki = Pki::generate();
    let a = Node::start(&[]);
    let b = Node::start(&[]);
    configure(&a, &pki, &pki.with_hostname("node-a")).await;
    configure(&b, &pki, &pki.with_hostname("node-b")).await;

    let mut admin_via_a = client::connect_via(&a.addr, &b.addr, &pki.creds("os:admin"))
        .await
        .unwrap();
    let v = admin_via_a
        .version(VersionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        v.node, "node-b",
        "the reply comes from the node the call was for"
    );
    let h = admin_via_a
        .hostname(HostnameRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.hostname, "node-b");
    // Streams are forwarded too.
    let mut logs = admin_via_a
        .logs(LogsRequest {
            id: "machined".into(),
            follow: false,
            tail: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let chunk = logs.message().await.unwrap().unwrap();
    assert_eq!(chunk.node, "node-b");

    // The target enforces the caller's role: a reader stays a reader.
    let mut reader_via_a = client::connect_via(&a.addr, &b.addr, &pki.creds("os:reader"))
        .await
        .unwrap();
    assert!(reader_via_a.version(VersionRequest {}).await.is_ok());
    assert_eq!(
        reader_via_a
            .reboot(RebootRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let cfg = reader_via_a
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(cfg.redacted);

    // An unreachable target is reported as that node's failure.
    let mut to_nowhere = client::connect_via(&a.addr, "127.0.0.1:1", &pki.creds("os:admin"))
        .await
        .unwrap();
    let err = to_nowhere.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("127.0.0.1:1"), "{}", err.message());

    // A node in maintenance mode does not forward.
    let m = Node::start(&[]);
    let mut via_m = client::connect_via(&m.addr, &b.addr, &client::Credentials::Insecure)
        .await
        .unwrap();
    assert_eq!(
        via_m.version(VersionRequest {}).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}
