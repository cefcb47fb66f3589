//! `rosctl cluster destroy`: stop every VM by its PID (checked to still be that QEMU), remove
//! the network namespace, then the state directory.

use super::state::{self, ClusterState};
use anyhow::{Context as _, Result};
use clap::Args;
use imager::qemu::{netns, process};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub select: super::Select,
}

pub fn run(args: DestroyArgs) -> Result<ExitCode> {
    let dir = args.select.state_dir()?;
    let cluster = ClusterState::load(&dir)?;
    for node in &cluster.nodes {
        let Some(pid) = process::read_pid_file(&state::pid_file(node)) else {
            eprintln!("{}: no PID file, nothing to stop", node.name);
            continue;
        };
        let stopped = process::stop(pid, &state::qmp_socket(node), Duration::from_secs(10))
            .with_context(|| format!("stopping {}", node.name))?;
        if state::running_pid(node).is_some() {
            anyhow::bail!(
                "{}: QEMU PID {pid} is still running after SIGKILL",
                node.name
            );
        }
        if stopped {
            eprintln!("{}: stopped QEMU PID {pid}", node.name);
        } else {
            eprintln!(
                "{}: PID {pid} is not its QEMU any more (already stopped)",
                node.name
            );
        }
    }
    if netns::exists(&cluster.netns) {
        netns::delete(&cluster.netns)?;
        eprintln!("removed network namespace {}", cluster.netns);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!("removed {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
