//! The built binary, run on a development host, must refuse before touching anything.

use std::process::Command;

#[test]
fn the_binary_refuses_to_run_unless_it_is_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_init"))
        .output()
        .expect("run the init binary");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("init refuses to run"), "{stderr}");
    assert!(stderr.contains("not 1"), "{stderr}");
    assert!(out.stdout.is_empty());
}
