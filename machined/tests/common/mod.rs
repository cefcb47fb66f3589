//! Test harness: machined in dev mode on 127.0.0.1 (a random port), a generated PKI and
//! configs, and API clients with each role.

#![allow(dead_code)]

use ros_api::client::{self, Client, Credentials};
use ros_config::generate::{GenOptions, generate};
use ros_config::secrets::Secrets;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running machined; killed (by PID) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: String,
    pub trust_addr: String,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_machined"))
            .arg("--state-dir")
            .arg(dir.path().join("node"))
            .args(["--listen", "127.0.0.1:0"])
            .args(if extra.contains(&"--node-name") {
                &[][..]
            } else {
                &["--node-name", "test-node"][..]
            })
            .args(extra)
            .env("ROS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn machined");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read machined stdout");
        let mut trust = String::new();
        reader.read_line(&mut trust).expect("read machined stdout");
        let trust_addr = trust
            .trim()
            .strip_prefix("machined: trust on ")
            .unwrap_or_default()
            .to_string();
        let addr = line
            .trim()
            .strip_prefix("machined: listening on ")
            .unwrap_or_else(|| panic!("unexpected machined output {line:?}"))
            .to_string();
        Node {
            child,
            addr,
            trust_addr,
            dir,
        }
    }

    pub fn state_config(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("node/state/config.yaml")).ok()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub async fn insecure(&self) -> Client {
        client::connect(&self.addr, &Credentials::Insecure)
            .await
            .expect("insecure connect")
    }

    pub async fn as_role(&self, pki: &Pki, role: &str) -> Client {
        client::connect(&self.addr, &pki.creds(role))
            .await
            .unwrap_or_else(|e| panic!("connect as {role}: {e:#}"))
    }
}

impl Drop for Node {
    /// SIGTERM first, so machined stops its services (and they their children); SIGKILL if it
    /// has not exited within 15 s (its services then die with it: they have a parent-death
    /// signal).
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A generated cluster PKI with the control-plane config.
pub struct Pki {
    pub controlplane: String,
    pub worker: String,
    pub ca_crt: String,
    pub ca_key: String,
}

impl Pki {
    pub fn generate() -> Pki {
        Self::generate_for("https://127.0.0.1:6443")
    }

    /// With `endpoint` as cluster.controlPlane.endpoint.
    pub fn generate_for(endpoint: &str) -> Pki {
        let secrets = Secrets::generate().expect("secrets");
        let generated = generate(&GenOptions {
            cluster_name: "test".into(),
            endpoint: endpoint.into(),
            secrets,
            patches: vec![],
            patches_control_plane: vec![],
            patches_worker: vec![],
        })
        .expect("generate");
        let ca = &generated.control_plane.machine.ca;
        Pki {
            controlplane: generated.control_plane.to_yaml(),
            worker: generated.worker.to_yaml(),
            ca_crt: ca.crt_pem().expect("ca crt"),
            ca_key: ca.key_pem().expect("ca key"),
        }
    }

    /// Client credentials with organisation `org` (e.g. "os:reader").
    pub fn creds(&self, org: &str) -> Credentials {
        let leaf = ros_config::pki::issue_client_cert(&self.ca_crt, &self.ca_key, "test", &[org])
            .expect("client cert");
        Credentials::Mutual {
            ca_pem: self.ca_crt.clone(),
            crt_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        }
    }

    /// The control-plane config with `edit` applied to its JSON view.
    pub fn config_with(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut doc: Value = serde_yaml_ng::from_str(&self.controlplane).expect("yaml");
        edit(&mut doc);
        serde_yaml_ng::to_string(&doc).expect("yaml")
    }

    pub fn with_hostname(&self, name: &str) -> String {
        self.config_with(|d| d["machine"]["network"] = serde_json::json!({"hostname": name}))
    }
}

/// Polls `check` until it returns Some (at most ~20 s, so a broken feature fails, not hangs).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// Applies a config insecurely (maintenance mode) and waits until the node is configured.
pub async fn configure(node: &Node, pki: &Pki, yaml: &str) {
    use ros_api::machine::ApplyConfigurationRequest;
    let reply = node
        .insecure()
        .await
        .apply_configuration(ApplyConfigurationRequest {
            data: yaml.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(reply.accepted, "rejected: {:?}", reply.validation_errors);
    let _ = pki;
}
