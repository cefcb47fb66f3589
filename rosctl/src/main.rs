//! rosctl: the only client of ros machines and clusters.
//!
//! Each command group lives in its own module; `main` only parses and dispatches.

mod cluster;
mod config;
mod duration;
mod generate;
mod global;
mod machine;
mod validate;
// Machine API commands (apply-config, bootstrap, get, services, logs, ...) go in a module
// `machine/` (rosctl/src/machine/mod.rs): declare `mod machine;` here, add their variants to
// `Command` below (e.g. `#[command(flatten)] Machine(machine::MachineCommand)`), and dispatch
// them in `run`. They reach nodes through `GlobalArgs::connection()` (see global.rs).

use clap::{CommandFactory, Parser, Subcommand};
use global::GlobalArgs;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "rosctl", version, about = "Manage ros machines and clusters")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate secrets and machine configs.
    #[command(subcommand)]
    Gen(generate::GenCommand),
    /// Check a machine config and print every problem.
    Validate(validate::ValidateArgs),
    /// Manage the client config (rosconfig): contexts, endpoints, nodes.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Local clusters of QEMU VMs: create, destroy, show.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Print a shell completion script (e.g. `rosctl completion bash > /etc/bash_completion.d/rosctl`).
    Completion {
        /// The shell to generate the script for.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Machine(machine::MachineCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Gen(cmd) => generate::run(cmd),
        Command::Validate(args) => validate::run(args),
        Command::Config(cmd) => config::run(cmd, &cli.global),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rosctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Machine(cmd) => machine::run(cmd, &cli.global),
    }
}
