//! A stand-in for machined, for booting init alone in QEMU (never part of a real image).
//! First run: kills itself with SIGKILL, so init's restart shows. Second run: leaves an orphan for init
//! to reap, reports what it sees (read-only root, writable /var, hostname, env), then asks init
//! to power off over the control socket (unless the command line says `standin.stay`) and waits
//! for SIGTERM. `standin.stubborn` adds a child that ignores SIGTERM (init must SIGKILL it).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{SigHandler, Signal};

const MARKER: &str = "/run/ros/stand-in-ran";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // Its parent exits at once, so this process is re-parented to init.
        Some("--orphan") => {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        Some("--stubborn") => {
            // Ignores SIGTERM, so init's shutdown has to SIGKILL it.
            // SAFETY: setting a signal to SIG_IGN installs no handler code.
            unsafe { nix::sys::signal::signal(Signal::SIGTERM, SigHandler::SigIgn) }
                .expect("ignore SIGTERM");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        Some("--parent") => {
            leave_an_orphan();
            return;
        }
        _ => {}
    }
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    say(&format!("pid {} env {}", std::process::id(), env.join(" ")));
    // PID 1 blocks the signals it handles; the mask survives exec unless init clears it.
    // (SigIgn says nothing here: Rust's runtime ignores SIGPIPE in every Rust program.)
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines().filter(|l| l.starts_with("SigBlk")) {
        say(line);
    }
    if !Path::new(MARKER).exists() {
        std::fs::write(MARKER, b"1").expect("write the marker in /run");
        say("first run: killing myself with SIGKILL");
        nix::sys::signal::raise(Signal::SIGKILL).expect("raise SIGKILL");
    }
    let me = std::env::current_exe().expect("own path");
    let status = Command::new(me)
        .arg("--parent")
        .status()
        .expect("run --parent");
    say(&format!("left an orphan behind ({status})"));
    if cmdline_has("standin.stubborn") {
        let pid = start_stubborn_child();
        say(&format!("started pid {pid} that ignores SIGTERM"));
    }

    let root_ro = std::fs::write("/stand-in-probe", b"x").map_err(|e| e.raw_os_error());
    say(&format!("write to /: {root_ro:?} (30 = EROFS expected)"));
    let var_rw = std::fs::write("/var/stand-in-probe", b"x").is_ok();
    say(&format!("write to /var: {var_rw}"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    say(&format!("hostname {}", host.trim()));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        say(&format!("mount: {line}"));
    }
    let cmdline = std::fs::read_to_string("/run/ros/cmdline").unwrap_or_default();
    say(&format!("/run/ros/cmdline: {cmdline}"));

    if cmdline_has("standin.stay") {
        say("standin.stay: waiting for a signal");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let socket = std::env::var("ROS_INIT_SOCKET").unwrap_or("/run/ros/init.sock".into());
    let mut stream = UnixStream::connect(&socket).expect("connect to init");
    stream.write_all(b"poweroff\n").expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the reply");
    say(&format!("init answered {:?}", reply.trim()));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Left running on purpose: init's shutdown must deal with it.
#[allow(clippy::zombie_processes)]
fn start_stubborn_child() -> u32 {
    let me = std::env::current_exe().expect("own path");
    let child = Command::new(me)
        .arg("--stubborn")
        .spawn()
        .expect("spawn --stubborn");
    child.id()
}

fn cmdline_has(word: &str) -> bool {
    let cmdline = std::fs::read_to_string("/run/ros/cmdline").unwrap_or_default();
    cmdline.split_whitespace().any(|w| w == word)
}

/// Starts a child and exits without waiting for it, so the child is re-parented to init.
#[allow(clippy::zombie_processes)]
fn leave_an_orphan() {
    let me = std::env::current_exe().expect("own path");
    Command::new(me)
        .arg("--orphan")
        .spawn()
        .expect("spawn the orphan");
}

fn say(line: &str) {
    println!("stand-in machined: {line}");
}
