//! One QEMU process: started from a [`VmSpec`], killed by PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::accel::Accel;
use super::console;
use super::qmp::Qmp;
use super::{BASE_CMDLINE, FW_CFG_CONFIG, MACHINE_API_PORT};

/// A TCP port on 127.0.0.1 forwarded to a guest port (QEMU user networking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

/// What the VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// QEMU loads kernel + initramfs itself, with our command line (the fast path).
    Direct { kernel: PathBuf, initramfs: PathBuf },
    /// UEFI firmware (OVMF) boots a raw or qcow2 disk image through its GRUB.
    /// With `snapshot`, the guest's writes are discarded when QEMU exits.
    UefiDisk { image: PathBuf, snapshot: bool },
    /// A CD-ROM image, booted by SeaBIOS (`uefi: false`) or OVMF.
    Cdrom { iso: PathBuf, uefi: bool },
}

/// A NIC on a tap in network namespace `netns` (see [`super::netns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNic {
    pub netns: String,
    pub ifname: String,
    pub mac: String,
}

/// The descriptor number the first tap gets in QEMU; the others follow.
pub const FIRST_TAP_FD: i32 = 3;

/// Debian's OVMF build (package ovmf).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub boot: BootSource,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Added after [`BASE_CMDLINE`] (e.g. `ros.debug`, `ros.config=...`); direct boots only,
    /// a disk's command line is in its GRUB menu.
    pub cmdline_extra: Vec<String>,
    /// Given to the guest as fw_cfg `opt/ros/config`.
    pub machine_config: Option<PathBuf>,
    pub forwards: Vec<Forward>,
    /// NICs on taps in a network namespace (after the user-mode NIC, so the guest sees them
    /// as eth1, eth2, ...).
    pub taps: Vec<TapNic>,
    /// Raw disk images attached as virtio-blk drives, in order.
    pub disks: Vec<PathBuf>,
    /// Holds console.log, qemu.log and the QMP socket (keep it short: socket paths are
    /// limited to 107 bytes).
    pub state_dir: PathBuf,
}

impl VmSpec {
    /// A single node with the machine API forwarded from `api_port` on 127.0.0.1.
    pub fn single(
        name: &str,
        kernel: &Path,
        initramfs: &Path,
        accel: Accel,
        api_port: u16,
        state_dir: &Path,
    ) -> Self {
        Self {
            name: name.to_string(),
            boot: BootSource::Direct {
                kernel: kernel.to_path_buf(),
                initramfs: initramfs.to_path_buf(),
            },
            accel,
            memory_mib: 1024,
            cpus: 2,
            cmdline_extra: Vec::new(),
            machine_config: None,
            forwards: vec![Forward {
                host: api_port,
                guest: MACHINE_API_PORT,
            }],
            taps: Vec::new(),
            disks: Vec::new(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    pub fn console_path(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }

    pub fn qmp_path(&self) -> PathBuf {
        self.state_dir.join("qmp.sock")
    }

    pub fn cmdline(&self) -> String {
        // panic=-1: a dying kernel reboots at once, which -no-reboot turns into QEMU exiting,
        // so a broken boot fails fast instead of hanging until a timeout.
        let mut parts: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
        parts.push("panic=-1".into());
        parts.extend(self.cmdline_extra.iter().cloned());
        parts.join(" ")
    }

    /// The full QEMU argument list.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["-name".into(), self.name.clone()];
        args.extend(self.accel.qemu_args());
        args.extend([
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
        ]);
        args.extend(["-nographic", "-no-reboot", "-monitor", "none"].map(String::from));
        args.push("-chardev".into());
        args.push(format!(
            "file,id=console0,path={}",
            self.console_path().display()
        ));
        args.extend(["-serial".into(), "chardev:console0".into()]);
        args.push("-qmp".into());
        args.push(format!(
            "unix:{},server=on,wait=off",
            self.qmp_path().display()
        ));
        match &self.boot {
            BootSource::Direct { kernel, initramfs } => {
                args.extend(["-kernel".into(), kernel.display().to_string()]);
                args.extend(["-initrd".into(), initramfs.display().to_string()]);
                args.extend(["-append".into(), self.cmdline()]);
            }
            BootSource::UefiDisk { image, snapshot } => {
                let format = if image.extension().is_some_and(|e| e == "qcow2") {
                    "qcow2"
                } else {
                    "raw"
                };
                args.extend(["-bios".into(), OVMF.into(), "-drive".into()]);
                args.push(format!(
                    "if=virtio,format={format},file={}{}",
                    image.display(),
                    if *snapshot { ",snapshot=on" } else { "" }
                ));
            }
            BootSource::Cdrom { iso, uefi } => {
                if *uefi {
                    args.extend(["-bios".into(), OVMF.into()]);
                }
                args.extend([
                    "-cdrom".into(),
                    iso.display().to_string(),
                    "-boot".into(),
                    "d".into(),
                ]);
            }
        }
        let mut netdev = "user,id=net0".to_string();
        for f in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
        }
        args.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            "virtio-net-pci,netdev=net0,romfile=".into(),
        ]);
        for (index, tap) in self.taps.iter().enumerate() {
            let fd = FIRST_TAP_FD + index as i32;
            args.extend(["-netdev".into(), format!("tap,id=tap{index},fd={fd}")]);
            args.extend([
                "-device".into(),
                format!("virtio-net-pci,netdev=tap{index},mac={},romfile=", tap.mac),
            ]);
        }
        args.extend(["-device".into(), "virtio-rng-pci".into()]);
        if let Some(config) = &self.machine_config {
            args.push("-fw_cfg".into());
            args.push(format!("name={FW_CFG_CONFIG},file={}", config.display()));
        }
        for (index, disk) in self.disks.iter().enumerate() {
            args.push("-drive".into());
            args.push(format!(
                "if=virtio,format=raw,file={},index={index}",
                disk.display()
            ));
        }
        args
    }
}

/// Picks a free TCP port on 127.0.0.1 (free when asked; QEMU binds it soon after).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

pub struct Vm {
    spec: VmSpec,
    child: Child,
    exit: Option<ExitStatus>,
    qmp: Option<Qmp>,
}

impl Vm {
    pub fn start(spec: VmSpec) -> Result<Self> {
        let child = super::launch::spawn(&spec, false)?;
        let mut vm = Self {
            spec,
            child,
            exit: None,
            qmp: None,
        };
        vm.wait_for_qmp_socket()?;
        Ok(vm)
    }

    fn wait_for_qmp_socket(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spec.qmp_path().exists() {
            if let Some(status) = self.try_exit()? {
                bail!("QEMU exited at start ({status}): {}", self.qemu_log());
            }
            if Instant::now() > deadline {
                bail!("QEMU made no QMP socket within 20 s: {}", self.qemu_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn console(&self) -> String {
        console::read(&self.spec.console_path())
    }

    pub fn console_tail(&self, lines: usize) -> String {
        console::tail(&self.console(), lines)
    }

    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(self.spec.state_dir.join("qemu.log")).unwrap_or_default()
    }

    fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("checking on QEMU")?;
        }
        Ok(self.exit)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// Waits until the console shows `needle`. Fails (with the console's tail) on timeout,
    /// when QEMU exits first, or when the guest kernel panics.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_for_console_where(needle, timeout, |text| text.contains(needle))
    }

    /// As [`Vm::wait_for_console`], with a predicate over the whole console text.
    pub fn wait_for_console_where(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if done(&text) {
                return Ok(());
            }
            if let Some(marker) = console::fatal_marker(&text) {
                bail!(
                    "VM {}: {marker} while waiting for {what:?}\n--- console tail ---\n{}",
                    self.spec.name,
                    console::tail(&text, 60)
                );
            }
            if let Some(status) = self.try_exit()? {
                bail!(
                    "VM {}: QEMU exited ({status}) while waiting for {what:?}\n--- console tail ---\n{}\n--- qemu log ---\n{}",
                    self.spec.name,
                    console::tail(&text, 60),
                    self.qemu_log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "VM {}: no {what:?} within {timeout:?}\n--- console tail ---\n{}",
                    self.spec.name,
                    console::tail(&text, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The QMP connection (made on first use).
    pub fn qmp(&mut self) -> Result<&mut Qmp> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.spec.qmp_path())?);
        }
        Ok(self.qmp.as_mut().expect("just set"))
    }

    /// Waits for QEMU to exit by itself; on timeout it is left running (Drop kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "VM {}: QEMU still running after {timeout:?}\n--- console tail ---\n{}",
                    self.spec.name,
                    self.console_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            self.child.kill().ok();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- VM {} console tail ({}) ---\n{}",
                self.spec.name,
                self.spec.console_path().display(),
                self.console_tail(80)
            );
        }
        self.qmp = None;
        self.kill();
        std::fs::remove_file(self.spec.qmp_path()).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_carry_the_contract() {
        let mut spec = VmSpec::single(
            "n1",
            Path::new("/k"),
            Path::new("/i"),
            Accel::Tcg,
            40000,
            Path::new("/tmp/x"),
        );
        spec.machine_config = Some("/tmp/cfg.yaml".into());
        spec.cmdline_extra.push("ros.debug".into());
        spec.taps.push(TapNic {
            netns: "ros-x".into(),
            ifname: "tap0".into(),
            mac: "52:54:00:05:00:02".into(),
        });
        let args = spec.qemu_args().join(" ");
        assert!(
            args.contains("-append console=ttyS0 ros.platform=qemu panic=-1 ros.debug"),
            "{args}"
        );
        assert!(
            args.contains("hostfwd=tcp:127.0.0.1:40000-:50000"),
            "{args}"
        );
        assert!(
            args.contains("-fw_cfg name=opt/ros/config,file=/tmp/cfg.yaml"),
            "{args}"
        );
        assert!(
            args.contains("-no-reboot") && args.contains("-accel tcg"),
            "{args}"
        );
        assert!(
            args.contains("-netdev tap,id=tap0,fd=3 -device virtio-net-pci,netdev=tap0,mac=52:54:00:05:00:02,romfile="),
            "{args}"
        );
        assert!(
            args.find("netdev=net0") < args.find("netdev=tap0"),
            "the user NIC comes first (eth0): {args}"
        );
        assert!(
            args.contains("-qmp unix:/tmp/x/qmp.sock,server=on,wait=off"),
            "{args}"
        );
    }
}
