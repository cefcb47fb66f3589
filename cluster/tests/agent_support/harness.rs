//! One node end to end: a `cluster server` (SQLite, its scheduler and controllers), a private
//! containerd with the test image, and a `cluster agent` for node [`NODE`] on it, with the
//! kubectl helpers the agent tests share. Drops the agent first (so it cannot restart a
//! container behind the cleanup), then the server, then containerd (see [`Containerd`]'s
//! drop for what it removes). A test declares it beside `agent_support` and
//! `kubectl_support` (see agent_support/mod.rs).

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

use crate::agent_support::{Agent, Containerd, wait_for};
use crate::kubectl_support::Server;

/// The node name [`Harness::start`] registers.
pub const NODE: &str = "n1";

pub struct Harness {
    /// `None` while stopped ([`Harness::stop_agent`]).
    pub agent: Option<Agent>,
    pub server: Server,
    pub containerd: Containerd,
    /// Scratch space of the test; the agent's root dir is `root/agent`.
    pub root: tempfile::TempDir,
    pub node: String,
    agent_args: Vec<String>,
}

impl Harness {
    /// Node [`NODE`] with the default agent arguments.
    pub fn start() -> Harness {
        Harness::start_with(NODE, &[])
    }

    /// Node `node`, the agent started with `agent_args` added to [`Agent::start`]'s.
    pub fn start_with(node: &str, agent_args: &[&str]) -> Harness {
        let containerd = Containerd::start();
        containerd.import_test_image();
        let server = Server::start();
        let root = tempfile::tempdir().unwrap();
        let mut h = Harness {
            agent: None,
            server,
            containerd,
            root,
            node: node.to_string(),
            agent_args: agent_args.iter().map(|a| a.to_string()).collect(),
        };
        h.start_agent();
        h
    }

    /// The agent's `--root-dir`.
    pub fn agent_root(&self) -> PathBuf {
        self.root.path().join("agent")
    }

    /// Starts the agent (again), with the same arguments.
    pub fn start_agent(&mut self) {
        let args: Vec<&str> = self.agent_args.iter().map(String::as_str).collect();
        self.agent = Some(Agent::start_with(
            &self.server.kubeconfig,
            &self.containerd,
            &self.node,
            &self.agent_root(),
            &args,
        ));
    }

    /// Kills the agent (as a crash); its containers keep running.
    pub fn stop_agent(&mut self) {
        drop(self.agent.take());
    }

    pub fn restart_agent(&mut self) {
        self.stop_agent();
        self.start_agent();
    }

    /// Logs for a failure message: the agent's, and the tails of the server's and containerd's.
    pub fn context(&self) -> String {
        format!(
            "agent log:\n{}\nserver log (tail):\n{}\ncontainerd log (tail):\n{}",
            self.agent.as_ref().map(|a| a.log()).unwrap_or_default(),
            tail(&self.server.log(), 30),
            tail(&self.containerd.log(), 20),
        )
    }

    /// `kubectl get <args> -o json`, `None` when kubectl fails (e.g. not found).
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let out = self.server.run(&[&["get"], args, &["-o", "json"]].concat());
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get(&["pod", name])
    }

    /// Runs kubectl with `stdin`; its exit code, stdout and stderr.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let out = self.server.run_stdin_pub(args, stdin);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let (code, out, err) = self.kubectl(args, stdin);
        assert_eq!(
            code,
            0,
            "kubectl {args:?}\nstdout: {out}\nstderr: {err}\n{}",
            self.context()
        );
        out
    }

    /// kubectl that must fail; its exit code and stderr.
    pub fn fail(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = self.kubectl(args, "");
        assert_ne!(code, 0, "kubectl {args:?} succeeded: {out}");
        (code, err)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.ok(&["apply", "-f", "-"], yaml);
    }

    /// Waits until pod `name` and its first container status satisfy `check`; the pod.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Value, &Value) -> bool,
    ) -> Value {
        wait_for(
            &format!("pod {name}: {what}"),
            || {
                format!(
                    "pod: {:#}\n{}",
                    self.pod(name).unwrap_or_default(),
                    self.context()
                )
            },
            || {
                let p = self.pod(name)?;
                let cs = p["status"]["containerStatuses"][0].clone();
                check(&p, &cs).then_some(p)
            },
        )
    }

    /// containerd's container IDs.
    pub fn containers(&self) -> Vec<String> {
        self.containerd.lines(&["containers", "ls", "-q"])
    }

    /// The containerd ID of container `container` of pod `pod`.
    pub fn container_id(&self, pod: &str, container: &str) -> String {
        let uid = self.pod(pod).expect("the pod")["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        self.containers()
            .into_iter()
            .find(|id| {
                let info = self.containerd.ctr(&["containers", "info", id]);
                let v: Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
                v["Labels"]["io.ros.pod.uid"] == uid.as_str()
                    && v["Labels"]["io.ros.container.name"] == container
            })
            .unwrap_or_else(|| panic!("container {container} of pod {pod} in containerd"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Explicitly first, whatever the field order: no agent may restart a container
        // while containerd's guard removes them.
        self.stop_agent();
    }
}

/// A pod in phase Running whose container status `cs` is running.
pub fn running(p: &Value, cs: &Value) -> bool {
    p["status"]["phase"] == "Running" && cs["state"]["running"].is_object()
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
