//! `rosctl cluster create | destroy | show`: local clusters of QEMU VMs on a bridge inside
//! a network namespace, reached from the host through forwards on 127.0.0.1.

mod configs;
mod create;
mod destroy;
mod image;
mod kube_tls;
mod node_api;
mod patches;
mod plan;
mod show;
mod state;

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Boot a local cluster in QEMU VMs, configure and bootstrap it.
    Create(create::CreateArgs),
    /// Stop a local cluster's VMs and remove its network namespace and files.
    Destroy(destroy::DestroyArgs),
    /// List a local cluster's nodes, addresses, forwarded ports and QEMU PIDs.
    Show(show::ShowArgs),
}

/// Which cluster: by name (under ~/.ros/clusters) or by its state directory.
#[derive(Args, Debug)]
pub struct Select {
    /// Cluster name
    #[arg(long, default_value = "ros")]
    pub name: String,
    /// The cluster's state directory [default: ~/.ros/clusters/NAME]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Select {
    pub fn state_dir(&self) -> Result<PathBuf> {
        match &self.state_dir {
            Some(d) => Ok(d.clone()),
            None => plan::default_state_dir(&self.name),
        }
    }
}

/// The flag that selects this cluster again in printed hints.
fn select_flag(name: &str, state_dir: &Path) -> String {
    match plan::default_state_dir(name) {
        Ok(d) if d == state_dir => format!("--name {name}"),
        _ => format!("--state-dir {}", state_dir.display()),
    }
}

pub fn run(cmd: ClusterCommand) -> Result<ExitCode> {
    match cmd {
        ClusterCommand::Create(a) => create::run(a),
        ClusterCommand::Destroy(a) => destroy::run(a),
        ClusterCommand::Show(a) => show::run(a),
    }
}
