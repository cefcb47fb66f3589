//! The control-plane role in dev mode with the real `cluster` binary (from this workspace's
//! target directory) on a free 127.0.0.1 port: bootstrap once, the health-checked
//! cluster-server service, the admin kubeconfig used by the real kubectl, `rosctl kubeconfig
//! --merge`, `rosctl health` (OK, then FAIL once the server is stopped), the server back after
//! a reboot without a new bootstrap, and bootstrap refused on a worker; a bootstrapped control
//! plane is a Node too (containerd and its agent: ROLES control-plane, the NoSchedule taint,
//! gone once `allowSchedulingOnControlPlanes` is applied).

mod common;

use common::{Node, Pki, write};
use ros_api::machine::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tonic::Code;

/// A workspace binary next to this test's directory (target/debug/NAME).
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p {name}`; `cargo nextest run --workspace` builds it)",
        bin.display()
    );
    bin
}

/// Found on PATH (scripts/lib.sh installs upstream's binary where Debian has none).
const KUBECTL: &str = "kubectl";

/// `path` exists, or (without a slash) is a program on PATH.
fn need(path: &str, package: &str) {
    let on_path = || {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(path).exists()))
    };
    assert!(
        Path::new(path).exists() || (!path.contains('/') && on_path()),
        "{path} is missing: install the Debian package {package}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `check` gives Some or `limit` passes; the panic says what was awaited and the
/// last state seen.
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

async fn service(node: &Node, pki: &Pki, id: &str) -> Option<ServiceInfo> {
    let mut c = node.as_role(pki, "os:admin").await;
    c.service_list(ServiceListRequest {})
        .await
        .ok()?
        .into_inner()
        .services
        .into_iter()
        .find(|s| s.id == id)
}

async fn wait_healthy(node: &Node, pki: &Pki) -> ServiceInfo {
    wait_for(
        "cluster-server to be healthy",
        Duration::from_secs(90),
        || async {
            match service(node, pki, "cluster-server").await {
                Some(s) if s.healthy => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn server_log(node: &Node, pki: &Pki) -> String {
    let mut c = node.as_role(pki, "os:admin").await;
    let Ok(r) = c
        .logs(LogsRequest {
            id: "cluster-server".into(),
            follow: false,
            tail: 40,
        })
        .await
    else {
        return String::new();
    };
    let mut stream = r.into_inner();
    let mut text = String::new();
    while let Ok(Some(chunk)) = stream.message().await {
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    text
}

/// rosctl with a rosconfig holding an os:admin identity for `node`.
struct Rosctl {
    bin: PathBuf,
    rosconfig: PathBuf,
    node: String,
}

impl Rosctl {
    fn new(dir: &Path, node: &Node, pki: &Pki) -> Rosctl {
        let leaf = ros_config::pki::issue_client_cert(&pki.ca_crt, &pki.ca_key, "t", &["os:admin"])
            .unwrap();
        let mut rc = ros_config::rosconfig::RosConfig::default();
        rc.contexts.insert(
            "test".into(),
            ros_config::rosconfig::Context::from_pem(
                vec![node.addr.clone()],
                &pki.ca_crt,
                &leaf.cert_pem,
                &leaf.key_pem,
            ),
        );
        rc.context = "test".into();
        let rosconfig = dir.join("rosconfig");
        rc.save(&rosconfig).unwrap();
        Rosctl {
            bin: workspace_bin("rosctl"),
            rosconfig,
            node: node.addr.clone(),
        }
    }

    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--rosconfig")
            .arg(&self.rosconfig)
            .args(["-n", &self.node])
            .args(args)
            .env_remove("KUBECONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run rosctl")
    }
}

/// machined with the control-plane config of `pki` in `dir`, running `cluster` as its server
/// on 127.0.0.1:`port`; its agent (every control plane runs one) takes any free kubelet port.
fn start_control_plane(dir: tempfile::TempDir, pki: &Pki, cluster: &Path, port: u16) -> Node {
    let cfg = write(dir.path(), "cp.yaml", &pki.controlplane);
    Node::start_in(
        dir,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--cluster-bin",
            cluster.to_str().unwrap(),
            "--cluster-listen",
            &format!("127.0.0.1:{port}"),
            "--agent-arg=--kubelet-port=0",
        ],
    )
}

/// An os:admin client, once the node's API answers.
async fn admin_when_up(node: &Node, pki: &Pki) -> ros_api::client::Client {
    wait_for("the control plane", Duration::from_secs(20), || async {
        ros_api::client::connect(&node.addr, &pki.creds("os:admin"))
            .await
            .map_err(|e| format!("{e:#}"))
    })
    .await
}

/// Waits until the node has applied its config (out of maintenance mode).
async fn wait_configured(admin: &ros_api::client::Client) {
    wait_for("the platform config", Duration::from_secs(20), || {
        let mut c = admin.clone();
        async move {
            let v = c
                .version(VersionRequest {})
                .await
                .map_err(|e| e.to_string())?;
            (v.into_inner().mode == "configured")
                .then_some(())
                .ok_or_else(|| "maintenance".to_string())
        }
    })
    .await;
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn control_plane_bootstrap_kubeconfig_health_and_reboot() {
    need(KUBECTL, "kubectl");
    let cluster = workspace_bin("cluster");
    let port = free_port();
    let pki = Pki::generate_for(&format!("https://127.0.0.1:{port}"));
    let node = start_control_plane(tempfile::tempdir().unwrap(), &pki, &cluster, port);
    let work = tempfile::tempdir().unwrap();
    let mut admin = node.as_role(&pki, "os:admin").await;
    wait_configured(&admin).await;
    assert!(
        service(&node, &pki, "cluster-server").await.is_none(),
        "no server before bootstrap"
    );
    // Kubeconfig works before bootstrap too (it only needs the CA); it is for os:admin only.
    let mut operator = node.as_role(&pki, "os:operator").await;
    let denied = operator.kubeconfig(KubeconfigRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let reply = admin
        .bootstrap(BootstrapRequest {})
        .await
        .expect("bootstrap")
        .into_inner();
    assert!(
        reply.message.contains("cluster-server"),
        "{}",
        reply.message
    );
    let again = admin.bootstrap(BootstrapRequest {}).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(again.message(), "already bootstrapped");
    let rosctl = Rosctl::new(work.path(), &node, &pki);
    let o = rosctl.run(&["bootstrap"], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already bootstrapped"), "{}", text(&o));

    let s = wait_healthy(&node, &pki).await;
    assert_eq!(s.state, "running");
    let first_pid = s.pid;

    // The admin kubeconfig from the API, used by the real kubectl.
    let kc = admin
        .kubeconfig(KubeconfigRequest {})
        .await
        .unwrap()
        .into_inner()
        .kubeconfig;
    let kc_path = work.path().join("admin.kubeconfig");
    std::fs::write(&kc_path, &kc).unwrap();
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kc_path)
        .args(["get", "ns", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o),
        server_log(&node, &pki).await
    );
    assert!(text(&o).contains("namespace/kube-system"), "{}", text(&o));
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&kc_path)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .output()
        .unwrap();
    if o.status.success() {
        let who = String::from_utf8_lossy(&o.stdout);
        assert!(who.starts_with("admin "), "{who}");
        assert!(who.contains("system:masters"), "{who}");
    }

    // rosctl kubeconfig: a file in the working directory, refused again without --force.
    let o = Command::new(&rosctl.bin)
        .current_dir(work.path())
        .arg("--rosconfig")
        .arg(&rosctl.rosconfig)
        .args(["-n", &rosctl.node, "kubeconfig"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(work.path().join("kubeconfig").exists());
    let o = Command::new(&rosctl.bin)
        .current_dir(work.path())
        .arg("--rosconfig")
        .arg(&rosctl.rosconfig)
        .args(["-n", &rosctl.node, "kubeconfig"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));

    // --merge keeps another context, and a second merge renames instead of clobbering.
    let home_cfg = work.path().join("merged/config");
    std::fs::create_dir_all(home_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &home_cfg,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://127.0.0.1:1\nusers:\n- name: me\n  user:\n    token: x\ncontexts:\n- name: me@other\n  context:\n    cluster: other\n    user: me\ncurrent-context: me@other\n",
    )
    .unwrap();
    for _ in 0..2 {
        let o = rosctl.run(&["kubeconfig", "--merge"], &[("KUBECONFIG", &home_cfg)]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&home_cfg)
        .args(["config", "get-contexts", "-o", "name"])
        .output()
        .unwrap();
    let contexts = String::from_utf8_lossy(&o.stdout).to_string();
    let mut names: Vec<&str> = contexts.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["admin@test", "admin@test-1", "me@other"],
        "{contexts}"
    );
    let o = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&home_cfg)
        .args(["get", "ns", "kube-system", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "merged current context works: {}",
        text(&o)
    );

    // rosctl health: every check passes once the leaders hold their Leases.
    let o = rosctl.run(&["health", "--wait", "60s"], &[]);
    let out = text(&o);
    eprintln!("rosctl health:\n{out}");
    assert!(o.status.success(), "{out}");
    for check in ["api", "store", "scheduler", "controller-manager", "nodes"] {
        assert!(
            out.lines().any(|l| l.contains(check) && l.contains("OK")),
            "{check} not OK:\n{out}"
        );
    }

    // A (dev-mode) reboot starts the server again without a new bootstrap.
    admin.reboot(RebootRequest::default()).await.unwrap();
    let s = wait_for(
        "a new cluster-server process",
        Duration::from_secs(90),
        || async {
            match service(&node, &pki, "cluster-server").await {
                Some(s) if s.healthy && s.pid != first_pid => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(s.state, "running");

    // Stopped: health says what is wrong and fails.
    admin
        .service_stop(ServiceActionRequest {
            id: "cluster-server".into(),
        })
        .await
        .unwrap();
    wait_for(
        "cluster-server to stop",
        Duration::from_secs(30),
        || async {
            match service(&node, &pki, "cluster-server").await {
                Some(s) if s.state == "stopped" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let o = rosctl.run(&["health"], &[]);
    let out = text(&o);
    eprintln!("rosctl health, server stopped:\n{out}");
    assert!(!o.status.success(), "{out}");
    assert!(
        out.lines().any(|l| l.contains("api") && l.contains("FAIL")),
        "{out}"
    );
}

#[tokio::test]
async fn a_worker_gets_its_node_identity_refuses_bootstrap_and_never_runs_the_server() {
    let pki = Pki::generate();
    // A control plane (not bootstrapped) signs the worker's certificates on its trust port.
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
    let dir = tempfile::tempdir().unwrap();
    let worker_cfg = write(dir.path(), "worker.yaml", &pki.worker);
    // Programs that do not exist: the refusal, the identity and the service set matter here.
    let node = Node::start_in(
        dir,
        &[
            "--config",
            worker_cfg.to_str().unwrap(),
            "--cluster-bin",
            "/nonexistent/cluster",
            "--containerd-bin",
            "/nonexistent/containerd",
            "--trust-endpoint",
            &cp.trust_addr,
        ],
    );
    // The worker's machine API certificate comes from the control plane too.
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
    let err = admin.bootstrap(BootstrapRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "bootstrap runs on control-plane nodes only");
    // Workers do not hold the cluster CA key, so they cannot issue admin kubeconfigs.
    let kc = admin.kubeconfig(KubeconfigRequest {}).await.unwrap_err();
    assert_eq!(kc.code(), Code::FailedPrecondition);
    // containerd at once, the agent once the control plane signed the node identity.
    let agent = wait_for(
        "cluster-agent to be defined",
        Duration::from_secs(30),
        || async {
            service(&node, &pki, "cluster-agent")
                .await
                .ok_or("not yet".to_string())
        },
    )
    .await;
    assert_eq!(agent.depends_on, ["containerd"]);
    assert!(service(&node, &pki, "containerd").await.is_some());
    assert!(service(&node, &pki, "cluster-server").await.is_none());
    let agent_dir = node.path("node/ephemeral/lib/ros/agent");
    let crt = std::fs::read_to_string(agent_dir.join("node.crt")).unwrap();
    let (cn, orgs) = machined::cluster::kubeconfig::subject(&crt).unwrap();
    assert_eq!(cn, "system:node:test-node");
    assert_eq!(orgs, ["system:nodes"]);
    let kubeconfig = std::fs::read_to_string(agent_dir.join("kubeconfig")).unwrap();
    assert!(
        kubeconfig.contains("server: https://127.0.0.1:6443"),
        "{kubeconfig}"
    );
    let containerd_cfg =
        std::fs::read_to_string(node.path("node/ephemeral/lib/ros/containerd/config.toml"))
            .unwrap();
    assert!(
        containerd_cfg.contains("containerd.sock"),
        "{containerd_cfg}"
    );

    // A wrong cluster token is refused by the trust port.
    let creds = ros_api::client::Credentials::ServerOnly {
        ca_pem: pki.ca_crt.clone(),
    };
    let mut trust = ros_api::client::trust_client(&cp.trust_addr, &creds)
        .await
        .unwrap();
    let (csr_pem, _) = machined::cluster::kubeconfig::node_csr().unwrap();
    let refused = trust
        .node_certificate(NodeCertificateRequest {
            token: "abcdef.0123456789abcdef".into(),
            csr_pem,
            node_name: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

/// A worker joins a bootstrapped control plane: containerd (real, under the dev state dir),
/// then the agent with the node identity from the trust port; its Node turns Ready with the
/// labels from the config.
#[tokio::test]
async fn a_worker_joins_and_its_node_turns_ready() {
    need(KUBECTL, "kubectl");
    need("/usr/bin/containerd", "containerd");
    need("/usr/bin/containerd-shim-runc-v2", "containerd");
    let cluster = workspace_bin("cluster");
    let port = free_port();
    let pki = Pki::generate_for(&format!("https://127.0.0.1:{port}"));
    let cp = start_control_plane(tempfile::tempdir().unwrap(), &pki, &cluster, port);
    let mut admin = admin_when_up(&cp, &pki).await;
    wait_for("bootstrap", Duration::from_secs(20), || {
        let mut c = admin.clone();
        async move {
            c.bootstrap(BootstrapRequest {})
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    wait_healthy(&cp, &pki).await;

    let mut worker_doc: serde_json::Value = serde_yaml_ng::from_str(&pki.worker).unwrap();
    worker_doc["machine"]["network"] = serde_json::json!({
        "hostname": "worker-1",
        "interfaces": [{"interface": "lo", "addresses": ["127.0.0.1/8"]}],
    });
    worker_doc["machine"]["nodeLabels"] = serde_json::json!({"tier": "edge"});
    let dir = tempfile::Builder::new()
        .prefix("w")
        .tempdir_in("/tmp")
        .unwrap();
    let worker_cfg = write(
        dir.path(),
        "worker.yaml",
        &serde_yaml_ng::to_string(&worker_doc).unwrap(),
    );
    let worker = Node::start_in(
        dir,
        &[
            "--config",
            worker_cfg.to_str().unwrap(),
            "--cluster-bin",
            cluster.to_str().unwrap(),
            "--trust-endpoint",
            &cp.trust_addr,
            "--agent-arg=--kubelet-port=0",
        ],
    );

    let kc = admin
        .kubeconfig(KubeconfigRequest {})
        .await
        .unwrap()
        .into_inner()
        .kubeconfig;
    let work = tempfile::tempdir().unwrap();
    let kc_path = work.path().join("admin.kubeconfig");
    std::fs::write(&kc_path, &kc).unwrap();
    let ready = wait_for("node worker-1 Ready", Duration::from_secs(120), || async {
        let o = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc_path)
            .args([
                "get",
                "node",
                "worker-1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.metadata.labels.tier}",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        if out.starts_with("True") {
            Ok(out)
        } else {
            let agent = service(&worker, &pki, "cluster-agent").await;
            let ctrd = service(&worker, &pki, "containerd").await;
            Err(format!("{}\nagent: {agent:?}\ncontainerd: {ctrd:?}", text(&o)))
        }
    })
    .await;
    assert_eq!(ready, "True edge");
    let agent = service(&worker, &pki, "cluster-agent").await.unwrap();
    assert_eq!(agent.state, "running");
    drop(worker);
    drop(cp);
}

/// kubectl with `kubeconfig`; stdout of a command that must succeed.
fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let o = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A bootstrapped control plane also runs containerd and its agent, whose Node carries the
/// control-plane role (ROLES in kubectl) and NoSchedule taint; applying
/// `allowSchedulingOnControlPlanes` restarts the agent without the taint, which it removes.
#[tokio::test]
async fn a_bootstrapped_control_plane_is_a_tainted_node_with_its_role() {
    need("/usr/bin/kubectl", "kubectl");
    need("/usr/bin/containerd", "containerd");
    need("/usr/bin/containerd-shim-runc-v2", "containerd");
    let cluster = workspace_bin("cluster");
    let port = free_port();
    let pki = Pki::generate_for(&format!("https://127.0.0.1:{port}"));
    let dir = tempfile::Builder::new()
        .prefix("cp")
        .tempdir_in("/tmp")
        .unwrap();
    let node = start_control_plane(dir, &pki, &cluster, port);
    let mut admin = admin_when_up(&node, &pki).await;
    // Not bootstrapped: no server, so no agent (it would have nothing to talk to).
    wait_configured(&admin).await;
    assert!(service(&node, &pki, "cluster-agent").await.is_none());
    assert!(service(&node, &pki, "containerd").await.is_none());
    admin
        .bootstrap(BootstrapRequest {})
        .await
        .expect("bootstrap");
    wait_healthy(&node, &pki).await;
    let agent = wait_for("cluster-agent defined", Duration::from_secs(30), || async {
        service(&node, &pki, "cluster-agent")
            .await
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(agent.depends_on, ["containerd", "cluster-server"]);
    // Its own node identity, marked as a control plane's (the trust port never signs that).
    let crt = std::fs::read_to_string(node.path("node/ephemeral/lib/ros/agent/node.crt")).unwrap();
    let (cn, orgs) = machined::cluster::kubeconfig::subject(&crt).unwrap();
    assert_eq!(cn, "system:node:test-node");
    assert_eq!(orgs, ["system:nodes", "ros:control-plane-nodes"]);

    let kc = admin
        .kubeconfig(KubeconfigRequest {})
        .await
        .unwrap()
        .into_inner()
        .kubeconfig;
    let work = tempfile::tempdir().unwrap();
    let kc_path = work.path().join("admin.kubeconfig");
    std::fs::write(&kc_path, &kc).unwrap();
    let row = wait_for("node test-node Ready", Duration::from_secs(120), || async {
        let o = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kc_path)
            .args(["get", "nodes", "--no-headers"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        match out.lines().find(|l| l.starts_with("test-node ")) {
            Some(l) if l.split_whitespace().nth(1) == Some("Ready") => Ok(l.to_string()),
            _ => {
                let agent = service(&node, &pki, "cluster-agent").await;
                Err(format!("{}\nagent: {agent:?}", text(&o)))
            }
        }
    })
    .await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[2], "control-plane", "{row}");
    let version: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&kc_path, &["get", "--raw", "/version"])).unwrap();
    assert_eq!(cells[4], version["gitVersion"], "{row}");
    let taints = |kc: &Path| {
        kubectl_ok(
            kc,
            &["get", "node", "test-node", "-o", "jsonpath={.spec.taints}"],
        )
    };
    let t: serde_json::Value = serde_json::from_str(&taints(&kc_path)).unwrap();
    assert_eq!(
        t,
        serde_json::json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    );

    // Scheduling allowed: a new agent spec; the taint goes, the role stays.
    let open = pki.config_with(|d| d["cluster"]["allowSchedulingOnControlPlanes"] = true.into());
    admin
        .apply_configuration(ApplyConfigurationRequest {
            data: open.into_bytes(),
            mode: ApplyMode::NoReboot as i32,
            ..Default::default()
        })
        .await
        .expect("apply allowSchedulingOnControlPlanes");
    wait_for("the taint removed", Duration::from_secs(90), || async {
        let t = taints(&kc_path);
        if t.is_empty() { Ok(()) } else { Err(t) }
    })
    .await;
    let labels = kubectl_ok(&kc_path, &["get", "node", "test-node", "--show-labels"]);
    assert!(
        labels.contains("node-role.kubernetes.io/control-plane="),
        "{labels}"
    );
}
