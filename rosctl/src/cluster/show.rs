//! `rosctl cluster show`: the nodes of a local cluster, their addresses, forwards and QEMUs.

use super::plan::NodePlan;
use super::state::{self, ClusterState};
use anyhow::Result;
use clap::{Args, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub select: super::Select,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// What `show` reports (also its JSON/YAML shape).
#[derive(Debug, Serialize)]
pub struct Shown {
    pub name: String,
    pub netns: String,
    pub network: String,
    pub endpoint: String,
    pub accel: String,
    pub state_dir: PathBuf,
    pub rosconfig: PathBuf,
    /// Present once the cluster has been bootstrapped.
    pub kubeconfig: Option<PathBuf>,
    pub nodes: Vec<ShownNode>,
}

#[derive(Debug, Serialize)]
pub struct ShownNode {
    pub name: String,
    pub hostname: String,
    pub role: String,
    pub address: String,
    pub machine_api: String,
    pub kubernetes_api: Option<String>,
    pub pid: Option<u32>,
    pub running: bool,
    pub console: PathBuf,
}

fn node(n: &NodePlan) -> ShownNode {
    let pid = imager::qemu::process::read_pid_file(&state::pid_file(n));
    ShownNode {
        name: n.name.clone(),
        hostname: n.hostname.clone(),
        role: n.role.as_str().into(),
        address: n.address.to_string(),
        machine_api: n.api_target(),
        kubernetes_api: n.kubernetes_port.map(|p| format!("127.0.0.1:{p}")),
        pid,
        running: state::running_pid(n).is_some(),
        console: state::console_log(n),
    }
}

pub fn describe(dir: &std::path::Path) -> Result<Shown> {
    let c = ClusterState::load(dir)?;
    let kubeconfig = dir.join(state::KUBECONFIG);
    Ok(Shown {
        name: c.name.clone(),
        netns: c.netns.clone(),
        network: c.cidr.clone(),
        endpoint: c.endpoint.clone(),
        accel: c.accel.clone(),
        state_dir: dir.to_path_buf(),
        rosconfig: dir.join(state::ROSCONFIG),
        kubeconfig: kubeconfig.is_file().then_some(kubeconfig),
        nodes: c.nodes.iter().map(node).collect(),
    })
}

pub fn run(args: ShowArgs) -> Result<ExitCode> {
    let dir = args.select.state_dir()?;
    let shown = describe(&dir)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&shown)?),
        Format::Table => {
            println!(
                "cluster {} ({}, network {} in namespace {}, {})",
                shown.name, shown.endpoint, shown.network, shown.netns, shown.accel
            );
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header([
                "NAME",
                "ROLE",
                "ADDRESS",
                "MACHINE API",
                "KUBERNETES API",
                "PID",
                "STATE",
            ]);
            for n in &shown.nodes {
                t.add_row([
                    n.name.clone(),
                    n.role.clone(),
                    n.address.clone(),
                    n.machine_api.clone(),
                    n.kubernetes_api.clone().unwrap_or_else(|| "-".into()),
                    n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    if n.running { "running" } else { "stopped" }.into(),
                ]);
            }
            for line in t.to_string().lines() {
                println!("{}", line.trim_end());
            }
            println!("rosconfig:  {}", shown.rosconfig.display());
            if let Some(k) = &shown.kubeconfig {
                println!("kubeconfig: {}", k.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
