//! The node agent pulling images from a real registry (Debian's docker-registry on
//! 127.0.0.1, images built by the test from busybox-static) into a real containerd, with a
//! real `cluster server` and kubectl. Needs root and the Debian packages containerd, runc,
//! busybox-static, docker-registry and kubectl.

mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;
mod support_images;

use agent_support::{Agent, Containerd, wait_for};
use kubectl_support::Server;
use serde_json::Value;
use support_images::{Registry, TestImage};

const NODE: &str = "n1";

/// Fields drop in order: the agent stops before containerd removes the tasks.
pub struct Harness {
    pub agent: Agent,
    pub containerd: Containerd,
    pub server: Server,
    pub registry: Registry,
    /// Demands user `puller`, password `s3cret` (given to the agent in its registries config).
    pub private: Registry,
    pub root: tempfile::TempDir,
}

impl Harness {
    /// containerd, registry, API server and an agent whose registries config sends
    /// `mirror.invalid` to the local registry.
    pub fn start() -> Harness {
        let containerd = Containerd::start();
        let registry = Registry::start();
        let private = Registry::start_with_auth("puller", "s3cret");
        let server = Server::start();
        let root = tempfile::tempdir().unwrap();
        let registries = root.path().join("registries.yaml");
        std::fs::write(
            &registries,
            format!(
                "mirrors:\n  mirror.invalid:\n    endpoints: [\"http://{}\"]\n    skipFallback: true\n\
                 config:\n  \"{}\":\n    auth: {{username: puller, password: s3cret}}\n",
                registry.host, private.host
            ),
        )
        .unwrap();
        let agent = Agent::start_with(
            &server.kubeconfig,
            &containerd,
            NODE,
            &root.path().join("agent"),
            &["--registries-config", registries.to_str().unwrap()],
        );
        Harness {
            server,
            containerd,
            registry,
            private,
            agent,
            root,
        }
    }

    pub fn context(&self) -> String {
        format!(
            "agent log:\n{}\nregistry log (tail):\n{}",
            self.agent.log(),
            tail(&self.registry.log(), 20),
        )
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let out = self.server.run(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn apply(&self, yaml: &str) {
        self.server.ok_stdin(&["apply", "-f", "-"], yaml);
    }

    /// A pod with one container running `script` in `image`.
    pub fn pod_yaml(name: &str, image: &str, policy: &str, restart: &str, script: &str) -> String {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: [/bin/sh, -c, {script:?}]
"
        )
    }

    pub fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(
            &format!("pod {name}: {what}"),
            || {
                format!(
                    "pod: {:#}\n{}",
                    self.pod(name).unwrap_or_default(),
                    self.context()
                )
            },
            || self.pod(name).filter(|p| check(p)),
        )
    }

    /// Waits until the pod has finished (Succeeded or Failed).
    pub fn wait_done(&self, name: &str) -> Value {
        self.wait_pod(name, "finished", |p| {
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
    }

    /// The Events of pod `name`: (reason, message).
    pub fn events(&self, name: &str) -> Vec<(String, String)> {
        let out = self.server.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn waiting_reason(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn images_are_pulled_from_registries_following_the_pull_policy() {
    let h = Harness::start();
    let app = h.registry.push(&TestImage::new("app", "1"));
    let mut multi = TestImage::new("multi", "1");
    multi.index = true;
    let multi = h.registry.push(&multi);
    let latest = h.registry.push(&TestImage::new("app", "latest"));

    h.apply(&Harness::pod_yaml(
        "ok",
        &app,
        "IfNotPresent",
        "Never",
        "echo arch=$ARCH",
    ));
    h.apply(&Harness::pod_yaml(
        "exits",
        &app,
        "IfNotPresent",
        "Never",
        "exit 3",
    ));
    h.apply(&Harness::pod_yaml(
        "index",
        &multi,
        "Always",
        "Never",
        "echo arch=$ARCH",
    ));
    // No tag policy given: `:latest` defaults to Always.
    let latest_yaml = Harness::pod_yaml("latest", &latest, "Always", "Never", "echo latest")
        .replace("    imagePullPolicy: Always\n", "");
    h.apply(&latest_yaml);
    h.apply(&Harness::pod_yaml(
        "mirrored",
        "mirror.invalid/app:1",
        "IfNotPresent",
        "Never",
        "echo mirrored",
    ));
    let absent = h.registry.image("absent", "1");
    h.apply(&Harness::pod_yaml(
        "absent",
        &absent,
        "IfNotPresent",
        "Never",
        "echo finally",
    ));
    h.apply(&Harness::pod_yaml(
        "never",
        &h.registry.image("nowhere", "1"),
        "Never",
        "Never",
        "true",
    ));

    // Credentials from the registries config open the private registry.
    let secret_image = h.private.push(&TestImage::new("secret", "1"));
    h.apply(&Harness::pod_yaml(
        "private",
        &secret_image,
        "IfNotPresent",
        "Never",
        "echo private",
    ));
    // The same registry under another name has no credentials configured.
    let port = h.private.host.rsplit(':').next().unwrap();
    h.apply(&Harness::pod_yaml(
        "anonymous",
        &format!("localhost:{port}/secret:1"),
        "IfNotPresent",
        "Never",
        "true",
    ));

    // Pulled and run to the end, with the right exit codes.
    let p = h.wait_done("ok");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["state"]["terminated"]["exitCode"], 0);
    assert_eq!(cs["image"], app.as_str());
    assert!(cs["imageID"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(h.server.ok(&["logs", "ok"]).trim(), "arch=amd64");
    let p = h.wait_done("exits");
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    let reasons: Vec<String> = h.events("ok").into_iter().map(|(r, _)| r).collect();
    assert!(
        reasons.contains(&"Pulling".to_string()) || reasons.contains(&"Pulled".to_string()),
        "events of pod ok: {reasons:?}"
    );

    let p = h.wait_done("private");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    assert_eq!(h.server.ok(&["logs", "private"]).trim(), "private");
    let p = h.wait_pod("anonymous", "ImagePullBackOff", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(msg.contains("auth"), "{msg}");
    // ... and a pod's image pull secret gives it credentials for that name.
    h.server.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server=localhost:{port}"),
        "--docker-username=puller",
        "--docker-password=s3cret",
    ]);
    let with_secret = Harness::pod_yaml(
        "with-secret",
        &format!("localhost:{port}/secret:1"),
        "IfNotPresent",
        "Never",
        "echo with secret",
    )
    .replace(
        "  containers:\n",
        "  imagePullSecrets: [{name: regcred}]\n  containers:\n",
    );
    h.apply(&with_secret);
    let p = h.wait_done("with-secret");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    assert_eq!(h.server.ok(&["logs", "with-secret"]).trim(), "with secret");

    // An index resolves to the linux/amd64 manifest; its imageID is the index digest.
    let p = h.wait_done("index");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    assert_eq!(h.server.ok(&["logs", "index"]).trim(), "arch=amd64");
    let mut m = TestImage::new("multi", "1");
    m.index = true;
    assert_eq!(
        p["status"]["containerStatuses"][0]["imageID"],
        m.build().index_digest.as_str()
    );

    let p = h.wait_done("latest");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());

    // mirror.invalid exists only as a mirror entry pointing at the local registry.
    let p = h.wait_done("mirrored");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    assert_eq!(h.server.ok(&["logs", "mirrored"]).trim(), "mirrored");

    // containerd holds the images under their names, unpacked for overlayfs.
    let images = h.containerd.lines(&["images", "ls", "-q"]);
    for name in [&app, &multi, &latest, &"mirror.invalid/app:1".to_string()] {
        assert!(images.contains(name), "{name} not in {images:?}");
    }
    let snaps = h
        .containerd
        .lines(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    let diff_id = TestImage::new("app", "1").build().diff_id;
    assert!(
        snaps.iter().any(|s| s.starts_with(&diff_id)),
        "no snapshot {diff_id}: {snaps:?}"
    );

    // Never with no local image: ErrImageNeverPull, nothing pulled.
    let p = h.wait_pod("never", "ErrImageNeverPull", |p| {
        waiting_reason(p) == "ErrImageNeverPull"
    });
    assert_eq!(p["status"]["phase"], "Pending");

    // A missing image: the registry's own message, ErrImagePull then ImagePullBackOff.
    let p = h.wait_pod("absent", "ImagePullBackOff", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("manifest unknown"), "{msg}");
    assert!(msg.contains(&absent), "{msg}");
    let events = h.events("absent");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Failed" && m.contains("manifest unknown")),
        "events: {events:?}"
    );
    assert!(
        events.iter().any(|(r, _)| r == "BackOff"),
        "events: {events:?}"
    );
    // Retried with back-off: once the image exists, the pod runs.
    h.registry.push(&TestImage::new("absent", "1"));
    let p = h.wait_done("absent");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    assert_eq!(h.server.ok(&["logs", "absent"]).trim(), "finally");
}

fn condition(p: &Value, type_: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn init_containers_probes_env_and_security_context() {
    let h = Harness::start();
    let image = h.registry.push(&TestImage::new("tools", "1"));
    // Probes and the test share this directory (hostPath): the test flips their results.
    let gate = tempfile::tempdir().unwrap();
    let gate_dir = gate.path().display().to_string();
    let web_port = free_port();
    let dead_port = free_port();
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: init
spec:
  nodeName: {NODE}
  restartPolicy: Never
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  initContainers:
  - name: first
    image: {image}
    command: [/bin/sh, -c, 'echo first >> /shared/order']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: second
    image: {image}
    command: [/bin/sh, -c, 'echo second >> /shared/order']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: {image}
    command: [/bin/sh, -c, 'cat /shared/order; echo $POD_NS/$POD_NAME/$POD_UID on $NODE at $POD_IP; id -u; grep CapBnd /proc/self/status; touch /x 2>/dev/null || echo read-only']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    env:
    - {{name: POD_NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    securityContext:
      runAsUser: 1000
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL], add: [NET_ADMIN]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: init-fails
spec:
  nodeName: {NODE}
  restartPolicy: Never
  initContainers:
  - {{name: bad, image: {image}, command: [/bin/sh, -c, 'exit 5']}}
  containers:
  - {{name: main, image: {image}, command: [/bin/sh, -c, 'echo never']}}
---
apiVersion: v1
kind: Pod
metadata:
  name: init-retry
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  initContainers:
  - name: flaky
    image: {image}
    command: [/bin/sh, -c, 'test -f /shared/tried && exit 0; touch /shared/tried; exit 1']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - {{name: main, image: {image}, command: [/bin/sh, -c, 'exec sleep 1000']}}
---
apiVersion: v1
kind: Pod
metadata:
  name: ready
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: gate, hostPath: {{path: {gate_dir}}}}}
  containers:
  - name: main
    image: {image}
    command: [/bin/sh, -c, 'exec sleep 1000']
    volumeMounts: [{{name: gate, mountPath: /gate}}]
    readinessProbe:
      exec: {{command: [/bin/test, -f, /gate/ready]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: gate, hostPath: {{path: {gate_dir}}}}}
  containers:
  - name: main
    image: {image}
    command: [/bin/httpd, -f, -p, '127.0.0.1:{web_port}', -h, /gate]
    ports: [{{name: http, containerPort: {web_port}}}]
    volumeMounts: [{{name: gate, mountPath: /gate}}]
    startupProbe:
      tcpSocket: {{port: http}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {{path: /web-ok, port: http}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: live
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [/bin/sh, -c, 'exec sleep 1000']
    livenessProbe:
      tcpSocket: {{port: {dead_port}}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: stopper
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 2
  volumes:
  - {{name: gate, hostPath: {{path: {gate_dir}}}}}
  containers:
  - name: main
    image: {image}
    command: [/bin/sh, -c, 'exec sleep 1000']
    volumeMounts: [{{name: gate, mountPath: /gate}}]
    lifecycle:
      preStop:
        exec: {{command: [/bin/sh, -c, 'echo bye from $HOSTNAME > /gate/prestop']}}
"
    );
    h.apply(&yaml);

    // Init containers ran in order before the app container; env from the pod's fields;
    // securityContext applied.
    let p = h.wait_done("init");
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for s in inits {
        assert_eq!(s["state"]["terminated"]["exitCode"], 0, "{s:#}");
    }
    assert_eq!(condition(&p, "Initialized"), "True");
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let logs = h.server.ok(&["logs", "init"]);
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        [
            "first",
            "second",
            &format!("default/init/{uid} on {NODE} at 127.0.0.1"),
            "1000",
            "CapBnd:\t0000000000001000",
            "read-only",
        ],
        "{logs}"
    );
    assert_eq!(h.server.ok(&["logs", "init", "-c", "first"]).trim(), "");

    // A failed init container with restartPolicy Never fails the pod; main never starts.
    let p = h.wait_done("init-fails");
    assert_eq!(p["status"]["phase"], "Failed", "{p:#}");
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        5
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(condition(&p, "Initialized"), "False");

    // A failing init container is restarted (restartPolicy Always), then the pod runs.
    let p = h.wait_pod("init-retry", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    assert_eq!(p["status"]["initContainerStatuses"][0]["restartCount"], 1);
    assert_eq!(
        p["status"]["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );

    // Readiness (exec): running but not Ready until the probe passes.
    let p = h.wait_pod("ready", "running, probed", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
            && p["status"]["containerStatuses"][0]["started"] == true
    });
    assert_eq!(condition(&p, "Ready"), "False", "{p:#}");
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);
    // Startup (tcpSocket) passes once httpd listens; readiness (httpGet) fails with 404.
    let p = h.wait_pod("web", "started", |p| {
        p["status"]["containerStatuses"][0]["started"] == true
    });
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false, "{p:#}");
    std::fs::write(gate.path().join("ready"), "").unwrap();
    std::fs::write(gate.path().join("web-ok"), "ok").unwrap();
    let p = h.wait_pod("ready", "Ready", |p| condition(p, "Ready") == "True");
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    h.wait_pod("web", "Ready", |p| condition(p, "Ready") == "True");
    // ... and back to not Ready when it fails again.
    std::fs::remove_file(gate.path().join("ready")).unwrap();
    h.wait_pod("ready", "not Ready", |p| condition(p, "Ready") == "False");

    // Liveness (tcpSocket to a closed port): the container is killed and restarted.
    let p = h.wait_pod("live", "restarted", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137,
        "{p:#}"
    );
    // preStop runs before the container is stopped (sleep ignores SIGTERM: SIGKILL after
    // the grace period ends it).
    h.wait_pod("stopper", "Running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    h.server
        .ok(&["delete", "pod", "stopper", "--wait=true", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(gate.path().join("prestop"))
            .unwrap_or_default()
            .trim(),
        "bye from stopper"
    );

    let events = h.events("live");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Killing" && m.contains("Liveness probe failed")),
        "{events:?}"
    );
}
