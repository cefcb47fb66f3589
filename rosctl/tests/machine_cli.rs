//! Drives a dev-mode machined with the real `rosctl` binary: maintenance mode, apply-config,
//! mutual TLS from the generated rosconfig, per-node results, tables and errors.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The debug machined next to rosctl. `cargo nextest run --workspace` has just built it (the
/// machined package has integration tests, so its binary is part of that build), and it is
/// used as it is. Only when it is missing, or older than machined's sources (this test run
/// alone after an edit), is it built here: `cargo build -p machined` selects other features
/// of the shared dependencies than the workspace's test build, so it recompiles most of them.
fn machined_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = Path::new(env!("CARGO_BIN_EXE_rosctl")).with_file_name("machined");
            if is_stale(&bin) {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-q", "-p", "machined", "--bin", "machined"])
                    .status()
                    .expect("running cargo build -p machined");
                assert!(status.success(), "cargo build -p machined failed");
            }
            assert!(
                bin.exists(),
                "machined binary not found at {}",
                bin.display()
            );
            bin
        })
        .clone()
}

/// Missing, or older than a source file of machined or of the workspace crates it uses.
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    ["machined", "api", "config", "Cargo.lock"]
        .iter()
        .any(|p| newer_than(&workspace.join(p), built))
}

fn newer_than(path: &Path, time: std::time::SystemTime) -> bool {
    let Ok(meta) = path.symlink_metadata() else {
        return false;
    };
    if meta.is_dir() {
        let name = path.file_name().unwrap_or_default();
        if name == "target" || name == "tests" {
            return false;
        }
        return std::fs::read_dir(path)
            .map(|entries| entries.flatten().any(|e| newer_than(&e.path(), time)))
            .unwrap_or(true);
    }
    meta.modified().map(|m| m > time).unwrap_or(true)
}

/// A dev-mode machined on a random port; killed by PID on drop.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn start(state: &Path) -> Node {
        let mut child = Command::new(machined_bin())
            .arg("--state-dir")
            .arg(state)
            .args(["--listen", "127.0.0.1:0", "--node-name", "cli-node"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn machined");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("machined: listening on ")
            .expect("machined address line")
            .to_string();
        Node { child, addr }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let cli = Cli {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = cli.run(&["gen", "config", "demo", "https://127.0.0.1:6443", "-o", "."]);
        assert!(
            out.status.success(),
            "gen config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rosctl"))
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("ROSCONFIG", self.path("rosconfig"))
            .output()
            .expect("running rosctl")
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rosctl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn maintenance_apply_then_mutual_tls_commands() {
    let cli = Cli::new();
    let node = Node::start(&cli.path("node"));
    let n = node.addr.as_str();

    let v = cli.ok(&["-n", n, "version", "--insecure"]);
    assert!(v.contains("cli-node") && v.contains("maintenance"), "{v}");

    // With the rosconfig's client certificate a maintenance node is not trusted (self-signed).
    let refused = cli.run(&["-n", n, "services"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains(&format!("node {n}:")));

    let applied = cli.ok(&[
        "apply-config",
        "--insecure",
        "-n",
        n,
        "--file",
        "controlplane.yaml",
    ]);
    assert!(
        applied.contains("stored on STATE and applied without a reboot"),
        "{applied}"
    );
    assert!(cli.path("node/state/config.yaml").exists());

    let v = cli.ok(&["-n", n, "version"]);
    assert!(v.contains("configured"), "{v}");
    let services = cli.ok(&["-n", n, "services"]);
    assert!(
        services.contains("NODE") && services.contains("SERVICE"),
        "{services}"
    );
    for cmd in [
        "memory",
        "mounts",
        "processes",
        "disks",
        "netdev",
        "time",
        "hostname",
        "loadavg",
    ] {
        let out = cli.ok(&["-n", n, cmd]);
        assert!(
            out.starts_with(" NODE") || out.starts_with("NODE"),
            "{cmd}: {out}"
        );
    }
    let logs = cli.ok(&["-n", n, "logs", "machined", "--tail", "50"]);
    assert!(logs.contains("config applied"), "{logs}");

    // get: table, json and yaml.
    let table = cli.ok(&["-n", n, "get", "machinestatus"]);
    assert!(
        table.contains("MachineStatus") && table.contains("configured"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["-n", n, "get", "ms", "machine", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["mode"], "configured");
    assert_eq!(json["type"], "MachineStatus");
    let yaml = cli.ok(&["-n", n, "get", "mc", "-o", "yaml"]);
    assert!(
        yaml.contains("type: MachineConfig") || yaml.contains("type: controlplane"),
        "{yaml}"
    );

    // A dry run prints the diff and changes nothing.
    let before = std::fs::read_to_string(cli.path("node/state/config.yaml")).unwrap();
    let mut doc: serde_json::Value = serde_yaml_ng::from_str(&before).unwrap();
    doc["machine"]["network"] = serde_json::json!({"hostname": "renamed"});
    std::fs::write(
        cli.path("renamed.yaml"),
        serde_yaml_ng::to_string(&doc).unwrap(),
    )
    .unwrap();
    let dry = cli.ok(&[
        "-n",
        n,
        "apply-config",
        "--file",
        "renamed.yaml",
        "--dry-run",
    ]);
    assert!(
        dry.contains("+ machine.network.hostname: \"renamed\""),
        "{dry}"
    );
    assert_eq!(
        std::fs::read_to_string(cli.path("node/state/config.yaml")).unwrap(),
        before
    );

    // patch and edit read the running config, change it and apply it.
    let patched = cli.ok(&[
        "-n",
        n,
        "patch",
        "machineconfig",
        "--patch",
        r#"{"machine":{"network":{"hostname":"patched"}}}"#,
    ]);
    assert!(
        patched.contains("+ machine.network.hostname: \"patched\""),
        "{patched}"
    );
    assert!(cli.ok(&["-n", n, "hostname"]).contains("patched"));
    let editor = cli.path("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/hostname: patched/hostname: edited/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rosctl"))
        .args(["-n", n, "edit", "mc"])
        .current_dir(cli.dir.path())
        .env("HOME", cli.dir.path())
        .env("ROSCONFIG", cli.path("rosconfig"))
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("~ machine.network.hostname: \"patched\" -> \"edited\""),
        "{stdout}"
    );

    // config new: a reader identity for a day, signed by the node (it holds the CA key).
    let made = cli.run(&[
        "-n",
        n,
        "config",
        "new",
        "reader.rosconfig",
        "--roles",
        "os:reader",
        "--crt-ttl",
        "24h",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let reader = cli.path("reader.rosconfig");
    let reader = reader.to_str().unwrap();
    let info = cli.ok(&["--rosconfig", reader, "config", "info"]);
    assert!(info.contains("Roles:               os:reader"), "{info}");
    assert!(info.contains("(0 days from now)"), "{info}");
    assert!(
        cli.ok(&["--rosconfig", reader, "-n", n, "hostname"])
            .contains("edited")
    );
    let denied = cli.run(&["--rosconfig", reader, "-n", n, "reboot"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    // Only an admin may mint identities, and only real roles and lifetimes.
    let escalate = cli.run(&[
        "--rosconfig",
        reader,
        "-n",
        n,
        "config",
        "new",
        "admin2",
        "--roles",
        "os:admin",
    ]);
    assert!(!escalate.status.success());
    assert!(String::from_utf8_lossy(&escalate.stderr).contains("PermissionDenied"));
    for (args, want) in [
        (
            vec!["config", "new", "x", "--crt-ttl", "1y"],
            "invalid value '1y' for '--crt-ttl <DURATION>'",
        ),
        (
            vec!["config", "new", "x", "--roles", "os:root"],
            "roles: \"os:root\" is not a role",
        ),
        (
            vec!["config", "new", "x", "--crt-ttl", "876000h"],
            "crt_ttl: 876000h would outlive the machine CA",
        ),
        (
            vec!["config", "new", "reader.rosconfig"],
            "exists: pass --force",
        ),
    ] {
        let mut full = vec!["-n", n];
        full.extend(args);
        let out = cli.run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{full:?}: {err}"
        );
    }
    // The default is one year, as the admin certificate of `gen config`.
    cli.ok(&["-n", n, "config", "new", "admin.rosconfig"]);
    let admin = cli.path("admin.rosconfig");
    let info = cli.ok(&["--rosconfig", admin.to_str().unwrap(), "config", "info"]);
    assert!(
        info.contains("Roles:               os:admin") && info.contains("(364 days from now)"),
        "{info}"
    );
    let generated = cli.ok(&["config", "info"]);
    assert!(generated.contains("(364 days from now)"), "{generated}");

    // reboot --wait returns once the node answers again (dev mode simulates the boot).
    let rebooted = cli.ok(&["-n", n, "reboot", "--wait"]);
    assert!(rebooted.contains("back (configured)"), "{rebooted}");
    assert!(
        cli.ok(&["-n", n, "hostname"]).contains("edited"),
        "the stored config survives the reboot"
    );
}

#[test]
fn rejected_config_lists_errors_and_one_failing_node_does_not_hide_others() {
    let cli = Cli::new();
    let node = Node::start(&cli.path("node"));
    let n = node.addr.as_str();
    cli.ok(&[
        "apply-config",
        "--insecure",
        "-n",
        n,
        "--file",
        "controlplane.yaml",
    ]);

    std::fs::write(
        cli.path("bad.yaml"),
        "version: v1alpha1\nmachine:\n  type: bogus\n  extra: 1\ncluster: {}\n",
    )
    .unwrap();
    let bad = cli.run(&["-n", n, "apply-config", "--file", "bad.yaml"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("config rejected, nothing changed"), "{err}");
    assert!(
        err.contains("machine.type") && err.contains("machine.extra"),
        "{err}"
    );

    // Port 1 on loopback refuses connections: that node fails, the real one still answers.
    let both = format!("{n},127.0.0.1:1");
    let out = cli.run(&["-n", &both, "version"]);
    assert!(
        !out.status.success(),
        "a failed node makes the exit status non-zero"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("configured"),
        "the working node's answer is shown: {stdout}"
    );
    assert!(
        stderr.contains("node 127.0.0.1:1:"),
        "the failing node is named: {stderr}"
    );

    // Through an endpoint: -e A -n B,A reaches B via A (A forwards with the caller's role).
    let other = Node::start(&cli.path("node2"));
    let m = other.addr.as_str();
    cli.ok(&[
        "apply-config",
        "--insecure",
        "-n",
        m,
        "--file",
        "controlplane.yaml",
    ]);
    cli.ok(&[
        "-n",
        m,
        "patch",
        "mc",
        "--patch",
        r#"{"machine":{"network":{"hostname":"second"}}}"#,
    ]);
    let nodes = format!("{m},{n}");
    let both = cli.ok(&["-e", n, "-n", &nodes, "hostname"]);
    assert!(
        both.contains("second") && both.contains("cli-node"),
        "{both}"
    );
}
