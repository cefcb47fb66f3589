//! Boot benchmark (not a test): image sizes, and the time from QEMU start to the machine API
//! being up, against a baseline busybox-init initramfs on the same kernel, measured in the
//! same run under the same accelerator. `cargo bench -p e2e --bench boot`
//! (`ROS_BENCH_RUNS=N`, default 3; `ROS_QEMU_ACCEL` as for the e2e tests).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use imager::cpio::{Archive, Node};
use imager::qemu::{Vm, VmSpec, free_port};
use imager::report::human;

const BUSYBOX: &str = "/bin/busybox";
const BASELINE_MARKER: &str = "BASELINE-READY";
const ROS_MARKER: &str = "machined: machine API on";

fn main() -> Result<()> {
    let runs: usize = std::env::var("ROS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let image = e2e::image()?;
    let accel = e2e::accel(&image);
    let baseline = baseline_initramfs(&e2e::scratch().join("bench"))?;

    println!("image sizes:");
    for (name, path) in [
        ("kernel", &image.kernel),
        ("initramfs", &image.initramfs),
        ("rootfs.sqsh", &image.rootfs),
    ] {
        println!("  {name:<12} {:>10}", human(std::fs::metadata(path)?.len()));
    }
    let disks = e2e::disk_images(&image)?;
    println!(
        "  {:<12} {:>10}",
        "ros.iso",
        human(std::fs::metadata(&disks.iso)?.len())
    );
    println!(
        "  {:<12} {:>10}  (baseline busybox initramfs)",
        "baseline",
        human(std::fs::metadata(&baseline)?.len())
    );

    println!(
        "boot to ready under {} ({runs} runs each, median):",
        accel.as_str()
    );
    let mut ros = Vec::new();
    let mut base = Vec::new();
    for run in 0..runs {
        base.push(time_boot(
            &image.kernel,
            &baseline,
            accel,
            BASELINE_MARKER,
            &format!("base{run}"),
        )?);
        ros.push(time_boot(
            &image.kernel,
            &image.initramfs,
            accel,
            ROS_MARKER,
            &format!("ros{run}"),
        )?);
    }
    let (ros, base) = (median(ros), median(base));
    println!(
        "  baseline (busybox init, echo)   {:>8.2} s",
        base.as_secs_f64()
    );
    println!(
        "  ros (machine API listening)     {:>8.2} s",
        ros.as_secs_f64()
    );
    println!(
        "  ratio ros / baseline            {:>8.2}",
        ros.as_secs_f64() / base.as_secs_f64()
    );
    Ok(())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Seconds from starting QEMU to `marker` on the serial console.
fn time_boot(
    kernel: &Path,
    initramfs: &Path,
    accel: imager::qemu::Accel,
    marker: &str,
    name: &str,
) -> Result<Duration> {
    let dir = e2e::state_dir(name);
    let spec = VmSpec::single(name, kernel, initramfs, accel, free_port()?, dir.path());
    let started = Instant::now();
    let mut vm = Vm::start(spec)?;
    loop {
        if vm.console().contains(marker) {
            return Ok(started.elapsed());
        }
        if !vm.is_running() {
            bail!(
                "{name}: QEMU exited before {marker:?}:\n{}",
                vm.console_tail(30)
            );
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "{name}: no {marker:?} within 300 s:\n{}",
                vm.console_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// busybox (static) as /init, whose inittab prints the marker and powers off.
fn baseline_initramfs(dir: &Path) -> Result<PathBuf> {
    let data = std::fs::read(BUSYBOX)
        .with_context(|| format!("{BUSYBOX}: install the Debian package busybox-static"))?;
    let info = imager::elf_deps::inspect(&data)?;
    if !info.is_static() {
        bail!("{BUSYBOX} is dynamically linked: install the Debian package busybox-static");
    }
    std::fs::create_dir_all(dir)?;
    let mut archive = Archive::new();
    archive.add(
        "dev/console",
        0o600,
        Node::CharDevice { major: 5, minor: 1 },
    )?;
    archive.add_bytes("bin/busybox", 0o755, data)?;
    archive.add("init", 0o777, Node::Symlink("bin/busybox".into()))?;
    archive.add_bytes(
        "etc/inittab",
        0o644,
        format!(
            "::sysinit:/bin/busybox echo {BASELINE_MARKER}\n::sysinit:/bin/busybox poweroff -f\n"
        )
        .into_bytes(),
    )?;
    for d in ["proc", "sys", "tmp"] {
        archive.add_dir(d, 0o755)?;
    }
    let out = dir.join("baseline-initramfs");
    imager::initramfs::write(&archive, &out, imager::epoch::DEFAULT_SOURCE_DATE_EPOCH, 9)?;
    Ok(out)
}
