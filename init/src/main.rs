//! ros init: the PID 1 of a ros image. See README.md for what it does, in what order, and why.

// PID 1 survives its own bugs by catching panics; with panic=abort a bug would panic the kernel.
#[cfg(not(panic = "unwind"))]
compile_error!("init must be built with panic = \"unwind\" (it catches panics to stay alive)");

mod backoff;
mod boot;
mod cmdline;
mod console;
mod control;
#[cfg(test)]
mod fake;
mod linux;
mod modules;
mod mountinfo;
mod mounts;
mod pid1;
mod power;
mod reaper;
mod shutdown;
mod supervisor;
mod switch_root;
mod system;

fn main() {
    let mut sys = match linux::LinuxSystem::new() {
        Ok(sys) => sys,
        Err(not_pid1) => {
            eprintln!("{not_pid1}");
            std::process::exit(2);
        }
    };
    console::install_panic_hook();
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pid1::run(&mut sys)));
    // run() never returns; a panic outside its own guards lands here. Booting again could
    // mount twice, so from now on PID 1 only reaps.
    if escaped.is_err() {
        console::error!("PID 1 left its main loop; only reaping from now on");
    }
    pid1::last_resort(&mut sys)
}
