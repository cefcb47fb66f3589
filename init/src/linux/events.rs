//! What wakes PID 1: signals through a signalfd, requests on the control socket and the ACPI
//! power button, all waited on with one poll(2).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::power_button;
use crate::console::{info, warning};
use crate::control;
use crate::power::PowerAction;
use crate::system::Event;

/// Signals PID 1 handles; they stay blocked and are read from the signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGPWR,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    set
}

pub struct EventSource {
    signals: SignalFd,
    control: Option<UnixListener>,
    buttons: Vec<std::fs::File>,
}

impl EventSource {
    pub fn new(mask: &SigSet) -> io::Result<Self> {
        let signals = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(EventSource {
            signals,
            control: None,
            buttons: Vec::new(),
        })
    }

    pub fn listen(&mut self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        self.control = Some(listener);
        Ok(())
    }

    pub fn watch_power_buttons(&mut self) -> usize {
        self.buttons.clear();
        for name in power_button::find(Path::new("/sys/class/input")) {
            match power_button::open(&name) {
                Ok(device) => self.buttons.push(device),
                Err(e) => warning!("power button /dev/input/{name}: {e}"),
            }
        }
        self.buttons.len()
    }

    pub fn stop_listening(&mut self) {
        self.buttons.clear();
        if let Some(listener) = self.control.take()
            && let Ok(addr) = listener.local_addr()
            && let Some(path) = addr.as_pathname()
        {
            let _ = std::fs::remove_file(path);
        }
    }

    pub fn wait(&mut self, timeout: Option<Duration>) -> Vec<Event> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
            }
        };
        let (control_ready, buttons_ready, buttons_broken) = {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            if let Some(listener) = &self.control {
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
            let first_button = fds.len();
            for device in &self.buttons {
                fds.push(PollFd::new(device.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Vec::new(),
                Err(e) => {
                    warning!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    return Vec::new();
                }
            }
            let readable =
                |fd: &PollFd<'_>| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            let control_ready = self.control.is_some() && readable(&fds[1]);
            let buttons_ready: Vec<usize> = fds[first_button..]
                .iter()
                .enumerate()
                .filter(|(_, fd)| readable(fd))
                .map(|(i, _)| i)
                .collect();
            // A device that went away would make every poll return at once.
            let broken = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
            let buttons_broken: Vec<usize> = fds[first_button..]
                .iter()
                .enumerate()
                .filter(|(_, fd)| fd.revents().is_some_and(|r| r.intersects(broken)))
                .map(|(i, _)| i)
                .collect();
            (control_ready, buttons_ready, buttons_broken)
        };
        let mut events = Vec::new();
        while let Ok(Some(info)) = self.signals.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                events.push(Event::Signal(sig));
            }
        }
        if control_ready {
            self.accept_all(&mut events);
        }
        let mut pressed = false;
        for i in buttons_ready {
            pressed |= power_button::read_pressed(&mut self.buttons[i]);
        }
        if pressed {
            info!("power button pressed");
            events.push(Event::PowerButton);
        }
        for i in buttons_broken.into_iter().rev() {
            warning!("power button device failed; no longer watching it");
            self.buttons.remove(i);
        }
        events
    }

    fn accept_all(&mut self, events: &mut Vec<Event>) {
        let Some(listener) = &self.control else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some(action) = serve_client(stream) {
                        events.push(Event::Control(action));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warning!("control: accept: {e}");
                    return;
                }
            }
        }
    }
}

/// One request per connection; a client has two seconds to send its line.
fn serve_client(mut stream: UnixStream) -> Option<PowerAction> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut chunk = [0u8; control::MAX_REQUEST + 1];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                request.extend_from_slice(&chunk[..n]);
                if request.contains(&b'\n') || request.len() > control::MAX_REQUEST {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                warning!("control: reading a request: {e}");
                break;
            }
        }
    }
    let answer = control::answer(&request);
    if let Err(e) = stream.write_all(answer.reply.as_bytes()) {
        warning!("control: answering: {e}");
    }
    match answer.action {
        Some(action) => info!("control: {action} requested"),
        None => warning!("control: refused a request: {}", answer.reply.trim_end()),
    }
    answer.action
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn ask(path: &Path, request: &'static [u8]) -> std::thread::JoinHandle<String> {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let mut stream = UnixStream::connect(&path).expect("connect to the control socket");
            stream.write_all(request).unwrap();
            let mut reply = String::new();
            io::BufReader::new(stream).read_line(&mut reply).unwrap();
            reply
        })
    }

    #[test]
    fn answers_requests_on_a_real_unix_socket() {
        // A socket in a temporary directory and a signalfd: harmless outside PID 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ros/init.sock");
        let mut source = EventSource::new(&SigSet::empty()).unwrap();
        source.listen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let client = ask(&path, b"poweroff\n");
        let mut events = Vec::new();
        while events.is_empty() {
            events = source.wait(Some(Duration::from_secs(10)));
        }
        assert_eq!(events, vec![Event::Control(PowerAction::Poweroff)]);
        assert_eq!(client.join().unwrap(), "ok\n");

        let client = ask(&path, b"format c:\n");
        let mut events = Vec::new();
        let reply = loop {
            events.extend(source.wait(Some(Duration::from_millis(200))));
            if client.is_finished() {
                break client.join().unwrap();
            }
        };
        assert!(reply.starts_with("error: unknown request"), "{reply}");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn stopping_removes_the_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.sock");
        let mut source = EventSource::new(&SigSet::empty()).unwrap();
        source.listen(&path).unwrap();
        source.stop_listening();
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());
        assert!(source.wait(Some(Duration::from_millis(1))).is_empty());
    }

    #[test]
    fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.sock");
        std::fs::write(&path, b"stale").unwrap();
        let mut source = EventSource::new(&SigSet::empty()).unwrap();
        source.listen(&path).unwrap();
        let client = ask(&path, b"halt\n");
        let mut events = Vec::new();
        while events.is_empty() {
            events = source.wait(Some(Duration::from_secs(10)));
        }
        assert_eq!(events, vec![Event::Control(PowerAction::Halt)]);
        assert_eq!(client.join().unwrap(), "ok\n");
    }
}
