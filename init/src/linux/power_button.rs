//! The ACPI power button (QEMU `system_powerdown`, a cloud "stop instance"): the kernel's
//! `button` driver reports it as KEY_POWER on an evdev device named "Power Button" (needs the
//! `button` and `evdev` modules).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: a timeval (16 bytes), type, code, value.
const EVENT_SIZE: usize = 24;

/// The `eventN` names of the input devices called "Power Button" under `sysfs_input`
/// (/sys/class/input), sorted.
pub fn find(sysfs_input: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sysfs_input) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event"))
        .filter(|n| {
            let name =
                fs::read_to_string(sysfs_input.join(n).join("device/name")).unwrap_or_default();
            name.trim() == "Power Button"
        })
        .collect();
    names.sort();
    names
}

/// Opens /dev/input/`name` for non-blocking reads.
pub fn open(name: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(Path::new("/dev/input").join(name))
}

/// True if the events in `buf` include a press of KEY_POWER.
pub fn pressed(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|event| {
        let kind = u16::from_ne_bytes([event[16], event[17]]);
        let code = u16::from_ne_bytes([event[18], event[19]]);
        let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Drains a readable button device; true if the button was pressed.
pub fn read_pressed(device: &mut File) -> bool {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut seen = false;
    loop {
        match device.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen |= pressed(&buf[..n - n % EVENT_SIZE]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend(kind.to_ne_bytes());
        e.extend(code.to_ne_bytes());
        e.extend(value.to_ne_bytes());
        e
    }

    #[test]
    fn a_power_key_press_is_recognised() {
        let mut buf = event(EV_KEY, KEY_POWER, 1);
        buf.extend(event(0, 0, 0)); // EV_SYN
        assert!(pressed(&buf));
    }

    #[test]
    fn releases_and_other_keys_are_not_presses() {
        let mut buf = event(EV_KEY, KEY_POWER, 0);
        buf.extend(event(EV_KEY, 30, 1));
        buf.extend(event(0, 0, 0));
        assert!(!pressed(&buf));
        assert!(!pressed(&[]));
    }

    #[test]
    fn devices_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (event, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event1", "Power Button"),
        ] {
            fs::create_dir_all(dir.path().join(event).join("device")).unwrap();
            fs::write(
                dir.path().join(event).join("device/name"),
                format!("{name}\n"),
            )
            .unwrap();
        }
        fs::create_dir_all(dir.path().join("mouse0")).unwrap();
        assert_eq!(find(dir.path()), vec!["event1"]);
        assert!(find(&dir.path().join("missing")).is_empty());
    }
}
