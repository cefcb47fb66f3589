//! `rosctl validate`: every problem of a machine config, one per line.

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Machine config file to check
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Treat warnings as problems too
    #[arg(long)]
    strict: bool,
}

pub fn run(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let file = a.config.display();
    let checked = match ros_config::check_yaml(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{file}: invalid");
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = checked.report;
    for e in &report.errors {
        eprintln!("{e}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let problems = report.errors.len() + if a.strict { report.warnings.len() } else { 0 };
    if problems > 0 {
        let plural = if problems == 1 { "" } else { "s" };
        eprintln!("{file}: invalid ({problems} problem{plural})");
        return Ok(ExitCode::FAILURE);
    }
    let role = checked
        .config
        .map(|c| c.machine.machine_type.to_string())
        .unwrap_or_default();
    println!("{file}: valid ({role})");
    Ok(ExitCode::SUCCESS)
}
