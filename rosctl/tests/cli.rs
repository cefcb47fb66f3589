//! Runs the built `rosctl` binary: gen secrets/config, validate, config.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ENDPOINT: &str = "https://10.5.0.2:6443";

/// A scratch HOME, so `~/.ros/config` and `$ROSCONFIG` never touch the real ones.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, None)
    }

    fn run_env(&self, args: &[&str], rosconfig_env: Option<&Path>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rosctl"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("ROSCONFIG");
        if let Some(p) = rosconfig_env {
            cmd.env("ROSCONFIG", p);
        }
        cmd.output().expect("running rosctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rosctl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "rosctl {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn gen_config(&self, dir: &str, extra: &[&str]) {
        let out = self.path(dir);
        let mut args = vec!["gen", "config", "demo", ENDPOINT, "--output-dir"];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        self.ok(&args);
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn gen_config_writes_private_files_that_validate() {
    let env = Env::new();
    env.gen_config("out", &[]);
    for f in ["controlplane.yaml", "worker.yaml", "rosconfig"] {
        let p = env.path("out").join(f);
        assert_eq!(mode(&p), 0o600, "{f} must be owner-only");
    }
    for (f, role) in [
        ("controlplane.yaml", "controlplane"),
        ("worker.yaml", "worker"),
    ] {
        let p = env.path("out").join(f);
        let stdout = env.ok(&["validate", "--config", p.to_str().unwrap(), "--strict"]);
        assert!(stdout.contains(&format!("valid ({role})")), "{stdout}");
    }
    let rosconfig = read(&env.path("out/rosconfig"));
    assert!(rosconfig.starts_with("context: demo\n"), "{rosconfig}");
    assert!(rosconfig.contains("- 10.5.0.2"), "{rosconfig}");
}

#[test]
fn gen_config_refuses_to_overwrite_without_force() {
    let env = Env::new();
    fs::create_dir(env.path("out")).unwrap();
    fs::write(env.path("out/worker.yaml"), "keep me").unwrap();
    let err = env.fails(&["gen", "config", "demo", ENDPOINT, "-o", "out"]);
    assert!(
        err.contains("out/worker.yaml already exists; use --force to overwrite it"),
        "{err}"
    );
    // Nothing was written: the check comes before any file.
    assert!(!env.path("out/controlplane.yaml").exists());
    assert_eq!(read(&env.path("out/worker.yaml")), "keep me");

    env.ok(&["gen", "config", "demo", ENDPOINT, "-o", "out", "--force"]);
    assert!(read(&env.path("out/worker.yaml")).contains("type: worker"));

    env.ok(&["gen", "secrets", "-o", "s.yaml"]);
    let err = env.fails(&["gen", "secrets", "-o", "s.yaml"]);
    assert!(err.contains("s.yaml already exists; use --force"), "{err}");
}

#[test]
fn with_secrets_gives_the_same_secrets() {
    let env = Env::new();
    env.ok(&["gen", "secrets", "-o", "secrets.yaml"]);
    assert_eq!(mode(&env.path("secrets.yaml")), 0o600);
    env.gen_config("a", &["--with-secrets", "secrets.yaml"]);
    env.gen_config("b", &["--with-secrets", "secrets.yaml"]);
    env.gen_config("c", &[]);
    for f in ["controlplane.yaml", "worker.yaml"] {
        let (a, b, c) = (
            read(&env.path("a").join(f)),
            read(&env.path("b").join(f)),
            read(&env.path("c").join(f)),
        );
        assert_eq!(a, b, "{f} differs for the same secrets");
        assert_ne!(a, c, "{f} must differ for fresh secrets");
    }
    let ca_line = |d: &str| {
        read(&env.path(d).join("rosconfig"))
            .lines()
            .find(|l| l.trim_start().starts_with("ca:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(ca_line("a"), ca_line("b"));
    // A broken bundle is refused with the field named.
    fs::write(
        env.path("bad.yaml"),
        read(&env.path("secrets.yaml")).replace("bootstrap: ", "bootstrap: X"),
    )
    .unwrap();
    let err = env.fails(&[
        "gen",
        "config",
        "demo",
        ENDPOINT,
        "-o",
        "d",
        "--with-secrets",
        "bad.yaml",
    ]);
    assert!(err.contains("tokens.bootstrap: is not a token"), "{err}");
}

#[test]
fn patches_from_files_and_inline() {
    let env = Env::new();
    fs::write(
        env.path("net.yaml"),
        "machine:\n  network:\n    nameservers: [10.5.0.1]\n",
    )
    .unwrap();
    env.gen_config(
        "out",
        &[
            "--config-patch",
            "@net.yaml",
            "--config-patch-control-plane",
            "cluster:\n  allowSchedulingOnControlPlanes: true\n",
            "--config-patch-worker",
            r#"[{"op": "add", "path": "/machine/nodeLabels", "value": {"role": "edge"}}]"#,
        ],
    );
    let cp = read(&env.path("out/controlplane.yaml"));
    let w = read(&env.path("out/worker.yaml"));
    assert!(cp.contains("- 10.5.0.1") && w.contains("- 10.5.0.1"));
    assert!(cp.contains("allowSchedulingOnControlPlanes: true"));
    assert!(!w.contains("allowSchedulingOnControlPlanes"));
    assert!(w.contains("role: edge") && !cp.contains("role: edge"));

    let err = env.fails(&[
        "gen",
        "config",
        "demo",
        ENDPOINT,
        "-o",
        "bad",
        "--config-patch",
        "@net.yaml",
        "--config-patch-worker",
        "machine:\n  network:\n    interfaces:\n    - interface: eth0\n      addresses: [10.0.0.300/24]\n",
    ]);
    assert!(
        err.contains(
            "worker.yaml: patch #2 (inline): machine.network.interfaces[0].addresses[0]: \"10.0.0.300/24\" is not a valid CIDR"
        ),
        "{err}"
    );
    assert!(!env.path("bad/controlplane.yaml").exists());
}

#[test]
fn validate_accepts_examples_and_reports_invalid_ones() {
    let env = Env::new();
    let mut n = 0;
    for e in fs::read_dir(configs_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            env.ok(&["validate", "--config", p.to_str().unwrap(), "--strict"]);
            n += 1;
        }
    }
    assert!(n >= 5);
    let mut n = 0;
    for e in fs::read_dir(configs_dir().join("invalid")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let err = env.fails(&["validate", "--config", p.to_str().unwrap()]);
            for line in read(&p.with_extension("expected")).lines() {
                assert!(
                    err.contains(line),
                    "{}: missing {line:?} in\n{err}",
                    p.display()
                );
            }
            n += 1;
        }
    }
    assert!(n >= 10);
}

#[test]
fn strict_validation_fails_on_warnings() {
    let env = Env::new();
    env.gen_config("out", &[]);
    // A control-plane config relabelled as worker still carries CA keys: a warning.
    let cp = read(&env.path("out/controlplane.yaml")).replace("type: controlplane", "type: worker");
    fs::write(env.path("w.yaml"), cp).unwrap();
    let out = env.run(&["validate", "--config", "w.yaml"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: machine.ca.key: a worker does not need this CA's private key"),
        "{stderr}"
    );
    let err = env.fails(&["validate", "--config", "w.yaml", "--strict"]);
    assert!(err.contains("w.yaml: invalid (4 problems)"), "{err}");
}

#[test]
fn config_commands_manage_contexts() {
    let env = Env::new();
    env.gen_config("a", &[]);
    env.gen_config("b", &[]);
    let rc = env.path("a/rosconfig");
    let rcs = rc.to_str().unwrap();

    let table = env.ok(&["--rosconfig", rcs, "config", "contexts"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["CURRENT", "NAME", "ENDPOINTS", "NODES"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["*", "demo", "10.5.0.2"]
    );

    env.ok(&[
        "--rosconfig",
        rcs,
        "config",
        "endpoint",
        "10.5.0.3",
        "10.5.0.4",
    ]);
    env.ok(&["--rosconfig", rcs, "config", "node", "10.5.0.5"]);
    let info = env.ok(&["--rosconfig", rcs, "config", "info"]);
    assert!(info.contains("Current context:     demo"), "{info}");
    assert!(
        info.contains("Endpoints:           10.5.0.3, 10.5.0.4"),
        "{info}"
    );
    assert!(info.contains("Nodes:               10.5.0.5"), "{info}");
    assert!(info.contains("Roles:               os:admin"), "{info}");
    assert_eq!(mode(&rc), 0o600);

    // merge: the second "demo" is renamed and becomes current.
    let out = env.run(&["--rosconfig", rcs, "config", "merge", "b/rosconfig"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("renamed rosconfig context \"demo\" -> \"demo-1\"")
    );
    let table = env.ok(&["--rosconfig", rcs, "config", "contexts"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["*", "demo-1", "10.5.0.2"]),
        "{table}"
    );

    env.ok(&["--rosconfig", rcs, "config", "context", "demo"]);
    let err = env.fails(&["--rosconfig", rcs, "config", "context", "nope"]);
    assert!(
        err.contains("context \"nope\" not found") && err.contains("known: demo, demo-1"),
        "{err}"
    );
    // --context picks a context for one command without switching.
    env.ok(&[
        "--rosconfig",
        rcs,
        "--context",
        "demo-1",
        "config",
        "node",
        "10.9.9.9",
    ]);
    let info = env.ok(&["--rosconfig", rcs, "config", "info"]);
    assert!(info.contains("Current context:     demo\n"), "{info}");
    let info = env.ok(&["--rosconfig", rcs, "--context", "demo-1", "config", "info"]);
    assert!(info.contains("Nodes:               10.9.9.9"), "{info}");
}

#[test]
fn rosconfig_is_found_through_env_then_home() {
    let env = Env::new();
    env.gen_config("a", &[]);
    // $ROSCONFIG
    let out = env.run_env(&["config", "info"], Some(&env.path("a/rosconfig")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ~/.ros/config: missing at first, then created by merge.
    let err = env.fails(&["config", "contexts"]);
    assert!(err.contains(".ros/config does not exist"), "{err}");
    env.ok(&["config", "merge", "a/rosconfig"]);
    assert!(env.path(".ros/config").exists());
    assert_eq!(mode(&env.path(".ros/config")), 0o600);
    let table = env.ok(&["config", "contexts"]);
    assert!(table.contains("demo"), "{table}");
}

#[test]
fn completion_scripts_name_the_subcommands() {
    let t = Env::new();
    let bash = t.ok(&["completion", "bash"]);
    for sub in ["apply-config", "bootstrap", "completion", "get"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}:\n{bash}");
    }
    assert!(
        bash.contains("complete -F"),
        "not a bash completion script:\n{bash}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = t.ok(&["completion", shell]);
        assert!(
            script.contains("apply-config"),
            "{shell} completion lacks apply-config"
        );
    }
    let err = t.fails(&["completion", "tcsh"]);
    assert!(err.contains("tcsh"), "unknown shell is not named: {err}");
}
