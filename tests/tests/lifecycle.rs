//! A node's life on its own disk, through the real rosctl: maintenance mode, apply-config
//! --insecure, configured (hostname, addresses, DHCP lease) over mTLS, logs and dmesg
//! streaming, init restarting a killed machined, the config surviving a reboot from the disk
//! (STATE is a partition now), and reset returning the node to maintenance mode.
//!
//! Time sync: the test runs an SNTP server on the host's 127.0.0.1 whose clock is
//! [`CLOCK_AHEAD_SECS`] ahead of the host's; the guest reaches it as 10.0.2.2 through QEMU's
//! user network, so its config names that as its time server. Only the guest's clock moves.
//!
//! Three boots share one private copy of the raw disk image:
//! 1. kernel + initramfs with `ros.debug`, the disk attached: STATE and EPHEMERAL are
//!    formatted; apply-config; checks; machined killed and restarted; `rosctl reboot`.
//! 2. the disk itself by UEFI and GRUB, no config offered: comes back configured; `rosctl reset`.
//! 3. kernel + initramfs with the disk: maintenance mode again.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::node::{DHCP_ADDRESS, LINK, STATIC_ADDRESS, disk_copy, node_files};
use e2e::rosctl::Rosctl;
use e2e::{Image, disk_images, image, phase_timeout, rosctl_bin, state_dir};
use imager::qemu::{BootSource, Vm, VmSpec, free_port};

const HOSTNAME: &str = "e2e-life";
/// How far the test's SNTP server runs ahead of the host clock (under the hour the
/// certificates are backdated by, so certificates issued after the step stay valid).
const CLOCK_AHEAD_SECS: i64 = 1800;
/// The host as QEMU user networking shows it to the guest.
const HOST_FROM_GUEST: &str = "10.0.2.2";

fn host_unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// An SNTP server (RFC 4330 server mode) on 127.0.0.1 answering with the host's time plus
/// `ahead_secs`; stopped when dropped.
struct SntpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl SntpServer {
    fn start(ahead_secs: i64) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("binding the SNTP server");
        let port = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // NTP era 0: seconds since 1900 and a 32-bit binary fraction.
            let stamp = |unix_nanos: i128| {
                let secs = (unix_nanos / 1_000_000_000 + 2_208_988_800) as u64;
                let frac = (((unix_nanos % 1_000_000_000) << 32) / 1_000_000_000) as u64;
                ((secs << 32) | frac).to_be_bytes()
            };
            let ahead = ahead_secs as i128 * 1_000_000_000;
            let mut answered = 0;
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if n < 48 || buf[0] & 7 != 3 {
                    continue;
                }
                let received = stamp(host_unix_nanos() + ahead);
                let mut reply = [0u8; 48];
                reply[0] = (4 << 3) | 4; // NTPv4, server mode
                reply[1] = 1; // stratum
                reply[12..16].copy_from_slice(b"TEST");
                reply[24..32].copy_from_slice(&buf[40..48]); // originate: the client's transmit
                reply[32..40].copy_from_slice(&received);
                reply[40..48].copy_from_slice(&stamp(host_unix_nanos() + ahead));
                if sock.send_to(&reply, from).is_ok() {
                    answered += 1;
                }
            }
            answered
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SntpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let answered = t.join().unwrap_or(0);
            eprintln!("e2e: the SNTP server answered {answered} requests");
        }
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time (`2026-11-26T01:02:03.5Z`).
fn unix_seconds(rfc3339: &str) -> Option<i64> {
    let (date, time) = rfc3339.trim().split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split(['+', '-']).next()?;
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

/// The YAML document of `rosctl get ... -o yaml` output whose id is `id`.
fn yaml_doc<'a>(out: &'a str, id: &str) -> Option<&'a str> {
    out.split("---")
        .find(|doc| doc.lines().any(|l| l.trim() == format!("id: {id}")))
}

/// Waits until TimeStatus says synced with the test's server, then checks the guest clock
/// (`rosctl time`) runs about [`CLOCK_AHEAD_SECS`] ahead of the host's.
fn assert_time_synced(ros: &Rosctl, server: &str, timeout: Duration) {
    let status = ros
        .wait_for(&["get", "timestatus", "-o", "yaml"], timeout, |out| {
            out.contains("synced: true")
        })
        .unwrap();
    assert!(
        status.contains(&format!("server: {server}")),
        "TimeStatus names another server:\n{status}"
    );
    let out = ros.ok(&["time"]).unwrap();
    let host_now = (host_unix_nanos() / 1_000_000_000) as i64;
    let node_time = out
        .split_whitespace()
        .find_map(unix_seconds)
        .unwrap_or_else(|| panic!("no node time in `rosctl time`:\n{out}"));
    let ahead = node_time - host_now;
    // The call itself takes a moment (TCG): the guest may read its clock a little before the
    // host reads its own.
    assert!(
        (ahead - CLOCK_AHEAD_SECS).abs() <= 60,
        "the guest clock is {ahead}s ahead of the host, expected about {CLOCK_AHEAD_SECS}s:\n{out}\n{status}"
    );
    assert!(
        out.contains("true"),
        "`rosctl time` does not say synced:\n{out}"
    );
}

/// A direct kernel boot with `disk` attached as the first virtio disk.
fn direct_with_disk(image: &Image, name: &str, disk: &Path, debug: bool, dir: &Path) -> (Vm, u16) {
    let accel = e2e::accel(image);
    let port = free_port().unwrap();
    let mut spec = VmSpec::single(name, &image.kernel, &image.initramfs, accel, port, dir);
    spec.disks = vec![disk.to_path_buf()];
    if debug {
        spec.cmdline_extra.push("ros.debug".into());
    }
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    (Vm::start(spec).expect("starting QEMU"), port)
}

/// The same disk booted by OVMF through its own GRUB (writes kept: no snapshot).
fn uefi_from_disk(image: &Image, name: &str, disk: &Path, dir: &Path) -> (Vm, u16) {
    let accel = e2e::accel(image);
    let port = free_port().unwrap();
    let mut spec = VmSpec::single(name, &image.kernel, &image.initramfs, accel, port, dir);
    spec.boot = BootSource::UefiDisk {
        image: disk.to_path_buf(),
        snapshot: false,
    };
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    (Vm::start(spec).expect("starting QEMU"), port)
}

/// Waits for init's clean shutdown after a reboot request, and QEMU's exit (-no-reboot).
fn wait_rebooted(vm: &mut Vm, timeout: Duration) {
    vm.wait_for_console("shutdown: reboot requested", timeout)
        .unwrap();
    let status = vm.wait_exit(timeout).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    let console = vm.console();
    let summary = console
        .lines()
        .find(|l| l.contains("shutdown:") && l.contains(" unmounted, "))
        .unwrap_or_else(|| panic!("no unmount summary:\n{}", vm.console_tail(60)));
    assert!(summary.contains(" 0 left as they were"), "{summary}");
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
#[ignore = "e2e tier: scripts/e2e"]
fn apply_reboot_reset_on_a_disk() {
    let image = image().expect("building the e2e image");
    let disks = disk_images(&image).expect("building the disk images");
    let rosctl_bin = rosctl_bin().unwrap();
    let work = state_dir("life");
    let disk = work.path().join("node.raw");
    disk_copy(&disks.raw, &disk).unwrap();
    let files = node_files(work.path(), HOSTNAME).unwrap();
    let config = files.config.display().to_string();
    // The node's time server: the SNTP server on the host, as the guest reaches it.
    let sntp = SntpServer::start(CLOCK_AHEAD_SECS);
    let time_server = format!("{HOST_FROM_GUEST}:{}", sntp.port);
    let mut node_config =
        ros_config::parse(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
    node_config.machine.time = Some(ros_config::TimeConfig {
        disabled: false,
        servers: vec![time_server.clone()],
    });
    std::fs::write(&files.config, node_config.to_yaml()).unwrap();

    // Boot 1: maintenance mode on a fresh disk.
    let dir1 = work.path().join("1");
    let (mut vm, port) = direct_with_disk(&image, "life1", &disk, true, &dir1);
    let timeout = phase_timeout(vm.spec().accel);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    vm.wait_for_console("no config: maintenance mode", timeout)
        .unwrap();
    let console = vm.console();
    for label in ["STATE", "EPHEMERAL"] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("disks: {label}: /dev/vda"))
                    && l.contains("formatted now")),
            "{label} was not formatted and mounted:\n{}",
            vm.console_tail(60)
        );
    }

    let applied = ros
        .ok_within(&["apply-config", "--insecure", "--file", &config], timeout)
        .unwrap();
    eprintln!("e2e: apply-config: {applied}");

    // Configured: mutual TLS with the generated admin rosconfig.
    let hostname = ros
        .wait_for(&["hostname"], timeout, |out| out.contains(HOSTNAME))
        .unwrap();
    assert!(hostname.contains(HOSTNAME), "{hostname}");
    let spec = ros.ok(&["get", "hostname", "-o", "yaml"]).unwrap();
    assert!(spec.contains(HOSTNAME), "{spec}");
    // The status is read from the kernel: wait for the controller to have applied it.
    let addresses = ros
        .wait_for(&["get", "addresses", "-o", "yaml"], timeout, |out| {
            out.contains(STATIC_ADDRESS)
        })
        .unwrap();
    assert!(
        addresses.contains(STATIC_ADDRESS) && addresses.contains(LINK),
        "{addresses}"
    );
    let mounts = ros.ok(&["mounts"]).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains("/system/state") && l.contains("ext4")),
        "STATE is not the ext4 partition:\n{mounts}"
    );
    // The DHCP lease from QEMU's user network, in the Addresses status (read from the
    // kernel) beside the static address.
    let dhcp_id = format!("{LINK}/{DHCP_ADDRESS}");
    let addresses = ros
        .wait_for(&["get", "addresses", "-o", "yaml"], timeout, |out| {
            yaml_doc(out, &dhcp_id).is_some()
        })
        .unwrap();
    let lease_doc = yaml_doc(&addresses, &dhcp_id).unwrap();
    assert!(lease_doc.contains("source: dhcp"), "{addresses}");
    let static_doc = yaml_doc(&addresses, &format!("{LINK}/{STATIC_ADDRESS}"))
        .unwrap_or_else(|| panic!("no static address in the status:\n{addresses}"));
    assert!(static_doc.contains("source: static"), "{addresses}");
    // The guest's clock follows the host's SNTP server.
    assert_time_synced(&ros, &time_server, timeout);
    // The lease as machined's log reports it (streamed).
    let lease = format!("bound {DHCP_ADDRESS}");
    let log = ros
        .stream_until(&["logs", "machined", "-f"], timeout, |lines| {
            lines.iter().any(|l| l.contains(&lease))
        })
        .unwrap();
    assert!(log.iter().any(|l| l.contains(&lease)), "{log:?}");
    let tail = ros.ok(&["logs", "machined", "--tail", "5"]).unwrap();
    assert!(
        tail.lines().count() >= 1 && tail.lines().count() <= 6,
        "{tail}"
    );
    // dmesg -f streams the kernel log.
    let dmesg = ros
        .stream_until(&["dmesg", "-f"], timeout, |lines| lines.len() >= 5)
        .unwrap();
    assert!(
        dmesg
            .iter()
            .any(|l| l.contains("Linux version") || l.contains("virtio")),
        "{dmesg:?}"
    );

    // ros.debug: an admin's `service machined restart` kills machined; init restarts it.
    let started_before = count(&vm.console(), "machined: started /sbin/machined");
    ros.ok(&["service", "machined", "restart"]).unwrap();
    vm.wait_for_console_where("machined killed by SIGKILL", timeout, |text| {
        text.lines()
            .any(|l| l.contains("machined (pid ") && l.contains("killed by signal SIGKILL"))
    })
    .unwrap();
    vm.wait_for_console_where("machined started again", timeout, |text| {
        count(text, "machined: started /sbin/machined") > started_before
    })
    .unwrap();
    // The new machined finds STATE already mounted and its config on it.
    let again = ros
        .wait_for(&["get", "hostname", "-o", "yaml"], timeout, |out| {
            out.contains(HOSTNAME)
        })
        .unwrap();
    assert!(again.contains(HOSTNAME));
    let console = vm.console();
    for (label, target) in [("STATE", "/system/state"), ("EPHEMERAL", "/var")] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("disks: {label}: /dev/vda"))
                    && l.contains(&format!("already mounted on {target}"))),
            "the restarted machined did not find {label} mounted:\n{}",
            vm.console_tail(60)
        );
    }

    ros.ok(&["reboot"]).unwrap();
    wait_rebooted(&mut vm, timeout);
    drop(vm);

    // Boot 2: the disk by UEFI, nothing offered by the platform: the config is on STATE.
    let dir2 = work.path().join("2");
    let (mut vm, port) = uefi_from_disk(&image, "life2", &disk, &dir2);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    let uefi_timeout = timeout * 2;
    vm.wait_for_console("loaded the config stored on STATE", uefi_timeout)
        .unwrap();
    let console = vm.console();
    assert!(
        console.contains("cmdline: platform=metal"),
        "{}",
        vm.console_tail(60)
    );
    assert!(
        !console.contains("formatted now"),
        "STATE was formatted again:\n{}",
        vm.console_tail(60)
    );
    let hostname = ros
        .wait_for(&["hostname"], timeout, |out| out.contains(HOSTNAME))
        .unwrap();
    assert!(hostname.contains(HOSTNAME));
    let addresses = ros
        .wait_for(&["get", "addresses", "-o", "yaml"], timeout, |out| {
            out.contains(STATIC_ADDRESS)
        })
        .unwrap();
    assert!(addresses.contains(STATIC_ADDRESS), "{addresses}");
    // The firmware clock started at the host's time again; the stored config syncs it.
    assert_time_synced(&ros, &time_server, timeout);

    ros.ok(&["reset"]).unwrap();
    wait_rebooted(&mut vm, timeout);
    drop(vm);

    // Boot 3: after reset the disk holds no config: maintenance mode, mTLS refused.
    let dir3 = work.path().join("3");
    let (mut vm, port) = direct_with_disk(&image, "life3", &disk, false, &dir3);
    let ros = Rosctl::new(&rosctl_bin, &files.rosconfig, port);
    vm.wait_for_console("no config: maintenance mode", timeout)
        .unwrap();
    let console = vm.console();
    assert!(
        !console.contains("loaded the config stored on STATE"),
        "{}",
        vm.console_tail(60)
    );
    assert!(
        !console.contains("formatted now"),
        "{}",
        vm.console_tail(60)
    );
    let refused = ros.run(&["hostname"], e2e::rosctl::CALL_TIMEOUT).unwrap();
    assert!(
        !refused.status.success(),
        "a maintenance-mode node answered an mTLS call"
    );
    let disks_out = ros.ok(&["disks", "--insecure"]).unwrap();
    assert!(disks_out.contains("vda"), "{disks_out}");
}
