//! Every effect PID 1 has on the machine goes through [`System`], so the boot logic runs on a
//! development host against a recording fake (`fake.rs`) and only the real implementation
//! (`linux/`) touches the kernel — and that one refuses to exist unless we are PID 1.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sys::signal::Signal;

use crate::power::PowerAction;

pub type Pid = i32;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(Signal),
    /// A signal nix has no name for (real-time signals).
    OtherSignal(i32),
}

impl ExitStatus {
    /// Decodes a wait(2) status word; None for stops and continues.
    pub fn from_wait_status(status: i32) -> Option<Self> {
        if libc::WIFEXITED(status) {
            return Some(ExitStatus::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            let number = libc::WTERMSIG(status);
            return Some(match Signal::try_from(number) {
                Ok(signal) => ExitStatus::Signal(signal),
                Err(_) => ExitStatus::OtherSignal(number),
            });
        }
        None
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signal(sig) => write!(f, "killed by signal {}", sig.as_str()),
            ExitStatus::OtherSignal(number) => write!(f, "killed by signal {number}"),
        }
    }
}

/// One answer of a non-blocking `waitpid(-1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Exited(Pid, ExitStatus),
    /// Children exist but none has exited.
    NoneExited,
    /// No child process is left (ECHILD).
    NoChildren,
}

/// What wakes the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Signal(Signal),
    /// A valid request arrived on the control socket and was answered `ok`.
    Control(PowerAction),
    /// The ACPI power button was pressed.
    PowerButton,
}

/// A mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    pub source: Option<String>,
    pub target: PathBuf,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl MountCall {
    /// `mount --move from to`.
    pub fn moving(from: &Path, to: &Path) -> Self {
        MountCall {
            source: Some(from.display().to_string()),
            target: to.to_path_buf(),
            fstype: None,
            flags: MsFlags::MS_MOVE,
            data: None,
        }
    }

    /// Remount `target` read-only.
    pub fn remount_ro(target: &Path) -> Self {
        MountCall {
            source: None,
            target: target.to_path_buf(),
            fstype: None,
            flags: MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            data: None,
        }
    }
}

/// A process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited from PID 1).
    pub env: Vec<(String, String)>,
}

pub trait System {
    /// Time since boot (CLOCK_BOOTTIME, the clock behind /proc/uptime).
    fn now(&self) -> Duration;

    // Files.
    fn exists(&self, path: &Path) -> bool;
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Up to `len` bytes from the start of the file.
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>>;
    fn create_dir_all(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Write a temporary file beside `path`, fsync, rename over `path`.
    fn write_file_atomic(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()>;
    fn copy_file(&mut self, from: &Path, to: &Path, mode: u32) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;

    /// Make sure fds 0, 1 and 2 are open (on /dev/console when the kernel could not open it).
    fn setup_console(&mut self) -> io::Result<()>;

    // Mounts and the root switch.
    fn mount(&mut self, call: &MountCall) -> io::Result<()>;
    fn umount(&mut self, target: &Path) -> io::Result<()>;
    /// Attach `image` read-only to a free loop device; returns the device path.
    fn attach_loop_ro(&mut self, image: &Path) -> io::Result<PathBuf>;
    fn chdir(&mut self, path: &Path) -> io::Result<()>;
    fn chroot(&mut self, path: &Path) -> io::Result<()>;

    // Kernel modules.
    fn kernel_release(&self) -> io::Result<String>;
    /// finit_module(2) on the file.
    fn load_module(&mut self, path: &Path) -> io::Result<()>;

    // Network identity and entropy.
    fn loopback_up(&mut self) -> io::Result<()>;
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// getrandom(GRND_NONBLOCK) probe: true when the kernel RNG is initialised.
    fn random_ready(&mut self) -> bool;
    /// Block until the kernel RNG is initialised.
    fn wait_random(&mut self) -> io::Result<()>;

    // Processes.
    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Pid>;
    /// kill(2); pid -1 means every process but PID 1.
    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()>;
    fn try_wait_any(&mut self) -> Wait;

    // Events.
    /// Start answering the control protocol on a Unix socket at `path`.
    fn listen_control(&mut self, path: &Path) -> io::Result<()>;
    /// Watch the ACPI power button; returns how many button devices were found.
    fn watch_power_button(&mut self) -> usize;
    /// Stop taking requests: close the control socket (removing its file) and the power button
    /// devices, which would otherwise keep /run and /dev busy at unmount time.
    fn stop_control(&mut self);
    /// Block until something happens or `timeout` passes (None: no timeout).
    fn wait_events(&mut self, timeout: Option<Duration>) -> Vec<Event>;

    // Power.
    /// reboot(LINUX_REBOOT_CMD_CAD_OFF): Ctrl-Alt-Del becomes SIGINT to PID 1.
    fn disable_cad(&mut self) -> io::Result<()>;
    fn sync(&mut self);
    /// reboot(2). Returns only if the kernel refused.
    fn reboot(&mut self, action: PowerAction) -> io::Error;
}

/// The errno of an io::Error, or 0.
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_well_in_logs() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exited with code 3");
        assert_eq!(
            ExitStatus::Signal(Signal::SIGKILL).to_string(),
            "killed by signal SIGKILL"
        );
    }

    #[test]
    fn wait_statuses_decode_including_real_time_signals() {
        // Layout of the status word: exit code in bits 8..16, terminating signal in bits 0..7.
        assert_eq!(
            ExitStatus::from_wait_status(3 << 8),
            Some(ExitStatus::Code(3))
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            Some(ExitStatus::Signal(Signal::SIGKILL))
        );
        assert_eq!(
            ExitStatus::from_wait_status(9 | 0x80),
            Some(ExitStatus::Signal(Signal::SIGKILL))
        );
        assert_eq!(
            ExitStatus::from_wait_status(40),
            Some(ExitStatus::OtherSignal(40))
        );
        assert_eq!(
            ExitStatus::OtherSignal(40).to_string(),
            "killed by signal 40"
        );
        // Stopped by SIGSTOP (0x137f) is not an exit.
        assert_eq!(ExitStatus::from_wait_status(0x137f), None);
    }

    #[test]
    fn helper_calls() {
        let moving = MountCall::moving(Path::new("/dev"), Path::new("/newroot/dev"));
        assert_eq!(moving.flags, MsFlags::MS_MOVE);
        assert_eq!(moving.source.as_deref(), Some("/dev"));
        let ro = MountCall::remount_ro(Path::new("/var"));
        assert_eq!(ro.flags, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY);
        assert_eq!(ro.source, None);
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::EBUSY)),
            libc::EBUSY
        );
        assert_eq!(errno(&io::Error::other("x")), 0);
    }
}
