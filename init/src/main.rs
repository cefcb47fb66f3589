//! ros init: the PID 1 of a ros image. See README.md for what it does, in what order, and why.

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
    pid1::run(&mut sys)
}
