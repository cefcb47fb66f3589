//! For pod network and service proxy tests: network namespaces the test makes (a "node"
//! namespace with an address on a dummy link), commands run inside them, and a
//! `cluster server` and `cluster agent --pod-network bridge --service-proxy` started inside
//! one. containerd stays in the host namespace (its socket is a file; pods get their own
//! namespaces). Nothing here touches the host's network namespace.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cluster::agent::network::netns;

use crate::agent_support::wait_for;

pub const KUBECTL: &str = "kubectl";
pub const BUSYBOX: &str = "/bin/busybox";

pub fn need(tool: &str, package: &str) {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    };
    assert!(found, "these tests need {tool} (Debian package {package})");
}

/// `program` to be run inside the network namespace at `ns` (only the network namespace
/// changes, so mounts the child makes stay visible to containerd).
pub fn command_in(ns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("opening {}: {e}", ns.display()));
    let mut c = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
    // is async-signal-safe, on a descriptor the closure owns; reading errno allocates nothing.
    unsafe {
        c.pre_exec(move || {
            // setns(2) only; the file stays open in the parent until the Command is dropped.
            if nix::libc::setns(file.as_raw_fd(), nix::libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Runs a command in `ns`; returns its output.
pub fn run_in(ns: &Path, program: &str, args: &[&str]) -> Output {
    command_in(ns, program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// HTTP GET of `url` (`http://IP:PORT/PATH`) from a thread inside `ns` (Debian's static
/// busybox wget crashes here, so the test speaks HTTP/1.0 itself): the body, trimmed, or
/// None on any failure.
pub fn http_get(ns: &Path, url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: std::net::SocketAddr = if host.contains(':') {
        host.parse().ok()?
    } else {
        format!("{host}:80").parse().ok()?
    };
    netns::run_in(Some(ns), move || {
        let t = Duration::from_secs(3);
        let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
        s.set_read_timeout(Some(t))?;
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no HTTP header"))?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        Ok(body.trim().to_string())
    })
    .ok()
}

/// A network namespace mounted at a file in a temporary directory; removed on drop.
pub struct Netns {
    pub path: PathBuf,
}

impl Netns {
    /// A new namespace with lo up and `address` (e.g. 10.99.0.1/24) on `eth0`, one end of a
    /// veth pair whose other end (`eth0p`) stays in the namespace (no dummy module needed).
    pub fn node(dir: &Path, name: &str, address: &str) -> Netns {
        need("ip", "iproute2");
        let path = dir.join(name);
        netns::create(&path).expect("creating a test network namespace (needs root)");
        let ns = Netns { path };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        ns.ip(&["addr", "add", address, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0p", "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns
    }

    /// A new namespace with only lo (up).
    pub fn bare(dir: &Path, name: &str) -> Netns {
        need("ip", "iproute2");
        let path = dir.join(name);
        netns::create(&path).expect("creating a test network namespace (needs root)");
        let ns = Netns { path };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Links two namespaces with a veth pair: `eth0` with `a_addr` here, `eth0` with
    /// `b_addr` in `other` (both up).
    pub fn link_to(&self, a_addr: &str, other: &Netns, b_addr: &str) {
        self.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        // `ip link set ... netns` takes a PID: that of a short-lived process in `other`.
        let mut holder = command_in(&other.path, "sleep")
            .arg("30")
            .spawn()
            .expect("running sleep");
        let moved = run_in(
            &self.path,
            "ip",
            &["link", "set", "eth0p", "netns", &holder.id().to_string()],
        );
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            moved.status.success(),
            "moving eth0p: {}",
            String::from_utf8_lossy(&moved.stderr)
        );
        other.ip(&["link", "set", "eth0p", "name", "eth0"]);
        self.ip(&["addr", "add", a_addr, "dev", "eth0"]);
        other.ip(&["addr", "add", b_addr, "dev", "eth0"]);
        self.ip(&["link", "set", "eth0", "up"]);
        other.ip(&["link", "set", "eth0", "up"]);
    }

    /// Runs `ip args` in the namespace; it must succeed. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_in(&self.path, "ip", args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = netns::remove(&self.path);
    }
}

/// Unmounts every namespace file left in `dir` (pods the test did not delete).
pub fn unmount_all(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = netns::remove(&e.path());
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 20 s) for the process to exit.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) touches no memory of ours. The child is reaped only by the waits
        // below, so until then its PID cannot belong to another process.
        unsafe {
            nix::libc::kill(self.child.id() as i32, nix::libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("process did not stop on SIGTERM:\n{}", self.log());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cluster <args>` inside `ns`, stderr to `log`.
pub fn spawn_cluster(ns: &Path, args: &[&str], log: PathBuf) -> Proc {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = command_in(ns, env!("CARGO_BIN_EXE_cluster"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("starting cluster");
    Proc { child, log }
}

/// A `cluster server` inside `ns` on 127.0.0.1:<random port>.
pub struct Server {
    pub proc: Proc,
    pub ns: PathBuf,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Server {
    pub fn start(ns: &Path, dir: &Path) -> Server {
        Server::start_on(ns, dir, "127.0.0.1:0")
    }

    /// A server listening on `listen` (an address of the namespace) inside `ns`.
    pub fn start_on(ns: &Path, dir: &Path, listen: &str) -> Server {
        need(KUBECTL, "kubectl");
        let data = dir.join("server");
        let proc = spawn_cluster(
            ns,
            &[
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                listen,
            ],
            dir.join("server.log"),
        );
        let s = Server {
            proc,
            ns: ns.to_path_buf(),
            dir: dir.to_path_buf(),
            kubeconfig: data.join("kubeconfig"),
        };
        wait_for(
            "the API server",
            || s.proc.log(),
            || {
                (s.kubeconfig.exists() && s.kubectl(&["get", "--raw", "/version"]).status.success())
                    .then_some(())
            },
        );
        s
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = command_in(&self.ns, KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(i) = input {
            stdin.write_all(i.as_bytes()).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get <args> -o json` (None when it fails, e.g. not found).
    pub fn get(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.kubectl(&[&["get"], args, &["-o", "json"]].concat());
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}
