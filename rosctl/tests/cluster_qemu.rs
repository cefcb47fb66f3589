//! `rosctl cluster create | show | destroy` with real QEMU VMs (TCG on CI) on a bridge in a
//! network namespace, and Kubernetes on them: both machines are Nodes (the control plane
//! with its role and NoSchedule taint), a Deployment of an HTTP server behind a ClusterIP
//! Service, reached from another pod. Needs root (network namespaces, taps),
//! qemu-system-x86, iproute2, kubectl, docker-registry and busybox-static; the image is the
//! e2e suite's with the cluster role (built once per checkout, or `$ROS_E2E_CLUSTER_IMAGE`).
//!
//! One boot of a control plane and a worker serves every assertion. The test images sit in
//! a registry on the host's 127.0.0.1, which the guests reach as 10.0.2.2 (QEMU user
//! networking); a `--config-patch` makes it the nodes' mirror for `registry.test`. Every
//! Kubernetes check goes through kubectl and the forwarded API: the host never dials a node,
//! pod or service address.

mod stub_dns;
#[path = "../../cluster/tests/support_images/mod.rs"]
mod support_images;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The stub upstream DNS server: on the cluster namespace's bridge address, the nodes'
/// nameserver; it knows one name outside the cluster.
const STUB_DNS_IP: &str = "10.5.0.1";
const OUTSIDE_NAME: &str = "outside.test";
const OUTSIDE_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 77);

const ROSCTL: &str = env!("CARGO_BIN_EXE_rosctl");

fn rosctl(args: &[&str]) -> Output {
    Command::new(ROSCTL)
        .args(args)
        .env_remove("ROSCONFIG")
        .output()
        .expect("running rosctl")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Destroys the cluster when the test ends, also on failure; falls back to killing the
/// PIDs in the state dir and deleting the namespace if `destroy` itself fails.
struct Cluster {
    dir: PathBuf,
    netns: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.dir.join("cluster.json").exists() {
            return;
        }
        if std::thread::panicking() {
            for node in ["controlplane-1", "worker-1"] {
                let console = self.dir.join(node).join("console.log");
                let log = std::fs::read_to_string(&console).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {node} console tail ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        let out = rosctl(&[
            "cluster",
            "destroy",
            "--state-dir",
            &self.dir.to_string_lossy(),
        ]);
        if !out.status.success() {
            eprintln!("cleanup: destroy failed: {}", text(&out));
            for node in ["controlplane-1", "worker-1"] {
                let dir = self.dir.join(node);
                if let Some(pid) = imager::qemu::process::read_pid_file(&dir.join("qemu.pid")) {
                    imager::qemu::process::stop(
                        pid,
                        &dir.join("qmp.sock"),
                        std::time::Duration::from_secs(2),
                    )
                    .ok();
                }
            }
            imager::qemu::netns::delete(&self.netns).ok();
        }
    }
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    path.iter().fold(v, |v, k| &v[*k])
}

#[test]
fn create_show_reach_and_destroy_a_two_node_cluster() {
    assert!(
        is_root(),
        "this test needs root (network namespaces and taps); CI runs it as root"
    );
    imager::qemu::netns::IP
        .find()
        .expect("iproute2 is needed (apt-get install iproute2)");
    imager::tools::QEMU_SYSTEM
        .find()
        .expect("QEMU is needed (apt-get install qemu-system-x86)");
    let kubectl_bin = which("kubectl").expect("kubectl is needed (apt-get install kubectl)");
    let image = e2e::cluster_image().expect("building or finding the e2e cluster image");
    let accel = e2e::accel(&image);
    let image_dir = image.kernel.parent().unwrap().to_path_buf();

    // The test images, in a registry the guests reach through QEMU's 10.0.2.2.
    let registry = support_images::Registry::start();
    let port = registry.host.rsplit_once(':').unwrap().1.to_string();
    let served = format!("hello from a ros pod, run {}\n", std::process::id());
    let mut httpd = support_images::TestImage::new("ros-test/httpd", "1");
    httpd.cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
        .map(String::from)
        .to_vec();
    httpd.files = vec![("/www/index.html".into(), served.clone(), 0o644)];
    registry.push(&httpd);
    // The registry mirror, and the stub DNS server (started once the namespace exists) as
    // the nodes' only nameserver: the cluster DNS forwards names outside the cluster there.
    let mirror = format!(
        r#"{{"machine": {{"registries": {{"mirrors": {{"registry.test": {{"endpoints": ["http://10.0.2.2:{port}"], "skipFallback": true}}}}}}, "network": {{"nameservers": ["{STUB_DNS_IP}"]}}}}}}"#
    );

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("c");
    let name = format!("it{}", std::process::id());
    let netns = format!("ros-{name}");
    let guard = Cluster {
        dir: dir.clone(),
        netns: netns.clone(),
    };
    let dir_s = dir.to_string_lossy().to_string();

    let created = Command::new(ROSCTL)
        .args([
            "cluster",
            "create",
            "--name",
            &name,
            "--state-dir",
            &dir_s,
            "--image",
            &image_dir.to_string_lossy(),
            "--workers",
            "1",
            "--memory",
            "1024",
            "--cpus",
            "1",
            "--config-patch",
            &mirror,
            "--wait-timeout",
            &e2e::phase_timeout(accel).as_secs().to_string(),
        ])
        .env("ROS_QEMU_ACCEL", accel.as_str())
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "create failed: {}",
        text(&created)
    );
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(
        stdout.contains(&format!("--rosconfig {dir_s}/rosconfig")),
        "{stdout}"
    );
    let stub_dns = stub_dns::StubDns::start(
        &netns,
        format!("{STUB_DNS_IP}:53").parse().unwrap(),
        OUTSIDE_NAME,
        OUTSIDE_ADDR,
    );

    // A second create over the same state dir is refused before anything starts.
    let again = rosctl(&["cluster", "create", "--name", &name, "--state-dir", &dir_s]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already"), "{}", text(&again));

    // show: both nodes, running, with their addresses, forwards and PIDs.
    let shown = rosctl(&["cluster", "show", "--state-dir", &dir_s, "-o", "json"]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["name"], name.as_str());
    assert_eq!(shown["netns"], netns.as_str());
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let (cp, worker) = (&nodes[0], &nodes[1]);
    assert_eq!(cp["role"], "controlplane");
    assert_eq!(cp["address"], "10.5.0.2");
    assert_eq!(worker["role"], "worker");
    assert_eq!(worker["address"], "10.5.0.3");
    let pids: Vec<u32> = nodes
        .iter()
        .map(|n| {
            assert_eq!(n["running"], true, "{n}");
            n["pid"].as_u64().unwrap() as u32
        })
        .collect();
    let table = rosctl(&["cluster", "show", "--state-dir", &dir_s]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("worker-1"),
        "{}",
        text(&table)
    );

    // The control plane through its forward, with the cluster's mutual TLS.
    let rosconfig = field(&shown, &["rosconfig"]).as_str().unwrap().to_string();
    let cp_api = cp["machine_api"].as_str().unwrap();
    let v = rosctl(&["--rosconfig", &rosconfig, "-n", cp_api, "version"]);
    assert!(v.status.success(), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        out.contains(&format!("{name}-controlplane-1")) && out.contains("configured"),
        "{out}"
    );

    // The worker through the control plane, which forwards the call over the bridge.
    let v = rosctl(&[
        "--rosconfig",
        &rosconfig,
        "-e",
        cp_api,
        "-n",
        "10.5.0.3",
        "version",
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        out.contains(&format!("{name}-worker-1")) && out.contains("configured"),
        "{out}"
    );

    // The bridge lives in the cluster's namespace only, never in the host's.
    let host_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host_links.stdout).contains("tap0"));
    let ns_addr = imager::qemu::netns::exec(&netns, "ip", &["-o", "addr", "show", "br0"]).unwrap();
    assert!(String::from_utf8_lossy(&ns_addr.stdout).contains("10.5.0.1/24"));

    // Kubernetes: a Deployment and a Service on the worker, reached from another pod.
    let kube = Kubectl {
        bin: kubectl_bin,
        kubeconfig: dir.join("kubeconfig"),
    };
    let timeout = 2 * e2e::phase_timeout(accel);
    serves_a_deployment_through_its_cluster_ip(&kube, &name, &served, timeout, &registry);
    resolves_names_from_a_pod_on_the_control_plane(&kube, &name, &served, timeout, &stub_dns);

    // destroy: no QEMU left, no namespace, no state.
    let d = rosctl(&["cluster", "destroy", "--state-dir", &dir_s]);
    assert!(d.status.success(), "{}", text(&d));
    for (pid, node) in pids.iter().zip(["controlplane-1", "worker-1"]) {
        assert!(
            !imager::qemu::process::is_running(*pid, &dir.join(node).join("qmp.sock")),
            "QEMU {pid} of {node} still runs"
        );
    }
    assert!(
        !imager::qemu::netns::exists(&netns),
        "namespace {netns} left behind"
    );
    assert!(!Path::new(&dir).exists(), "state dir left behind");
    let gone = rosctl(&["cluster", "show", "--state-dir", &dir_s]);
    assert!(!gone.status.success() && text(&gone).contains("no cluster"));
    drop(guard);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The real kubectl with the cluster's kubeconfig (its server is the forwarded 127.0.0.1 port).
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Repeats `args` until `done` accepts its output (or the deadline passes: panics with the
    /// last output and `context()`, which gathers what explains the failure).
    fn until(
        &self,
        what: &str,
        args: &[&str],
        timeout: Duration,
        done: impl Fn(&Output) -> bool,
        context: impl Fn() -> String,
    ) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.run(args, None);
            if done(&out) {
                return out;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {timeout:?}; last kubectl {args:?}: {}\n{}",
                    text(&out),
                    context()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Pods, events and nodes, for failure messages.
    fn overview(&self) -> String {
        let mut s = String::new();
        for args in [
            &["get", "nodes", "-o", "wide"][..],
            &["get", "pods", "-A", "-o", "wide"],
            &["get", "events", "-A"],
            &["get", "endpointslices", "-A"],
        ] {
            let out = self.run(args, None);
            s.push_str(&format!(
                "--- kubectl {} ---\n{}",
                args.join(" "),
                text(&out)
            ));
        }
        s
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: registry.test/ros-test/httpd:1
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: registry.test/ros-test/httpd:1
    command: [sleep, "3600"]
"#;

/// Both machines are Nodes, as in Talos and kubeadm: the control plane with ROLES
/// control-plane and the NoSchedule taint, the worker with no role; and their kubelet
/// version is the API server's.
fn control_plane_is_a_tainted_node(
    kube: &Kubectl,
    cluster: &str,
    worker: &str,
    timeout: Duration,
    context: &dyn Fn() -> String,
) {
    let cp = format!("{cluster}-controlplane-1");
    let ready = kube.until(
        "the control plane's Node Ready",
        &[
            "get",
            "node",
            &cp,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
        timeout,
        |o| stdout(o) == "True",
        context,
    );
    assert_eq!(stdout(&ready), "True");
    let table = kube.ok(&["get", "nodes", "--no-headers"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not in kubectl get nodes:\n{table}"))
            .clone()
    };
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(row(&cp)[2], "control-plane", "{table}");
    assert_eq!(row(worker)[2], "<none>", "{table}");
    let version: serde_json::Value =
        serde_json::from_str(&kube.ok(&["get", "--raw", "/version"])).unwrap();
    for name in [cp.as_str(), worker] {
        assert_eq!(row(name)[4], version["gitVersion"], "{table}");
    }
    let taints = kube.ok(&[
        "get",
        "node",
        &cp,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect}{\"\\n\"}{end}",
    ]);
    assert!(
        taints
            .lines()
            .any(|l| l == "node-role.kubernetes.io/control-plane:NoSchedule"),
        "{taints}\n{}",
        context()
    );
}

fn serves_a_deployment_through_its_cluster_ip(
    kube: &Kubectl,
    cluster: &str,
    served: &str,
    timeout: Duration,
    registry: &support_images::Registry,
) {
    let started = Instant::now();
    let context = || {
        format!(
            "{}--- registry log ---\n{}",
            kube.overview(),
            registry.log()
        )
    };
    // The worker registers itself once containerd and its agent run.
    let worker = format!("{cluster}-worker-1");
    kube.until(
        "the worker Node Ready",
        &[
            "get",
            "node",
            &worker,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ],
        timeout,
        |o| stdout(o) == "True",
        context,
    );
    eprintln!(
        "worker Ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    control_plane_is_a_tainted_node(kube, cluster, &worker, timeout, &context);

    let applied = kube.run(&["apply", "-f", "-"], Some(WEB));
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        text(&applied)
    );
    let rollout = kube.run(
        &[
            "rollout",
            "status",
            "deployment/web",
            &format!("--timeout={}s", timeout.as_secs()),
        ],
        None,
    );
    assert!(
        rollout.status.success(),
        "rollout: {}\n{}",
        text(&rollout),
        context()
    );
    eprintln!(
        "web rolled out after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Both replicas run on the worker: the control plane takes no pods when a worker exists.
    let nodes = kube.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let nodes: Vec<&str> = nodes.lines().collect();
    assert_eq!(nodes, [worker.as_str(), worker.as_str()], "{}", context());

    let ip = kube.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "service web has no cluster IP: {ip:?}"
    );
    kube.until(
        "the client pod Running",
        &["get", "pod", "client", "-o", "jsonpath={.status.phase}"],
        timeout,
        |o| stdout(o) == "Running",
        context,
    );
    // From the client pod, through the service proxy's rules on the worker, to a replica.
    // (busybox's own `wget -T` crashes in Debian's busybox-static 1.35; `timeout` bounds it.)
    let url = format!("http://{ip}:80/");
    let got = kube.until(
        &format!("{url} from the client pod"),
        &[
            "exec", "client", "--", "timeout", "10", "wget", "-qO-", &url,
        ],
        timeout,
        |o| o.status.success(),
        context,
    );
    assert_eq!(stdout(&got), served);
    eprintln!(
        "{url} served from the client pod after {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// A client pod pinned to the control plane (tolerating its taint) resolves the Service by
/// its cluster name through the cluster DNS on its own node, fetches from it by name, and
/// resolves a name outside the cluster through the forwarder (the stub server's answer).
fn resolves_names_from_a_pod_on_the_control_plane(
    kube: &Kubectl,
    cluster: &str,
    served: &str,
    timeout: Duration,
    stub: &stub_dns::StubDns,
) {
    let cp = format!("{cluster}-controlplane-1");
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: cp-client
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {{kubernetes.io/hostname: {cp}}}
  tolerations:
  - {{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}
  containers:
  - name: client
    image: registry.test/ros-test/httpd:1
    command: [sleep, "3600"]
"#
    );
    let context = || kube.overview();
    let applied = kube.run(&["apply", "-f", "-"], Some(&pod));
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        text(&applied)
    );
    kube.until(
        "the control plane's client pod Running",
        &["get", "pod", "cp-client", "-o", "jsonpath={.status.phase}"],
        timeout,
        |o| stdout(o) == "Running",
        context,
    );
    let node = kube.ok(&["get", "pod", "cp-client", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(node, cp);
    let ip = kube.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);

    // `kubectl exec cp-client -- timeout 10 ARGS...`
    let exec =
        |args: &[&'static str]| [&["exec", "cp-client", "--", "timeout", "10"][..], args].concat();
    let lookup = exec(&["nslookup", "web.default.svc.cluster.local"]);
    let found = kube.until(
        "web.default.svc.cluster.local from the control plane's pod",
        &lookup,
        timeout,
        |o| o.status.success() && stdout(o).contains(ip.as_str()),
        context,
    );
    eprintln!("nslookup on the control plane: {}", stdout(&found));

    let fetch = exec(&["wget", "-qO-", "http://web.default.svc.cluster.local/"]);
    let got = kube.until(
        "http://web/ by name from the control plane's pod",
        &fetch,
        timeout,
        |o| o.status.success(),
        context,
    );
    assert_eq!(stdout(&got), served);

    let outside = exec(&["nslookup", OUTSIDE_NAME]);
    let before = stub.answered.load(std::sync::atomic::Ordering::SeqCst);
    let found = kube.until(
        &format!("{OUTSIDE_NAME} through the cluster DNS's forwarder"),
        &outside,
        timeout,
        |o| o.status.success() && stdout(o).contains(&OUTSIDE_ADDR.to_string()),
        context,
    );
    eprintln!("nslookup {OUTSIDE_NAME}: {}", stdout(&found));
    assert!(
        stub.answered.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the answer for {OUTSIDE_NAME} did not come from the stub server"
    );
}
