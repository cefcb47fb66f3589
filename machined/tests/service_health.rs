//! Service health checks: a service whose check fails is reported unhealthy and its dependants
//! wait; once its check passes, it is healthy and they start.

mod common;

use common::{Node, Pki, configure, write};
use ros_api::machine::{ServiceInfo, ServiceListRequest};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

async fn services(node: &Node, pki: &Pki) -> Vec<ServiceInfo> {
    node.as_role(pki, "os:reader")
        .await
        .service_list(ServiceListRequest {})
        .await
        .map(|r| r.into_inner().services)
        .unwrap_or_default()
}

async fn wait_until(
    node: &Node,
    pki: &Pki,
    what: &str,
    ok: impl Fn(&ServiceInfo, &ServiceInfo) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = services(node, pki).await;
        let find = |id: &str| list.iter().find(|s| s.id == id).cloned();
        if let (Some(web), Some(app)) = (find("web"), find("app")) {
            if ok(&web, &app) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: web {web:?}, app {app:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dependants_wait_for_a_healthy_dependency() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "- id: web\n  command: /bin/sleep\n  args: [\"600\"]\n  health:\n    url: http://127.0.0.1:{port}/readyz\n    intervalSeconds: 1\n\
         - id: app\n  command: /bin/sleep\n  args: [\"600\"]\n  dependsOn: [web]\n"
    );
    let file = write(dir.path(), "services.yaml", &spec);
    let node = Node::start_in(dir, &["--services", file.to_str().unwrap()]);
    let pki = Pki::generate();
    configure(&node, &pki, &pki.controlplane).await;

    // Nothing answers the check: web runs but is unhealthy, app waits.
    wait_until(&node, &pki, "web running, unhealthy", |web, app| {
        web.state == "running"
            && !web.healthy
            && web.message.contains("unhealthy")
            && app.state == "waiting"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let list = services(&node, &pki).await;
    let app = list.iter().find(|s| s.id == "app").unwrap();
    assert_eq!(app.state, "waiting", "{app:?}");

    // The check passes: web turns healthy and app starts.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    wait_until(&node, &pki, "web healthy and app running", |web, app| {
        web.healthy && app.state == "running"
    })
    .await;
}
