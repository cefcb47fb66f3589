//! Starting `cluster server` for a test and running the real kubectl against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Found on PATH (scripts/lib.sh installs upstream's binary where Debian has none).
pub const KUBECTL: &str = "kubectl";

/// A `cluster server` on 127.0.0.1:<random port> with a temporary data dir; killed on drop.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// A server without the in-process scheduler and controllers (the API alone).
    pub fn start_without_controllers() -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), &["--disable-controllers"])
    }

    /// A server without controllers, started with extra `cluster server` flags.
    pub fn start_with_args(extra: &[&str]) -> Server {
        let mut args = vec!["--disable-controllers"];
        args.extend_from_slice(extra);
        Server::start_in(tempfile::tempdir().unwrap(), &args)
    }

    /// Like [`Server::restart`], keeping the given extra flags.
    pub fn restart_with_args(self, extra: &[&str]) -> Server {
        let mut old = self;
        let _ = old.child.kill();
        let _ = old.child.wait();
        let _ = std::fs::remove_file(&old.kubeconfig);
        let dir = std::mem::replace(&mut old.dir, tempfile::tempdir().unwrap());
        drop(old);
        Server::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        assert!(
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(KUBECTL).exists())),
            "these tests need the real kubectl on PATH (scripts/test installs it)"
        );
        let data = dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cluster"))
            .args(["server", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting cluster server");
        let mut s = Server {
            child,
            kubeconfig: data.join("kubeconfig"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if s.kubeconfig.exists() && s.run(&["get", "--raw", "/version"]).status.success() {
                return s;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("cluster server exited with {status}: {}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "cluster server did not come up: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(&self.kubeconfig, args)
            .output()
            .expect("running kubectl")
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(&self.kubeconfig, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl with `input` on stdin; returns its raw output, whatever the outcome.
    pub fn run_stdin_pub(&self, args: &[&str], input: &str) -> Output {
        self.run_stdin(args, input)
    }

    fn check(&self, args: &[&str], out: Output, want_ok: bool) -> String {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() != want_ok {
            panic!(
                "kubectl {args:?}: expected {}, got {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
                if want_ok { "success" } else { "failure" },
                out.status,
                self.log()
            );
        }
        if want_ok { stdout } else { stderr }
    }

    /// Runs kubectl, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.check(args, self.run(args), true)
    }

    pub fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        self.check(args, self.run_stdin(args, input), true)
    }

    /// Runs kubectl, which must fail; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        self.check(args, self.run(args), false)
    }

    pub fn fail_stdin(&self, args: &[&str], input: &str) -> String {
        self.check(args, self.run_stdin(args, input), false)
    }

    pub fn fail_with_kubeconfig(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let out = self.command(kubeconfig, args).output().unwrap();
        self.check(args, out, false)
    }

    /// Starts a long-running kubectl (a watch); its stdout lines arrive on a channel.
    pub fn spawn(&self, args: &[&str]) -> Streaming {
        let mut child = self
            .command(&self.kubeconfig, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn kubeconfig_value(&self) -> serde_json::Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(&self.kubeconfig).unwrap()).unwrap()
    }

    /// A kubeconfig with the cluster's CA but no client certificate.
    /// Stops the server and starts it again on the same data dir (and a new port).
    pub fn restart(self) -> Server {
        let mut old = self;
        let _ = old.child.kill();
        let _ = old.child.wait();
        let _ = std::fs::remove_file(&old.kubeconfig);
        let dir = std::mem::replace(&mut old.dir, tempfile::tempdir().unwrap());
        drop(old);
        Server::start_in(dir, &[])
    }

    pub fn kubeconfig_without_user(&self) -> PathBuf {
        let mut k = self.kubeconfig_value();
        // (With no credentials at all kubectl would prompt for a password.)
        k["users"][0]["user"] = serde_json::json!({"token": "not-a-known-token"});
        let path = self.dir.path().join("anonymous.kubeconfig");
        std::fs::write(&path, serde_yaml_ng::to_string(&k).unwrap()).unwrap();
        path
    }

    /// A kubeconfig that authenticates with a bearer `token`.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let mut k = self.kubeconfig_value();
        k["users"][0]["user"] = serde_json::json!({"token": token});
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, serde_yaml_ng::to_string(&k).unwrap()).unwrap();
        path
    }

    /// Runs kubectl with another kubeconfig; it must succeed. Returns stdout.
    pub fn ok_with_kubeconfig(&self, kubeconfig: &Path, args: &[&str]) -> String {
        let out = self.command(kubeconfig, args).output().unwrap();
        self.check(args, out, true)
    }

    /// A kubeconfig for `user` in `groups`, with a certificate from the cluster CA.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        use base64::Engine;
        let pki_dir = self.dir.path().join("data/pki");
        let pki = cluster::apiserver::pki::load_or_create(&pki_dir, &[]).unwrap();
        let (crt, key) = cluster::apiserver::pki::issue_client_with(&pki, user, groups).unwrap();
        let mut k = self.kubeconfig_value();
        let b64 = base64::engine::general_purpose::STANDARD;
        k["users"][0]["user"] = serde_json::json!({"client-certificate-data": b64.encode(crt), "client-key-data": b64.encode(key)});
        // No colons in the file name: KUBECONFIG is a colon-separated list of files.
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        std::fs::write(&path, serde_yaml_ng::to_string(&k).unwrap()).unwrap();
        path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running kubectl whose output is read line by line; killed on drop.
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Streaming {
    /// Waits (at most 30 s, so a broken server fails the test instead of hanging it) for a
    /// line containing `needle`; returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Deployment manifest with one container named `app` and an env var.
pub fn yaml_deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: {image}
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: test
"
    )
}
