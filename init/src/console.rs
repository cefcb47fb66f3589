//! Console log lines, `[    1.234567] init: message`, stamped with CLOCK_BOOTTIME (the clock
//! /proc/uptime reads, usable before /proc is mounted) so they line up with the kernel's own.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static DEBUG: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// `ros.debug` turns on debug lines.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Time since boot from CLOCK_BOOTTIME; zero if the clock cannot be read.
pub fn uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One console line, newline included.
pub fn format_line(at: Duration, level: Level, message: &str) -> String {
    let prefix = match level {
        Level::Debug => "debug: ",
        Level::Info => "",
        Level::Warn => "warning: ",
        Level::Error => "error: ",
    };
    format!(
        "[{:>5}.{:06}] init: {prefix}{message}\n",
        at.as_secs(),
        at.subsec_micros()
    )
}

pub fn write(level: Level, message: std::fmt::Arguments<'_>) {
    if level == Level::Debug && !DEBUG.load(Ordering::Relaxed) {
        return;
    }
    let line = format_line(uptime(), level, &message.to_string());
    emit(&line);
}

/// stderr is the console; a write error has nowhere better to go.
#[cfg(not(test))]
fn emit(line: &str) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Under `cargo test` the harness captures (and hides) the lines of passing tests.
#[cfg(test)]
fn emit(line: &str) {
    eprint!("{line}");
}

/// Log panics to /dev/console (opened afresh, in case fd 2 is broken); the caller's
/// catch_unwind keeps PID 1 alive.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let line = format_line(
            uptime(),
            Level::Error,
            &format!("caught a panic, PID 1 keeps running: {info}"),
        );
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/console")
            .and_then(|mut console| console.write_all(line.as_bytes()));
        if written.is_err() {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }));
}

macro_rules! debug {
    ($($arg:tt)*) => { $crate::console::write($crate::console::Level::Debug, format_args!($($arg)*)) };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::console::write($crate::console::Level::Info, format_args!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::console::write($crate::console::Level::Warn, format_args!($($arg)*)) };
}
macro_rules! error {
    ($($arg:tt)*) => { $crate::console::write($crate::console::Level::Error, format_args!($($arg)*)) };
}
pub(crate) use {debug, error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_the_kernel_log() {
        let line = format_line(Duration::from_micros(1_234_567), Level::Info, "hello");
        assert_eq!(line, "[    1.234567] init: hello\n");
        let line = format_line(Duration::from_secs(12345), Level::Warn, "careful");
        assert_eq!(line, "[12345.000000] init: warning: careful\n");
        let line = format_line(Duration::ZERO, Level::Error, "bad");
        assert_eq!(line, "[    0.000000] init: error: bad\n");
    }
}
