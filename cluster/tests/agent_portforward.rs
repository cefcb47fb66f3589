//! `kubectl port-forward` end to end: the real kubectl 1.32 (WebSocket-tunnelled SPDY, and
//! plain SPDY with KUBECTL_PORT_FORWARD_WEBSOCKETS=false) -> `cluster server` (which ends the
//! SPDY session) -> `cluster agent` (a connection to the port inside the pod's network
//! namespace) -> busybox httpd in a container on a real containerd. Needs root and the
//! Debian packages containerd, runc, busybox-static and kubectl.

mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

    /// Starts kubectl with its stdin kept open and `env` set; stdout and stderr are
    /// collected.
    fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Kubectl {
        let mut child = std::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.server.kubeconfig)
            .args(args)
            .envs(env.iter().copied())
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
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET of / through 127.0.0.1:`port`; the whole answer.
fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

fn pod_yaml(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/testbox:1
    ports:
    - {{name: http, containerPort: {port}}}
    command: [/bin/sh, -c, 'mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec /bin/busybox httpd -f -p {port} -h /tmp/www']
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http}}
"
    )
}

impl Harness {
    /// `kubectl port-forward <target> <local>:<remote>` once it listens.
    fn forward(&self, target: &str, remote: u16, env: &[(&str, &str)]) -> (Kubectl, u16) {
        let local = free_port();
        let spec = format!("{local}:{remote}");
        let k = self.spawn_env(&["port-forward", target, &spec], env);
        k.wait_out(&format!("Forwarding from 127.0.0.1:{local}"), self);
        (k, local)
    }
}

#[test]
fn kubectl_port_forward_reaches_a_port_in_the_pod() {
    assert_eq!(
        IMAGE, "docker.io/library/testbox:1",
        "pod_yaml names the test image"
    );
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = Server::start();
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &server.kubeconfig,
        &containerd,
        NODE,
        &root.path().join("agent"),
    );
    let h = Harness {
        agent,
        server,
        _containerd: containerd,
        _root: root,
    };
    // Host networking (the agent's default): httpd listens on the node's own loopback, so
    // on a port nothing else here uses.
    let port = free_port();
    h.server.ok_stdin(&["apply", "-f", "-"], &pod_yaml(port));
    h.wait_running("web");
    wait_for(
        "httpd listening in the pod",
        || h.context(),
        || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
    );

    // The default: SPDY tunnelled in a WebSocket.
    let (pf, local) = h.forward("pod/web", port, &[]);
    let answer = get(local);
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains("hello-from-pod"),
        "through port-forward: {answer:?}\nkubectl: {} {}\n{}",
        pf.out(),
        pf.err(),
        h.context()
    );
    // Two connections at once, each its own stream pair.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| get(local));
        let b = s.spawn(|| get(local));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.contains("hello-from-pod") && b.contains("hello-from-pod"),
        "{a:?} {b:?}"
    );
    assert!(
        h.server.log().contains("pods/portforward over WebSocket"),
        "kubectl 1.32 dials the WebSocket tunnel first"
    );
    drop(pf);

    // Plain SPDY (kubectl's fallback) and a Service resolved to its pod and targetPort.
    let (pf, local) = h.forward(
        "svc/web",
        80,
        &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")],
    );
    let answer = get(local);
    assert!(
        answer.contains("hello-from-pod"),
        "svc/web over SPDY: {answer:?}\nkubectl: {} {}\n{}",
        pf.out(),
        pf.err(),
        h.context()
    );
    assert!(h.server.log().contains("pods/portforward over SPDY"));
    drop(pf);

    // Nothing listens on the port: kubectl reports the node's error.
    let closed = free_port();
    let (mut pf, local) = h.forward("pod/web", closed, &[]);
    let answer = get(local);
    assert!(!answer.contains("hello-from-pod"), "{answer:?}");
    wait_for(
        "kubectl reporting the refused connection",
        || format!("stdout: {}\nstderr: {}", pf.out(), pf.err()),
        || {
            pf.err()
                .contains("failed to connect to localhost")
                .then_some(())
        },
    );
    pf.stdin = None;
}
