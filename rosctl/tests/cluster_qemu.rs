//! `rosctl cluster create | show | destroy` with real QEMU VMs (TCG on CI) on a bridge in a
//! network namespace. Needs root (network namespaces, taps), qemu-system-x86 and iproute2;
//! the image is the e2e suite's (built once per checkout, or `$ROS_E2E_IMAGE`).
//!
//! One boot of a control plane and a worker serves every assertion.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let image = e2e::image().expect("building or finding the e2e image");
    let accel = e2e::accel(&image);
    let image_dir = image.kernel.parent().unwrap().to_path_buf();

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
            "--skip-bootstrap",
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
