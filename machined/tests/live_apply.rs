//! Config changes applied on a running node, in dev mode: a registries patch rewrites the
//! agent's registries file and restarts exactly the agent (and the reply says so); log
//! forwarding to TCP and UDP collectors on 127.0.0.1, following the config live and
//! reconnecting; `machine.features.rbac` and `stableHostname`.

mod common;

use common::*;
use ros_api::machine::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tonic::Code;

/// An executable script (a stand-in program the supervisor runs for real).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = write(dir, name, &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn services(c: &mut ros_api::client::Client) -> Vec<ServiceInfo> {
    c.service_list(ServiceListRequest {})
        .await
        .map(|r| r.into_inner().services)
        .unwrap_or_default()
}

async fn running(c: &ros_api::client::Client, id: &str) -> Result<ServiceInfo, String> {
    let all = services(&mut c.clone()).await;
    match all.iter().find(|s| s.id == id) {
        Some(s) if s.state == "running" && s.pid > 0 => Ok(s.clone()),
        other => Err(format!("{other:?}")),
    }
}

fn yaml(doc: &Value) -> String {
    serde_yaml_ng::to_string(doc).unwrap()
}

async fn apply(
    c: &mut ros_api::client::Client,
    doc: &Value,
    mode: ApplyMode,
    dry_run: bool,
) -> ApplyConfigurationReply {
    let reply = c
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml(doc).into_bytes(),
            mode: mode as i32,
            dry_run,
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(reply.accepted, "{:?}", reply.validation_errors);
    reply
}

#[tokio::test]
async fn a_registries_patch_restarts_exactly_the_agent_with_the_new_file() {
    let pki = Pki::generate();
    // A control plane (not bootstrapped) signs the worker's API and node certificates.
    let cp_dir = tempfile::tempdir().unwrap();
    let cp_cfg = write(cp_dir.path(), "cp.yaml", &pki.controlplane);
    let cp = Node::start_in(
        cp_dir,
        &[
            "--config",
            cp_cfg.to_str().unwrap(),
            "--cluster-bin",
            "/nonexistent/cluster",
        ],
    );
    // Stand-ins for containerd and `cluster agent` that stay up until stopped, so a restart
    // shows as a new process. The agent one states the flags machined looks for.
    let bin = tempfile::tempdir().unwrap();
    let containerd = script(bin.path(), "containerd", "exec sleep 600");
    let cluster = script(
        bin.path(),
        "cluster",
        "if [ \"$2\" = --help ]; then echo '  --registries-config <FILE>'; exit 0; fi\nexec sleep 600",
    );
    let mut doc: Value = serde_yaml_ng::from_str(&pki.worker).unwrap();
    doc["machine"]["registries"] =
        json!({"mirrors": {"registry.x": {"endpoints": ["http://10.0.2.2:5001"]}}});
    let dir = tempfile::tempdir().unwrap();
    let worker_cfg = write(dir.path(), "worker.yaml", &yaml(&doc));
    let node = Node::start_in(
        dir,
        &[
            "--config",
            worker_cfg.to_str().unwrap(),
            "--cluster-bin",
            cluster.to_str().unwrap(),
            "--containerd-bin",
            containerd.to_str().unwrap(),
            "--trust-endpoint",
            &cp.trust_addr,
        ],
    );
    let mut admin = wait_for(
        "the worker's API certificate",
        Duration::from_secs(30),
        || async {
            ros_api::client::connect(&node.addr, &pki.creds("os:admin"))
                .await
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await;
    let agent = wait_for("cluster-agent running", Duration::from_secs(30), || {
        running(&admin, "cluster-agent")
    })
    .await;
    let containerd_before = running(&admin, "containerd").await.unwrap();
    let registries = node.path("node/ephemeral/lib/ros/agent/registries.yaml");
    let before = std::fs::read_to_string(&registries).unwrap();
    assert!(before.contains("http://10.0.2.2:5001"), "{before}");

    // What `rosctl patch mc -p '{"machine":{"registries":...}}'` sends.
    doc["machine"]["registries"]["mirrors"]["registry.x"]["endpoints"] =
        json!(["http://10.0.2.2:5002"]);
    let dry = apply(&mut admin, &doc, ApplyMode::NoReboot, true).await;
    assert!(
        dry.mode_details.contains("would restart cluster-agent"),
        "{}",
        dry.mode_details
    );
    assert!(
        std::fs::read_to_string(&registries)
            .unwrap()
            .contains(":5001")
    );

    let reply = apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    assert!(!reply.reboot_required);
    assert_eq!(
        reply.restarted_services,
        ["cluster-agent"],
        "{}",
        reply.mode_details
    );
    assert!(
        reply.mode_details.contains("applied without a reboot")
            && reply.mode_details.contains("restarted cluster-agent"),
        "{}",
        reply.mode_details
    );
    let after = std::fs::read_to_string(&registries).unwrap();
    assert!(
        after.contains("http://10.0.2.2:5002") && !after.contains(":5001"),
        "{after}"
    );
    let agent_after = wait_for("the new agent process", Duration::from_secs(30), || {
        let admin = admin.clone();
        let old = agent.pid;
        async move {
            let s = running(&admin, "cluster-agent").await?;
            if s.pid != old {
                Ok(s)
            } else {
                Err("same pid".into())
            }
        }
    })
    .await;
    assert_ne!(agent_after.pid, agent.pid);
    let containerd_after = running(&admin, "containerd").await.unwrap();
    assert_eq!(
        containerd_after.pid, containerd_before.pid,
        "containerd must not restart"
    );

    // A change no service consumes restarts nothing.
    doc["machine"]["sysctls"] = json!({"net.ipv4.ip_forward": "1"});
    let reply = apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    assert!(
        reply.restarted_services.is_empty(),
        "{}",
        reply.mode_details
    );
    assert_eq!(
        running(&admin, "cluster-agent").await.unwrap().pid,
        agent_after.pid
    );

    // Paths that need a reboot are refused by no-reboot, naming the path.
    doc["cluster"]["network"]["podSubnets"] = json!(["10.50.0.0/16"]);
    let err = admin
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml(&doc).into_bytes(),
            mode: ApplyMode::NoReboot as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cluster.network.podSubnets"),
        "{}",
        err.message()
    );
}

/// One collector of forwarded lines: every JSON line received over TCP or UDP.
struct Collector {
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Lines received so far (an expectation may be met by an earlier line).
    seen: Vec<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn tcp(listener: tokio::net::TcpListener) -> Collector {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        // One connection at a time, inside the task: dropping the collector closes it.
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let mut reader = tokio::io::BufReader::new(sock).lines();
                while let Ok(Some(l)) = reader.next_line().await {
                    let _ = tx.send(serde_json::from_str(&l).expect("a JSON line"));
                }
            }
        });
        Collector {
            lines,
            seen: Vec::new(),
            task,
        }
    }

    async fn udp(sock: tokio::net::UdpSocket) -> Collector {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf).await {
                let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
                assert!(text.ends_with('\n'), "{text}");
                let _ = tx.send(serde_json::from_str(text.trim_end()).expect("a JSON line"));
            }
        });
        Collector {
            lines,
            seen: Vec::new(),
            task,
        }
    }

    /// A line received so far, or within 20 s, for which `pred` holds.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) | Err(_) => panic!("no forwarded line: {what}; got {:?}", self.seen),
            }
        }
    }

    /// Forgets every line received so far.
    fn forget(&mut self) {
        while self.lines.try_recv().is_ok() {}
        self.seen.clear();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn from(service: &'static str, text: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["service"] == service && v["msg"].as_str().is_some_and(|m| m.contains(text))
}

#[tokio::test]
async fn logs_are_forwarded_as_json_lines_over_tcp_and_udp_live() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let services = write(
        dir.path(),
        "services.yaml",
        "- id: ticker\n  command: /bin/sh\n  args: [-c, 'while true; do echo tick-line; sleep 0.2; done']\n",
    );
    let node = Node::start_in(dir, &["--services", services.to_str().unwrap()]);
    let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp_listener.local_addr().unwrap();
    let mut tcp = Collector::tcp(tcp_listener).await;
    let udp_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = udp_sock.local_addr().unwrap();
    let mut udp = Collector::udp(udp_sock).await;

    let mut doc: Value = serde_yaml_ng::from_str(&pki.controlplane).unwrap();
    doc["machine"]["network"] = json!({"hostname": "cp-1"});
    doc["machine"]["logging"] =
        json!({"destinations": [{"endpoint": format!("tcp://{tcp_addr}")}]});
    configure(&node, &pki, &yaml(&doc)).await;
    let mut admin = node.as_role(&pki, "os:admin").await;

    let line = tcp
        .expect("ticker over TCP", from("ticker", "tick-line"))
        .await;
    assert_eq!(line["level"], "info");
    assert!(
        line["time"].as_str().is_some_and(|t| t.contains('T')),
        "{line}"
    );
    // machined's own log goes too (its line about the config applied at start).
    tcp.expect("machined over TCP", |v| v["service"] == "machined")
        .await;

    // Added live: UDP too, and the reply says nothing needed a reboot.
    doc["machine"]["logging"]["destinations"] = json!([
        {"endpoint": format!("tcp://{tcp_addr}")},
        {"endpoint": format!("udp://{udp_addr}")},
    ]);
    let reply = apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    assert!(!reply.reboot_required);
    udp.expect("ticker over UDP", from("ticker", "tick-line"))
        .await;
    let status = admin
        .get_resource(GetResourceRequest {
            r#type: "LogDestinations".into(),
            id: format!("udp://{udp_addr}"),
        })
        .await
        .unwrap()
        .into_inner()
        .resource
        .unwrap();
    let spec: Value = serde_json::from_str(&status.spec_json).unwrap();
    assert_eq!(spec["connected"], true, "{spec}");

    // The TCP collector goes away and comes back on the same port: the forwarder reconnects
    // (the ticker never blocks meanwhile: its lines keep reaching the UDP collector).
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    udp.forget();
    udp.expect(
        "ticker over UDP while TCP is down",
        from("ticker", "tick-line"),
    )
    .await;
    let tcp_listener = tokio::net::TcpListener::bind(tcp_addr).await.unwrap();
    let mut tcp = Collector::tcp(tcp_listener).await;
    tcp.expect(
        "ticker over TCP after reconnecting",
        from("ticker", "tick-line"),
    )
    .await;

    // Removed live: nothing more arrives over UDP.
    doc["machine"]["logging"] =
        json!({"destinations": [{"endpoint": format!("tcp://{tcp_addr}")}]});
    apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    udp.forget();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        udp.lines.try_recv().is_err(),
        "UDP still receives after removal"
    );
    tcp.forget();
    tcp.expect("ticker over TCP still", from("ticker", "tick-line"))
        .await;
}

#[tokio::test]
async fn rbac_off_makes_every_client_of_the_ca_an_admin_live() {
    let pki = Pki::generate();
    let node = Node::start(&[]);
    configure(&node, &pki, &pki.with_hostname("cp-1")).await;
    let mut reader = node.as_role(&pki, "os:reader").await;
    let denied = reader
        .service_restart(ServiceActionRequest {
            id: "nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut admin = node.as_role(&pki, "os:admin").await;
    let mut doc: Value = serde_yaml_ng::from_str(&pki.with_hostname("cp-1")).unwrap();
    doc["machine"]["features"] = json!({"rbac": false});
    let reply = apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    assert!(!reply.reboot_required, "{}", reply.mode_details);
    // Past the role check now: the service is unknown.
    let err = reader
        .service_restart(ServiceActionRequest {
            id: "nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    // Secrets too (an admin sees the config unredacted).
    let cfg = reader
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!cfg.redacted);
}

async fn hostname(c: &mut ros_api::client::Client) -> String {
    c.hostname(HostnameRequest {})
        .await
        .unwrap()
        .into_inner()
        .hostname
}

#[tokio::test]
async fn a_node_without_a_name_gets_a_stable_one() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "cp.yaml", &pki.controlplane);
    // "ros" is init's placeholder: no name from the platform.
    let node = Node::start_in(
        dir,
        &["--config", cfg.to_str().unwrap(), "--node-name", "ros"],
    );
    let mut admin = wait_for("the node", Duration::from_secs(20), || async {
        ros_api::client::connect(&node.addr, &pki.creds("os:admin"))
            .await
            .map_err(|e| format!("{e:#}"))
    })
    .await;
    let id = std::fs::read_to_string(node.path("node/state/machine-id")).unwrap();
    let stable = format!("ros-{}-{}", &id[..3], &id[3..6]);
    let name = wait_for("the stable hostname", Duration::from_secs(20), || {
        let mut c = admin.clone();
        let want = stable.clone();
        async move {
            let h = hostname(&mut c).await;
            if h == want { Ok(h) } else { Err(h) }
        }
    })
    .await;
    assert_eq!(name, stable);

    // Turned off live: back to the name the node booted with.
    let mut doc: Value = serde_yaml_ng::from_str(&pki.controlplane).unwrap();
    doc["machine"]["features"] = json!({"stableHostname": false});
    let reply = apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    assert!(!reply.reboot_required);
    wait_for("the boot hostname", Duration::from_secs(20), || {
        let mut c = admin.clone();
        async move {
            let h = hostname(&mut c).await;
            if h == "ros" { Ok(()) } else { Err(h) }
        }
    })
    .await;

    // On again: the same name (it comes from the machine id kept on STATE).
    doc["machine"]["features"] = json!({"stableHostname": true});
    apply(&mut admin, &doc, ApplyMode::NoReboot, false).await;
    wait_for("the stable hostname again", Duration::from_secs(20), || {
        let mut c = admin.clone();
        let want = stable.clone();
        async move {
            let h = hostname(&mut c).await;
            if h == want { Ok(()) } else { Err(h) }
        }
    })
    .await;
}
