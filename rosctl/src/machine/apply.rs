//! `rosctl apply-config`.

use super::Targets;
use super::fanout;
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ros_api::machine::{ApplyConfigurationRequest, ApplyMode};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Auto,
    NoReboot,
    Reboot,
    Staged,
    Try,
}

impl From<Mode> for ApplyMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Auto => ApplyMode::Auto,
            Mode::NoReboot => ApplyMode::NoReboot,
            Mode::Reboot => ApplyMode::Reboot,
            Mode::Staged => ApplyMode::Staged,
            Mode::Try => ApplyMode::Try,
        }
    }
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The machine config file.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Connect without a client certificate, accepting the node's self-signed certificate
    /// (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,
    /// How to apply: auto, no-reboot, reboot, staged (next boot) or try (rolled back unless
    /// confirmed by another apply).
    #[arg(short, long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// For --mode try: seconds before the previous config returns.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub try_timeout: u32,
}

pub async fn run(args: &ApplyArgs, t: &Targets) -> anyhow::Result<bool> {
    let data =
        std::fs::read(&args.file).with_context(|| format!("--file {}", args.file.display()))?;
    let req = ApplyConfigurationRequest {
        data,
        mode: ApplyMode::from(args.mode) as i32,
        dry_run: args.dry_run,
        try_timeout_seconds: args.try_timeout,
    };
    let results = fanout::each(&t.nodes, &t.creds, move |mut c| {
        let req = req.clone();
        async move { c.apply_configuration(req).await.map(|r| r.into_inner()) }
    })
    .await;
    let (replies, mut failed) = fanout::split(results);
    for (target, r) in replies {
        let node = if r.node.is_empty() {
            target.clone()
        } else {
            r.node.clone()
        };
        if !r.accepted {
            failed = true;
            eprintln!("node {target} ({node}): config rejected, nothing changed:");
            for e in &r.validation_errors {
                eprintln!("  {e}");
            }
            continue;
        }
        println!("node {target} ({node}): {}", r.mode_details);
        if r.reboot_required {
            println!("  reboot required");
        }
        if r.changes.is_empty() {
            println!("  no changes");
        }
        for c in &r.changes {
            println!("  {c}");
        }
    }
    Ok(failed)
}
