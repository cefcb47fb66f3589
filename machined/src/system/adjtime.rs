//! Correcting the kernel's wall clock (Linux only, called by `LinuxSystem`; never in dev mode,
//! which must not touch the host's clock). A step jumps by the offset at once
//! (`ADJ_SETOFFSET`, relative, so no time passes between reading and setting the clock); a
//! slew lets the kernel run the clock slightly fast or slow until the offset is gone
//! (`ADJ_OFFSET_SINGLESHOT`, as adjtime(3)). Either way the kernel is then told the clock is
//! synchronised, with the error bounds a fresh SNTP sample gives.

use super::ClockAdjustment;

const NANOS: i128 = 1_000_000_000;
/// The kernel slews at most 500 ppm; offsets beyond this are stepped whatever was asked.
const MAX_SLEW_US: i128 = 500_000;

fn adjtimex(tx: &mut libc::timex) -> Result<libc::c_int, String> {
    // SAFETY: `tx` is a valid, initialised timex the kernel reads and writes.
    let state = unsafe { libc::adjtimex(tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(state)
}

fn zeroed() -> libc::timex {
    // SAFETY: timex is plain integers and a timeval; all-zero is valid (modes 0 = read only).
    unsafe { std::mem::zeroed() }
}

pub fn adjust(adj: ClockAdjustment) -> Result<(), String> {
    let micros = adj.offset_ns / 1000;
    if adj.step || micros.abs() > MAX_SLEW_US {
        let mut tx = zeroed();
        tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
        // With ADJ_NANO the timeval's second field holds nanoseconds, normalised to [0, 1e9).
        tx.time.tv_sec = adj.offset_ns.div_euclid(NANOS) as libc::time_t;
        tx.time.tv_usec = adj.offset_ns.rem_euclid(NANOS) as libc::suseconds_t;
        adjtimex(&mut tx).map_err(|e| format!("step by {}ns: {e}", adj.offset_ns))?;
    } else {
        let mut tx = zeroed();
        tx.modes = libc::ADJ_OFFSET_SINGLESHOT;
        tx.offset = micros as libc::c_long;
        adjtimex(&mut tx).map_err(|e| format!("slew by {micros}us: {e}"))?;
    }
    mark_synchronised()
}

/// Clears STA_UNSYNC and sets small error bounds, so the kernel (and anything asking it, as
/// `adjtimex` callers and the RTC sync do) sees a synchronised clock.
fn mark_synchronised() -> Result<(), String> {
    let mut read = zeroed();
    adjtimex(&mut read).map_err(|e| format!("read clock status: {e}"))?;
    let mut tx = zeroed();
    tx.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
    tx.status = read.status & !libc::STA_UNSYNC;
    tx.maxerror = 100_000;
    tx.esterror = 10_000;
    adjtimex(&mut tx).map_err(|e| format!("set clock status: {e}"))?;
    Ok(())
}
