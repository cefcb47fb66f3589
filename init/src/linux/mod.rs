//! The real [`System`]: Linux syscalls through nix (and libc for a few ioctls). It can only be
//! built by PID 1, so running the binary on a development host touches nothing.

mod events;
mod loopdev;
mod netdev;
mod power_button;

use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{mount, umount};
use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::unistd::{self, Pid as NixPid};

use crate::console::{self, error};
use crate::power::PowerAction;
use crate::system::{Event, ExitStatus, MountCall, Pid, SpawnSpec, System, Wait};

/// finit_module flag: the kernel decompresses the module itself (Linux 6.4+).
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPid1(pub i32);

impl std::fmt::Display for NotPid1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "init refuses to run: this process is pid {}, not 1. init is the first process of a ros \
             image and mounts, loads modules and reboots; it never does that on another system",
            self.0
        )
    }
}

pub struct LinuxSystem {
    signals: SigSet,
    events: Option<events::EventSource>,
}

impl LinuxSystem {
    /// Refuses unless this process is PID 1. Blocks the signals PID 1 handles, so the ones
    /// that arrive during boot wait for the main loop instead of being lost.
    pub fn new() -> Result<Self, NotPid1> {
        let pid = unistd::getpid().as_raw();
        if pid != 1 {
            return Err(NotPid1(pid));
        }
        let signals = events::handled_signals();
        if let Err(e) = signals.thread_block() {
            error!("cannot block signals: {e}");
        }
        Ok(LinuxSystem {
            signals,
            events: None,
        })
    }

    fn events(&mut self) -> Option<&mut events::EventSource> {
        if self.events.is_none() {
            match events::EventSource::new(&self.signals) {
                Ok(source) => self.events = Some(source),
                Err(e) => error!("signalfd: {e}; polling once a second instead"),
            }
        }
        self.events.as_mut()
    }
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    (unsafe { libc::fcntl(fd, libc::F_GETFD) }) >= 0
}

fn open_console() -> io::Result<i32> {
    for path in [c"/dev/console", c"/dev/null"] {
        // Not O_CLOEXEC: these become the children's standard streams.
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if fd >= 0 {
            return Ok(fd);
        }
    }
    Err(io::Error::last_os_error())
}

impl System for LinuxSystem {
    fn now(&self) -> Duration {
        console::uptime()
    }

    fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut prefix = Vec::with_capacity(len);
        File::open(path)?
            .take(len as u64)
            .read_to_end(&mut prefix)?;
        Ok(prefix)
    }

    fn create_dir_all(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn write_file_atomic(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn copy_file(&mut self, from: &Path, to: &Path, mode: u32) -> io::Result<()> {
        fs::copy(from, to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(mode))
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn setup_console(&mut self) -> io::Result<()> {
        for fd in 0..3 {
            if fd_is_open(fd) {
                continue;
            }
            let opened = open_console()?;
            if opened != fd {
                // SAFETY: both descriptors are valid; dup2 replaces the closed fd.
                let rc = unsafe { libc::dup2(opened, fd) };
                // SAFETY: `opened` is ours and no longer needed.
                unsafe { libc::close(opened) };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    fn mount(&mut self, call: &MountCall) -> io::Result<()> {
        mount(
            call.source.as_deref(),
            &call.target,
            call.fstype.as_deref(),
            call.flags,
            call.data.as_deref(),
        )
        .map_err(io::Error::from)
    }

    fn umount(&mut self, target: &Path) -> io::Result<()> {
        umount(target).map_err(io::Error::from)
    }

    fn attach_loop_ro(&mut self, image: &Path) -> io::Result<PathBuf> {
        loopdev::attach_read_only(image)
    }

    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        unistd::chdir(path).map_err(io::Error::from)
    }

    fn chroot(&mut self, path: &Path) -> io::Result<()> {
        unistd::chroot(path).map_err(io::Error::from)
    }

    fn kernel_release(&self) -> io::Result<String> {
        let uts = nix::sys::utsname::uname()?;
        Ok(uts.release().to_string_lossy().into_owned())
    }

    fn load_module(&mut self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let name = path.to_string_lossy();
        let compressed = [".xz", ".zst", ".gz"].iter().any(|ext| name.ends_with(ext));
        let flags = if compressed {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        };
        let no_params: &CStr = c"";
        finit_module(&file, no_params, ModuleInitFlags::from_bits_retain(flags))
            .map_err(io::Error::from)
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        netdev::loopback_up()
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        unistd::sethostname(name).map_err(io::Error::from)
    }

    fn random_ready(&mut self) -> bool {
        let mut byte = 0u8;
        // SAFETY: getrandom writes at most one byte into `byte`.
        let rc = unsafe { libc::getrandom((&mut byte as *mut u8).cast(), 1, libc::GRND_NONBLOCK) };
        // Any answer but EAGAIN means the pool can be used (ENOSYS: a kernel too old to say).
        rc >= 0 || Errno::last() != Errno::EAGAIN
    }

    fn wait_random(&mut self) -> io::Result<()> {
        let mut byte = 0u8;
        loop {
            // SAFETY: getrandom writes at most one byte into `byte`.
            let rc = unsafe { libc::getrandom((&mut byte as *mut u8).cast(), 1, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let err = Errno::last();
            if err != Errno::EINTR {
                return Err(err.into());
            }
        }
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Pid> {
        let mut command = Command::new(&spec.path);
        let (arg0, rest) = spec
            .args
            .split_first()
            .map_or(("", &[][..]), |(a, r)| (a.as_str(), r));
        if !arg0.is_empty() {
            command.arg0(arg0);
        }
        command
            .args(rest)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls (setsid, sigprocmask, signal) between fork and
        // exec.
        unsafe {
            command.pre_exec(|| {
                unistd::setsid()?;
                // PID 1 blocks the signals it reads from its signalfd, and std ignores SIGPIPE;
                // both survive exec, so give the child the defaults.
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
                if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        // The reaper collects it with waitpid(-1); std's Child must never wait on it.
        Ok(child.id() as Pid)
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()> {
        kill(NixPid::from_raw(pid), signal).map_err(io::Error::from)
    }

    fn try_wait_any(&mut self) -> Wait {
        // libc directly: nix refuses to decode real-time signals after the child is reaped,
        // which would hide machined's death from the supervisor.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status word into `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                match ExitStatus::from_wait_status(status) {
                    Some(exit) => return Wait::Exited(pid, exit),
                    None => continue,
                }
            }
            if pid == 0 {
                return Wait::NoneExited;
            }
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => return Wait::NoChildren,
                e => {
                    error!("waitpid: {e}");
                    return Wait::NoneExited;
                }
            }
        }
    }

    fn listen_control(&mut self, path: &Path) -> io::Result<()> {
        match self.events() {
            Some(events) => events.listen(path),
            None => Err(io::Error::other("no event source (signalfd failed)")),
        }
    }

    fn watch_power_button(&mut self) -> usize {
        match self.events() {
            Some(events) => events.watch_power_buttons(),
            None => 0,
        }
    }

    fn stop_control(&mut self) {
        if let Some(events) = self.events.as_mut() {
            events.stop_listening();
        }
    }

    fn wait_events(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        match self.events() {
            Some(events) => events.wait(timeout),
            None => {
                // Degraded: no signalfd. Sleep a little; the loop reaps on every turn anyway.
                std::thread::sleep(
                    timeout
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1)),
                );
                Vec::new()
            }
        }
    }

    fn disable_cad(&mut self) -> io::Result<()> {
        set_cad_enabled(false).map_err(io::Error::from)
    }

    fn sync(&mut self) {
        unistd::sync();
    }

    fn reboot(&mut self, action: PowerAction) -> io::Error {
        let mode = match action {
            PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        match reboot(mode) {
            Err(e) => e.into(),
            Ok(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_exist_outside_pid_1() {
        // The test runner is never PID 1, so nothing real can happen here.
        let err = LinuxSystem::new()
            .err()
            .expect("LinuxSystem built outside PID 1");
        assert_eq!(err.0, std::process::id() as i32);
        assert!(err.to_string().contains("not 1"));
    }
}
