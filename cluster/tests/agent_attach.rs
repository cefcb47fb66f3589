//! `kubectl attach` and `kubectl run -i` end to end: the real kubectl 1.32 -> `cluster
//! server` (pods/attach over WebSocket) -> `cluster agent` -> a real containerd (the
//! container's stdin FIFO and its log file). Also the agent's `--node-taint` flags: the Node
//! carries them next to a taint someone else set. Needs root and the Debian packages
//! containerd, runc, busybox-static and kubectl.

mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};

use agent_support::{Agent, Containerd, IMAGE, wait_for};
use kubectl_support::{KUBECTL, Server};
use serde_json::Value;

const NODE: &str = "n1";

/// Fields drop in order: the agent stops first, so it cannot restart containers while
/// containerd's guard removes them.
struct Harness {
    agent: Agent,
    server: Server,
    _containerd: Containerd,
    _root: tempfile::TempDir,
}

impl Harness {
    fn context(&self) -> String {
        format!(
            "agent log:\n{}\nserver log (tail):\n{}",
            self.agent.log(),
            tail(&self.server.log(), 30)
        )
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let out = self.server.run(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn wait_running(&self, name: &str) {
        wait_for(
            &format!("pod {name} running"),
            || {
                format!(
                    "pod: {:#}\n{}",
                    self.pod(name).unwrap_or_default(),
                    self.context()
                )
            },
            || {
                self.pod(name)?["status"]["containerStatuses"][0]["state"]["running"]
                    .is_object()
                    .then_some(())
            },
        );
    }

    /// Starts kubectl with its stdin kept open; stdout and stderr are collected.
    fn spawn(&self, args: &[&str]) -> Kubectl {
        let mut child = std::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.server.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        for (pipe, buf) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                out.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), err.clone()),
        ] {
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
        }
        Kubectl {
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running kubectl; killed by PID on drop.
struct Kubectl {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Kubectl {
    fn write(&mut self, s: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits until stdout contains `needle`.
    fn wait_out(&self, needle: &str, h: &Harness) {
        wait_for(
            &format!("kubectl printing {needle:?}"),
            || {
                format!(
                    "stdout: {}\nstderr: {}\n{}",
                    self.out(),
                    self.err(),
                    h.context()
                )
            },
            || self.out().contains(needle).then_some(()),
        );
    }

    /// Waits for kubectl to exit; its exit code.
    fn wait_exit(&mut self, h: &Harness) -> i32 {
        let (out, err) = (self.out.clone(), self.err.clone());
        let child = &mut self.child;
        wait_for(
            "kubectl to exit",
            || {
                format!(
                    "stdout: {}\nstderr: {}\n{}",
                    out.lock().unwrap(),
                    err.lock().unwrap(),
                    h.context()
                )
            },
            || child.try_wait().unwrap(),
        )
        .code()
        .unwrap_or(-1)
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/testbox:1
    command: [/bin/sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/testbox:1
    stdin: true
    command: [/bin/sh, -c, 'while read l; do echo \"got $l\"; done; echo reader-saw-eof; sleep 1000']
";

#[test]
fn kubectl_attach_streams_output_and_feeds_stdin() {
    assert_eq!(
        IMAGE, "docker.io/library/testbox:1",
        "PODS names the test image"
    );
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = Server::start();
    // Someone else's taint is on the Node before the agent registers.
    server.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  taints:\n  - {key: other, value: x, effect: NoSchedule}\n",
    );
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(
        &server.kubeconfig,
        &containerd,
        NODE,
        &root.path().join("agent"),
        &[
            "--node-taint",
            "dedicated=db:NoSchedule",
            "--node-taint",
            "example.com/gpu:PreferNoSchedule",
        ],
    );
    let h = Harness {
        agent,
        server,
        _containerd: containerd,
        _root: root,
    };
    wait_for(
        "the agent's taints on the Node",
        || h.context(),
        || {
            let out = h.server.run(&["get", "node", NODE, "-o", "json"]);
            let node: Value = serde_json::from_slice(&out.stdout).ok()?;
            let mut taints: Vec<String> = node["spec"]["taints"]
                .as_array()?
                .iter()
                .map(|t| {
                    format!(
                        "{}={}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["value"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect();
            taints.sort();
            (taints
                == [
                    "dedicated=db:NoSchedule",
                    "example.com/gpu=:PreferNoSchedule",
                    "other=x:NoSchedule",
                ])
            .then_some(())
        },
    );
    // A bad flag is refused with the flag's name.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--node-taint",
            "k=v",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--node-taint") && err.contains("no effect"),
        "{err}"
    );

    h.server.ok_stdin(&["apply", "-f", "-"], PODS);
    h.wait_running("ticker");
    h.wait_running("reader");

    // attach without -i: live output, from now on (tick 0 is already in the log).
    wait_for(
        "ticker's first ticks in its log",
        || h.context(),
        || {
            let out = h.server.run(&["logs", "ticker"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("tick 1\n")
                .then_some(())
        },
    );
    let mut ticker = h.spawn(&["attach", "ticker"]);
    wait_for(
        "two ticks through attach",
        || format!("stdout: {}\nstderr: {}", ticker.out(), ticker.err()),
        || (ticker.out().matches("tick ").count() >= 2).then_some(()),
    );
    assert!(
        !ticker.out().contains("tick 0\n"),
        "attach starts at the current output: {}",
        ticker.out()
    );
    ticker.stdin = None;
    drop(ticker);

    // attach -i: input reaches the container's stdin; the stream stays open for the next
    // session (no stdinOnce).
    let mut first = h.spawn(&["attach", "-i", "reader"]);
    first.write("one\n");
    first.wait_out("got one", &h);
    drop(first);
    let mut second = h.spawn(&["attach", "-i", "reader"]);
    second.write("two\n");
    second.wait_out("got two", &h);
    assert!(!second.out().contains("reader-saw-eof"), "{}", second.out());
    // -t on a container without a terminal: kubectl warns and attaches anyway.
    drop(second);
    let mut tty = h.spawn(&["attach", "-it", "reader"]);
    tty.write("three\n");
    tty.wait_out("got three", &h);
    drop(tty);

    // kubectl run -i --rm: stdinOnce, so the container sees EOF after our input; its
    // output comes back, the pod is deleted and kubectl exits 0.
    let mut run = h.spawn(&[
        "run",
        "once",
        "-i",
        "--rm",
        "--restart=Never",
        "--image",
        IMAGE,
        "--overrides",
        r#"{"spec":{"nodeName":"n1","terminationGracePeriodSeconds":1}}"#,
        "--",
        "sh",
        "-c",
        "while read l; do echo \"ran $l\"; done; echo done-reading",
    ]);
    run.write("alpha\nbeta\n");
    run.stdin = None;
    let code = run.wait_exit(&h);
    assert_eq!(
        code,
        0,
        "kubectl run -i: stdout {}\nstderr {}\n{}",
        run.out(),
        run.err(),
        h.context()
    );
    let out = run.out();
    assert!(
        out.contains("ran alpha") && out.contains("ran beta") && out.contains("done-reading"),
        "kubectl run -i output: {out}\nstderr: {}",
        run.err()
    );
    wait_for(
        "pod once deleted (--rm)",
        || h.context(),
        || h.pod("once").is_none().then_some(()),
    );

    // Errors: a missing pod, a container that is not there.
    let out = h.server.run(&["attach", "missing"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = h.server.run(&["attach", "ticker", "-c", "nope"]);
    assert!(!out.status.success());
}
