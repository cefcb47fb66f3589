//! The node agent against a real `cluster server`, a real containerd (with runc) and the
//! real kubectl: node registration, pods running, exit codes, CrashLoopBackOff, deletion and
//! adoption after an agent restart. Needs root and the Debian packages containerd, runc,
//! busybox-static and kubectl.

#[path = "agent_support/harness.rs"]
mod agent_harness;
mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use agent_harness::{Harness, NODE, running};
use agent_support::{IMAGE, wait_for};

fn apply_pod(h: &Harness, name: &str, restart_policy: &str, script: &str, grace: u32) {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: main
    image: {IMAGE}
    command: [\"/bin/sh\", \"-c\", {script:?}]
    env:
    - name: GREETING
      value: hello
    - name: MY_POD
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    resources:
      limits:
        memory: 64Mi
        cpu: 500m
"
    );
    h.server.ok_stdin(&["apply", "-f", "-"], &yaml);
}

/// A pod whose env comes from ConfigMap `config_map` (key `k`).
fn apply_pod_env_from(h: &Harness, name: &str, config_map: &str) {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: [/bin/sh, -c, 'echo $K; exec sleep 1000']
    env:
    - name: K
      valueFrom:
        configMapKeyRef: {{name: {config_map}, key: k}}
"
    );
    h.server.ok_stdin(&["apply", "-f", "-"], &yaml);
}

#[test]
fn node_registers_and_pod_runs_then_is_deleted() {
    let h = Harness::start();

    let node = wait_for(
        "node n1 Ready",
        || h.context(),
        || {
            let n = h.get(&["node", NODE])?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(n)
        },
    );
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    assert_eq!(node["status"]["capacity"]["cpu"], cpus.as_str());
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert!(
        node["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki")
    );
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.0.1");
    assert_eq!(node["metadata"]["labels"]["test"], "agent");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    let lease = wait_for(
        "node lease",
        || h.context(),
        || h.get(&["lease", "-n", "kube-node-lease", NODE]),
    );
    assert_eq!(lease["spec"]["holderIdentity"], NODE);
    assert!(lease["spec"]["renewTime"].is_string());

    // `sleep` as PID 1 ignores SIGTERM, so deletion needs the SIGKILL after the grace period.
    apply_pod(
        &h,
        "web",
        "Always",
        "echo $GREETING from $MY_POD; exec sleep 1000",
        1,
    );
    let p = h.wait_pod("web", "Running", running);
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["image"], IMAGE);
    assert!(cs["imageID"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "pod not Ready: {p:#}");
    let id = cs["containerID"]
        .as_str()
        .unwrap()
        .strip_prefix("containerd://")
        .unwrap()
        .to_string();
    assert_eq!(h.containers(), vec![id.clone()]);
    let tasks = h.containerd.lines(&["tasks", "ls"]);
    assert!(
        tasks
            .iter()
            .any(|t| t.starts_with(&id) && t.contains("RUNNING")),
        "tasks: {tasks:?}"
    );

    // stdout went to the container's log file, with the env and fieldRef values.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = h
        .root
        .path()
        .join(format!("agent/pods/default_web_{uid}/main/0.log"));
    let text = wait_for(
        "container log",
        || h.context(),
        || std::fs::read_to_string(&log).ok().filter(|t| !t.is_empty()),
    );
    assert_eq!(text.trim(), "hello from web");

    // The memory limit reached runc: the task's cgroup has it.
    let cg = format!("/sys/fs/cgroup/memory/ros/{id}/memory.limit_in_bytes");
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(
            std::fs::read_to_string(&cg).unwrap().trim(),
            (64 * 1024 * 1024).to_string()
        );
    }

    // kubectl logs goes through the API server to the agent's log endpoint.
    assert_eq!(h.server.ok(&["logs", "web"]).trim(), "hello from web");
    assert_eq!(
        h.server.ok(&["logs", "web", "-c", "main"]).trim(),
        "hello from web"
    );
    apply_pod(
        &h,
        "ticker",
        "Always",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        1,
    );
    h.wait_pod("ticker", "Running", running);
    let mut follow = h.server.spawn(&["logs", "-f", "ticker"]);
    follow.wait_for_line("tick 0");
    follow.wait_for_line("tick 2");
    drop(follow);
    let tail = h.server.ok(&["logs", "ticker", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "tail: {tail:?}");
    assert!(tail.starts_with("tick "), "tail: {tail:?}");
    let err = h.server.fail(&["logs", "web", "--previous"]);
    assert!(err.contains("previous terminated container"), "{err}");
    h.server
        .ok(&["delete", "pod", "ticker", "--wait=true", "--timeout=60s"]);

    h.server
        .ok(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    assert!(h.pod("web").is_none());
    assert!(
        h.containers().is_empty(),
        "containers left: {:?}",
        h.containers()
    );
    assert!(h.containerd.lines(&["tasks", "ls", "-q"]).is_empty());
    let snaps = h
        .containerd
        .lines(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(
        !snaps.iter().any(|s| s.contains(&id)),
        "snapshot left: {snaps:?}"
    );
}

#[test]
fn exit_codes_restart_policy_and_crash_loop() {
    let h = Harness::start();
    apply_pod(&h, "ok", "Never", "exit 0", 1);
    apply_pod(&h, "bad", "Never", "exit 7", 1);
    apply_pod(&h, "crash", "Always", "echo crashing; exit 3", 1);

    let p = h.wait_pod("ok", "Succeeded", |p, _| {
        p["status"]["phase"] == "Succeeded"
    });
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 0);
    assert_eq!(t["reason"], "Completed");
    let p = h.wait_pod("bad", "Failed", |p, _| p["status"]["phase"] == "Failed");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 7);
    assert_eq!(t["reason"], "Error");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);

    let p = h.wait_pod("crash", "CrashLoopBackOff after 2 restarts", |_, cs| {
        cs["restartCount"].as_u64().unwrap_or(0) >= 2
            && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(p["status"]["phase"], "Running");
    // Only the latest attempt and the one before it are kept in containerd.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let mine = h.containers().len();
    assert!(
        (1..=2 + 2).contains(&mine),
        "containers: {:?} (pod {uid})",
        h.containers()
    );
    // Each attempt wrote its own log file.
    let dir = h
        .root
        .path()
        .join(format!("agent/pods/default_crash_{uid}/main"));
    assert!(
        std::fs::read_to_string(dir.join("0.log"))
            .unwrap()
            .contains("crashing")
    );
    assert!(
        std::fs::read_to_string(dir.join("1.log"))
            .unwrap()
            .contains("crashing")
    );

    let previous = h.server.ok(&["logs", "crash", "--previous"]);
    assert_eq!(previous.trim(), "crashing");

    for name in ["ok", "bad", "crash"] {
        h.server
            .ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
    }
    assert!(
        h.containers().is_empty(),
        "containers left: {:?}",
        h.containers()
    );
}

#[test]
fn restarted_agent_adopts_running_containers() {
    let mut h = Harness::start();
    apply_pod(&h, "long", "Always", "exec sleep 1000", 1);
    let before = h.wait_pod("long", "Running", running);
    let id = before["status"]["containerStatuses"][0]["containerID"].clone();

    h.restart_agent();
    // A second pod Running proves the new agent has synced (each sync covers every pod).
    apply_pod(&h, "marker", "Always", "exec sleep 1000", 1);
    h.wait_pod("marker", "Running", running);

    let after = h.wait_pod("long", "Running", running);
    let cs = &after["status"]["containerStatuses"][0];
    assert_eq!(cs["containerID"], id, "the running container was replaced");
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(h.containers().len(), 2, "containers: {:?}", h.containers());
    let running_tasks = h
        .containerd
        .lines(&["tasks", "ls"])
        .iter()
        .filter(|t| t.contains("RUNNING"))
        .count();
    assert_eq!(running_tasks, 2);

    // A pod deleted while the agent is down: its container goes once the agent is back.
    drop(h.agent.take());
    h.server
        .ok(&["delete", "pod", "marker", "--grace-period=0", "--force"]);
    h.restart_agent();
    wait_for(
        "the deleted pod's container removed",
        || h.context(),
        || (h.containers().len() == 1).then_some(()),
    );
    assert_eq!(
        h.containers(),
        vec![
            id.as_str()
                .unwrap()
                .strip_prefix("containerd://")
                .unwrap()
                .to_string()
        ]
    );
}

#[test]
fn config_maps_secrets_and_volumes_reach_the_container() {
    let h = Harness::start();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("marker"), "from-host").unwrap();
    let yaml = format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: app
data:
  mode: fast
  app.conf: x=1
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
data:
  password: aHVudGVyMg==
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - name: main
    image: {IMAGE}
    command: [/bin/sh, -c]
    args:
    - echo mode=$MODE pw=$PW cm=$CM_mode; cat /etc/app/app.conf; echo; cat /secrets/password; echo;
      echo scratch > /scratch/f; cat /scratch/f; cat /host/marker; echo
    env:
    - name: MODE
      valueFrom:
        configMapKeyRef: {{name: app, key: mode}}
    - name: PW
      valueFrom:
        secretKeyRef: {{name: creds, key: password}}
    envFrom:
    - configMapRef: {{name: app}}
      prefix: CM_
    volumeMounts:
    - {{name: conf, mountPath: /etc/app, readOnly: true}}
    - {{name: sec, mountPath: /secrets}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: host, mountPath: /host}}
  volumes:
  - name: conf
    configMap: {{name: app}}
  - name: sec
    secret: {{secretName: creds}}
  - name: scratch
    emptyDir: {{}}
  - name: host
    hostPath: {{path: {host}}}
",
        host = host_dir.path().display()
    );
    h.server.ok_stdin(&["apply", "-f", "-"], &yaml);
    let p = h.wait_pod("reader", "Succeeded", |p, _| {
        p["status"]["phase"] != "Pending" && p["status"]["phase"] != "Running"
    });
    assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}\n{}", h.context());
    let logs = h.server.ok(&["logs", "reader"]);
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        [
            "mode=fast pw=hunter2 cm=fast",
            "x=1",
            "hunter2",
            "scratch",
            "from-host"
        ],
        "{logs}"
    );

    // A missing ConfigMap holds the container back until it exists.
    apply_pod_env_from(&h, "waits", "later");
    let p = h.wait_pod("waits", "CreateContainerConfigError", |_, cs| {
        cs["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("configmap \"later\" not found"), "{msg}");
    h.server
        .ok(&["create", "configmap", "later", "--from-literal=k=v"]);
    h.wait_pod("waits", "Running", running);

    // An image containerd does not have, with pull policy Never (tests pull only from the
    // local registry: agent_registry.rs), surfaces as ErrImageNeverPull.
    h.server.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: main\n    image: absent:1\n    imagePullPolicy: Never\n"
        ),
    );
    let p = h.wait_pod("noimage", "ErrImageNeverPull", |_, cs| {
        cs["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("docker.io/library/absent:1"), "{msg}");
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn node_is_not_ready_while_containerd_is_down() {
    let mut h = Harness::start();
    let ready = |h: &Harness, want: &str| {
        let n = h.get(&["node", NODE])?;
        let c = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (c["status"] == want).then_some(c)
    };
    wait_for("node Ready", || h.context(), || ready(&h, "True"));
    h.containerd.kill_daemon();
    let c = wait_for("node not Ready", || h.context(), || ready(&h, "False"));
    assert_eq!(c["reason"], "ContainerRuntimeDown");
}

/// The containerd guard leaves nothing behind even when containerd cannot remove its tasks
/// (it died first): the shim and container are killed by PID, the rootfs mount detached,
/// the directory removed.
#[test]
fn containerd_guard_cleans_up_after_a_dead_containerd() {
    use agent_support::{Containerd, cleanup};
    let mut c = Containerd::start();
    c.import_test_image();
    // runc's state dir is shared by every containerd on the host: a unique ID.
    let id = format!("guard-test-{}", std::process::id());
    let run = c.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        "overlayfs",
        IMAGE,
        &id,
        "/bin/sleep",
        "1000",
    ]);
    assert!(
        run.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dir = c.dir.path().to_path_buf();
    let socket = c.socket.clone();
    let shims = cleanup::shims(&socket, &dir.join("state"));
    assert_eq!(shims.len(), 1, "one shim serves the container");
    assert!(
        !cleanup::mounts_under(&dir).is_empty(),
        "the container's rootfs is mounted below the guard's dir"
    );
    c.kill_daemon();
    drop(c);
    assert!(
        cleanup::shims(&socket, &dir.join("state")).is_empty(),
        "no shim left"
    );
    assert!(!cleanup::alive(shims[0]), "shim {} is gone", shims[0]);
    assert!(cleanup::mounts_under(&dir).is_empty(), "no mount left");
    assert!(
        !std::path::Path::new("/run/containerd/runc/k8s.io")
            .join(&id)
            .exists(),
        "runc's state of {id} removed"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
}
