//! A recording [`System`] for host tests: files live in maps, effects are appended to a list,
//! time is a number the test moves, and child processes follow a script.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::power::PowerAction;
use crate::system::{Event, ExitStatus, MountCall, Pid, SpawnSpec, System, Wait};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir(PathBuf),
    WriteFile(PathBuf, String),
    Copy(PathBuf, PathBuf),
    Symlink(PathBuf, PathBuf),
    SetupConsole,
    Mount(MountCall),
    Umount(PathBuf),
    AttachLoop(PathBuf),
    Chdir(PathBuf),
    Chroot(PathBuf),
    LoadModule(PathBuf),
    LoopbackUp,
    SetHostname(String),
    WaitRandom,
    Spawn(SpawnSpec),
    Kill(Pid, Signal),
    ListenControl(PathBuf),
    StopControl,
    WatchPowerButton,
    DisableCad,
    Sync,
    Reboot(PowerAction),
}

/// Something that happens at a scripted time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    Exit(Pid, ExitStatus),
    Signal(Signal),
    Control(PowerAction),
    PowerButton,
    /// wait_events panics, as a bug in PID 1 would.
    Panic,
}

/// What a fake process does with SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerm {
    ExitAfter(Duration),
    Ignore,
}

pub struct FakeSystem {
    now: Duration,
    ops: Vec<Op>,
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    mount_failures: HashMap<PathBuf, i32>,
    mount_data_failures: HashMap<PathBuf, i32>,
    umount_failures: HashMap<PathBuf, i32>,
    remount_failures: HashSet<PathBuf>,
    module_failures: HashMap<PathBuf, i32>,
    spawn_failures: HashMap<PathBuf, i32>,
    pub loop_failure: Option<i32>,
    pub random_ready: bool,
    pub on_term: OnTerm,
    next_pid: Pid,
    alive: BTreeMap<Pid, OnTerm>,
    /// Every pid ever spawned or added as an orphan.
    known: HashSet<Pid>,
    terminating: HashSet<Pid>,
    pending: VecDeque<(Pid, ExitStatus)>,
    script: Vec<(Duration, Scripted)>,
}

impl FakeSystem {
    pub fn new() -> Self {
        FakeSystem {
            now: Duration::from_millis(500),
            ops: Vec::new(),
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            mount_failures: HashMap::new(),
            mount_data_failures: HashMap::new(),
            umount_failures: HashMap::new(),
            remount_failures: HashSet::new(),
            module_failures: HashMap::new(),
            spawn_failures: HashMap::new(),
            loop_failure: None,
            random_ready: true,
            on_term: OnTerm::ExitAfter(Duration::from_secs(1)),
            next_pid: 100,
            alive: BTreeMap::new(),
            known: HashSet::new(),
            terminating: HashSet::new(),
            pending: VecDeque::new(),
            script: Vec::new(),
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn clear_ops(&mut self) {
        self.ops.clear();
    }

    pub fn add_file(&mut self, path: impl AsRef<Path>, contents: &str) {
        self.add_bytes(path, contents.as_bytes());
    }

    pub fn add_bytes(&mut self, path: impl AsRef<Path>, contents: &[u8]) {
        self.files
            .insert(path.as_ref().to_path_buf(), contents.to_vec());
    }

    pub fn add_dir(&mut self, path: impl AsRef<Path>) {
        self.dirs.insert(path.as_ref().to_path_buf());
    }

    pub fn file(&self, path: impl AsRef<Path>) -> Option<&str> {
        self.files
            .get(path.as_ref())
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn fail_mount(&mut self, target: impl AsRef<Path>, errno: i32) {
        self.mount_failures
            .insert(target.as_ref().to_path_buf(), errno);
    }

    /// Fail a mount at `target` only while it passes options (data).
    pub fn fail_mount_with_data(&mut self, target: impl AsRef<Path>, errno: i32) {
        self.mount_data_failures
            .insert(target.as_ref().to_path_buf(), errno);
    }

    pub fn fail_umount(&mut self, target: impl AsRef<Path>, errno: i32) {
        self.umount_failures
            .insert(target.as_ref().to_path_buf(), errno);
    }

    pub fn fail_remount(&mut self, target: impl AsRef<Path>) {
        self.remount_failures.insert(target.as_ref().to_path_buf());
    }

    pub fn fail_module(&mut self, path: &Path, errno: i32) {
        self.module_failures.insert(path.to_path_buf(), errno);
    }

    pub fn fail_spawn(&mut self, path: impl AsRef<Path>, errno: i32) {
        self.spawn_failures
            .insert(path.as_ref().to_path_buf(), errno);
    }

    /// A process PID 1 did not start (it will be re-parented to us).
    pub fn add_orphan(&mut self, pid: Pid, on_term: OnTerm) {
        self.alive.insert(pid, on_term);
        self.known.insert(pid);
    }

    pub fn is_alive(&self, pid: Pid) -> bool {
        self.alive.contains_key(&pid)
    }

    /// Schedule `what` at `at` (after anything already scheduled for the same time).
    pub fn at(&mut self, at: Duration, what: Scripted) {
        let index = self.script.partition_point(|(t, _)| *t <= at);
        self.script.insert(index, (at, what));
    }

    /// Pids of every spawn, in order.
    pub fn spawned(&self) -> Vec<(PathBuf, Pid)> {
        let mut pid = 100;
        let mut out = Vec::new();
        for op in &self.ops {
            if let Op::Spawn(spec) = op {
                out.push((spec.path.clone(), pid));
                pid += 1;
            }
        }
        out
    }

    fn record(&mut self, op: Op) {
        self.ops.push(op);
    }

    fn die(&mut self, pid: Pid, status: ExitStatus) {
        if self.alive.remove(&pid).is_some() {
            self.terminating.remove(&pid);
            self.pending.push_back((pid, status));
        }
    }

    fn signal_one(&mut self, pid: Pid, signal: Signal) {
        match (signal, self.alive.get(&pid).copied()) {
            (_, None) => {}
            (Signal::SIGKILL, Some(_)) => self.die(pid, ExitStatus::Signal(Signal::SIGKILL)),
            (Signal::SIGTERM, Some(OnTerm::ExitAfter(after))) if self.terminating.insert(pid) => {
                let when = self.now + after;
                self.at(
                    when,
                    Scripted::Exit(pid, ExitStatus::Signal(Signal::SIGTERM)),
                );
            }
            _ => {}
        }
    }
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl System for FakeSystem {
    fn now(&self) -> Duration {
        self.now
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
            || self.dirs.contains(path)
            || self.files.keys().any(|f| f.starts_with(path))
            || self.dirs.iter().any(|d| d.starts_with(path))
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let bytes = self.files.get(path).ok_or_else(|| os_error(libc::ENOENT))?;
        String::from_utf8(bytes.clone()).map_err(|_| os_error(libc::EILSEQ))
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let bytes = self.files.get(path).ok_or_else(|| os_error(libc::ENOENT))?;
        Ok(bytes[..len.min(bytes.len())].to_vec())
    }

    fn create_dir_all(&mut self, path: &Path, _mode: u32) -> io::Result<()> {
        self.record(Op::Mkdir(path.to_path_buf()));
        self.dirs.insert(path.to_path_buf());
        Ok(())
    }

    fn write_file_atomic(&mut self, path: &Path, contents: &[u8], _mode: u32) -> io::Result<()> {
        let text = String::from_utf8_lossy(contents).into_owned();
        self.record(Op::WriteFile(path.to_path_buf(), text));
        self.files.insert(path.to_path_buf(), contents.to_vec());
        Ok(())
    }

    fn copy_file(&mut self, from: &Path, to: &Path, _mode: u32) -> io::Result<()> {
        let contents = self
            .files
            .get(from)
            .cloned()
            .ok_or_else(|| os_error(libc::ENOENT))?;
        self.record(Op::Copy(from.to_path_buf(), to.to_path_buf()));
        self.files.insert(to.to_path_buf(), contents);
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Op::Symlink(target.to_path_buf(), link.to_path_buf()));
        Ok(())
    }

    fn setup_console(&mut self) -> io::Result<()> {
        self.record(Op::SetupConsole);
        Ok(())
    }

    fn mount(&mut self, call: &MountCall) -> io::Result<()> {
        self.record(Op::Mount(call.clone()));
        let remount = call.flags.contains(nix::mount::MsFlags::MS_REMOUNT);
        if remount && self.remount_failures.contains(&call.target) {
            return Err(os_error(libc::EBUSY));
        }
        if !remount && let Some(errno) = self.mount_failures.get(&call.target) {
            return Err(os_error(*errno));
        }
        if call.data.is_some()
            && let Some(errno) = self.mount_data_failures.get(&call.target)
        {
            return Err(os_error(*errno));
        }
        Ok(())
    }

    fn umount(&mut self, target: &Path) -> io::Result<()> {
        self.record(Op::Umount(target.to_path_buf()));
        match self.umount_failures.get(target) {
            Some(errno) => Err(os_error(*errno)),
            None => Ok(()),
        }
    }

    fn attach_loop_ro(&mut self, image: &Path) -> io::Result<PathBuf> {
        self.record(Op::AttachLoop(image.to_path_buf()));
        match self.loop_failure {
            Some(errno) => Err(os_error(errno)),
            None => Ok(PathBuf::from("/dev/loop0")),
        }
    }

    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        self.record(Op::Chdir(path.to_path_buf()));
        Ok(())
    }

    fn chroot(&mut self, path: &Path) -> io::Result<()> {
        self.record(Op::Chroot(path.to_path_buf()));
        Ok(())
    }

    fn kernel_release(&self) -> io::Result<String> {
        Ok("6.1.0-test".to_string())
    }

    fn load_module(&mut self, path: &Path) -> io::Result<()> {
        self.record(Op::LoadModule(path.to_path_buf()));
        match self.module_failures.get(path) {
            Some(errno) => Err(os_error(*errno)),
            None => Ok(()),
        }
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        self.record(Op::LoopbackUp);
        Ok(())
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.record(Op::SetHostname(name.to_string()));
        Ok(())
    }

    fn random_ready(&mut self) -> bool {
        self.random_ready
    }

    fn wait_random(&mut self) -> io::Result<()> {
        self.record(Op::WaitRandom);
        self.random_ready = true;
        Ok(())
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> io::Result<Pid> {
        if let Some(errno) = self.spawn_failures.get(&spec.path) {
            return Err(os_error(*errno));
        }
        self.record(Op::Spawn(spec.clone()));
        let pid = self.next_pid;
        self.next_pid += 1;
        self.alive.insert(pid, self.on_term);
        self.known.insert(pid);
        Ok(pid)
    }

    fn kill(&mut self, pid: Pid, signal: Signal) -> io::Result<()> {
        self.record(Op::Kill(pid, signal));
        if pid == -1 {
            let pids: Vec<Pid> = self.alive.keys().copied().collect();
            if pids.is_empty() {
                return Err(os_error(libc::ESRCH));
            }
            for pid in pids {
                self.signal_one(pid, signal);
            }
            return Ok(());
        }
        if !self.alive.contains_key(&pid) {
            return Err(os_error(libc::ESRCH));
        }
        self.signal_one(pid, signal);
        Ok(())
    }

    fn try_wait_any(&mut self) -> Wait {
        if let Some((pid, status)) = self.pending.pop_front() {
            return Wait::Exited(pid, status);
        }
        if self.alive.is_empty() {
            Wait::NoChildren
        } else {
            Wait::NoneExited
        }
    }

    fn listen_control(&mut self, path: &Path) -> io::Result<()> {
        self.record(Op::ListenControl(path.to_path_buf()));
        Ok(())
    }

    fn watch_power_button(&mut self) -> usize {
        self.record(Op::WatchPowerButton);
        1
    }

    fn stop_control(&mut self) {
        self.record(Op::StopControl);
    }

    fn wait_events(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        if !self.pending.is_empty() {
            return vec![Event::Signal(Signal::SIGCHLD)];
        }
        let horizon = timeout.map(|t| self.now + t);
        loop {
            // The exit of a process not spawned yet waits until it is.
            let known = &self.known;
            let eligible = self.script.iter().position(
                |(_, what)| !matches!(what, Scripted::Exit(pid, _) if !known.contains(pid)),
            );
            let due = match (eligible.map(|i| self.script[i].0), horizon) {
                (Some(at), Some(h)) => at <= h,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => panic!(
                    "wait_events without a timeout and nothing scripted: the test would hang"
                ),
            };
            let (Some(index), true) = (eligible, due) else {
                self.now = horizon.expect("horizon is set when nothing is due");
                return Vec::new();
            };
            let (at, what) = self.script.remove(index);
            self.now = self.now.max(at);
            match what {
                Scripted::Exit(pid, status) => {
                    if self.alive.contains_key(&pid) {
                        self.die(pid, status);
                        return vec![Event::Signal(Signal::SIGCHLD)];
                    }
                    // Already gone (e.g. SIGKILLed first): nothing happens.
                }
                Scripted::Signal(signal) => return vec![Event::Signal(signal)],
                Scripted::Control(action) => return vec![Event::Control(action)],
                Scripted::PowerButton => return vec![Event::PowerButton],
                Scripted::Panic => panic!("scripted panic in wait_events"),
            }
        }
    }

    fn disable_cad(&mut self) -> io::Result<()> {
        self.record(Op::DisableCad);
        Ok(())
    }

    fn sync(&mut self) {
        self.record(Op::Sync);
    }

    fn reboot(&mut self, action: PowerAction) -> io::Error {
        self.record(Op::Reboot(action));
        io::Error::other("the fake system does not reboot")
    }
}
