//! For node agent tests: a private containerd (own root, state, socket; on drop its tasks,
//! shims, runc state and mounts are removed and it is killed by PID), a small OCI image built
//! from Debian's static busybox and imported into it, and the `cluster agent` process.
//!
//! Public API (kept additive): `Containerd`, `Agent`, `build_image`, `wait_for`, `IMAGE`,
//! `NAMESPACE`, `cleanup::*`. For one node end to end (server + containerd + agent with
//! kubectl helpers) a test also declares the harness, which needs `kubectl_support` at the
//! crate root:
//!
//! ```ignore
//! mod agent_support;
//! #[path = "agent_support/harness.rs"]
//! mod agent_harness;
//! #[path = "kubectl_support/mod.rs"]
//! mod kubectl_support;
//! ```

#![allow(dead_code)]

pub mod cleanup;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NAMESPACE: &str = "k8s.io";
pub const IMAGE: &str = "docker.io/library/testbox:1";
const BUSYBOX: &str = "/bin/busybox";

fn need(tool: &str, package: &str) {
    assert!(
        Path::new(tool).exists(),
        "the agent tests need {tool} (Debian package {package})"
    );
}

pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        need("/usr/bin/containerd", "containerd");
        need("/usr/bin/ctr", "containerd");
        need("/usr/bin/containerd-shim-runc-v2", "containerd");
        need("/usr/sbin/runc", "runc");
        need(BUSYBOX, "busybox-static");
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let c = Containerd { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// Stops containerd (SIGKILL by PID) while the test goes on.
    pub fn kill_daemon(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .output()
            .expect("running ctr")
    }

    /// `ctr` output lines (e.g. `containers ls -q`).
    pub fn lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// Builds the test image (busybox with sh, sleep, echo, cat, env) as an OCI archive and
    /// imports it (unpacked for the overlayfs snapshotter) as [`IMAGE`].
    pub fn import_test_image(&self) {
        let archive = build_image(self.dir.path(), IMAGE);
        let out = self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            archive.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "ctr import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        // Shims outlive containerd: first ask containerd to remove every task...
        if matches!(self.child.try_wait(), Ok(None)) {
            let out = self.ctr(&["tasks", "ls", "-q"]);
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                let _ = self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", id]);
                for _ in 0..20 {
                    if self.ctr(&["tasks", "delete", id]).status.success() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        // ...then kill by PID whatever shim (and container) is left, containerd itself,
        // and detach the rootfs mounts below our dir, so the dir can go.
        let not_deleted = cleanup::runc_delete(&dir.join("state"));
        let (killed, stuck) = cleanup::kill_shims(&self.socket, &dir.join("state"));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let before = cleanup::mounts_under(&dir);
        let mounted = cleanup::unmount_under(&dir);
        if !killed.is_empty() || !before.is_empty() {
            eprintln!(
                "containerd guard {}: killed {} processes (shims and containers), detached {} mounts",
                dir.display(),
                killed.len(),
                before.len()
            );
        }
        if !stuck.is_empty() || !mounted.is_empty() || !not_deleted.is_empty() {
            eprintln!(
                "containerd guard {}: processes {stuck:?} would not die, mounts {mounted:?} stay, \
                 runc could not delete {not_deleted:?}; the dir stays",
                dir.display()
            );
            // Never delete files through a mount that is still there.
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
        } else if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("containerd guard: removing {}: {e}", dir.display());
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an OCI image layout tar for `name` under `dir`; returns its path.
pub fn build_image(dir: &Path, name: &str) -> PathBuf {
    let work = dir.join("image");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo", "cat", "env", "true", "false", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layer_path = work.join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&layer_path)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(st.success(), "tar of the layer failed");
    let layer = std::fs::read(&layer_path).unwrap();
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))
    .unwrap();
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = sha256_hex(&manifest);
    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&layer_digest), &layer).unwrap();
    std::fs::write(blobs.join(&config_digest), &config).unwrap();
    std::fs::write(blobs.join(&manifest_digest), &manifest).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let archive = work.join("image.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(st.success(), "tar of the image layout failed");
    archive
}

/// A `cluster agent` for node `name`; killed (SIGKILL, as a crash) on drop.
pub struct Agent {
    child: Child,
    pub log_path: PathBuf,
}

impl Agent {
    pub fn start(kubeconfig: &Path, containerd: &Containerd, name: &str, root_dir: &Path) -> Agent {
        Agent::start_with(kubeconfig, containerd, name, root_dir, &[])
    }

    /// Like [`Agent::start`], with more command-line arguments.
    pub fn start_with(
        kubeconfig: &Path,
        containerd: &Containerd,
        name: &str,
        root_dir: &Path,
        extra: &[&str],
    ) -> Agent {
        let log_path = root_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cluster"))
            .arg("agent")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--node-name", name, "--node-ip", "127.0.0.1"])
            .arg("--containerd-socket")
            .arg(&containerd.socket)
            .arg("--root-dir")
            .arg(root_dir)
            .args(["--crash-backoff-seconds", "1", "--node-label", "test=agent"])
            .args(["--kubelet-port", "0", "--image-pull-backoff-seconds", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting cluster agent");
        Agent { child, log_path }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it returns `Some`; panics with `what` and `context()`
/// after 60 s.
pub fn wait_for<T>(
    what: &str,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
