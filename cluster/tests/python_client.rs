//! The official Python `kubernetes` client (Debian package python3-kubernetes) against
//! `cluster server`: list, create, read, patch, delete and a watch.

mod kubectl_support;

use std::process::Command;

use kubectl_support::Server;

/// The Debian python3 (the package installs into its dist-packages).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn python_client_list_create_watch() {
    let probe = Command::new(PYTHON)
        .args(["-c", "import kubernetes"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs the Python kubernetes client: apt-get install python3-kubernetes ({probe:?})"
    );
    let s = Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let out = Command::new(PYTHON)
        .arg(script)
        .arg(&s.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "python client failed: {}\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}
