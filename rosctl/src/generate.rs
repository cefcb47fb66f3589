//! `rosctl gen secrets` and `rosctl gen config`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ros_config::atomic_write_private;
use ros_config::generate::{GenOptions, generate};
use ros_config::patch::Patch;
use ros_config::secrets::Secrets;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum GenCommand {
    /// Generate a secrets bundle (CAs, keys, tokens) to build configs from.
    Secrets(SecretsArgs),
    /// Generate controlplane.yaml, worker.yaml and rosconfig for a cluster.
    Config(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct SecretsArgs {
    /// File to write
    #[arg(short, long, default_value = "secrets.yaml", value_name = "FILE")]
    output: PathBuf,
    /// Overwrite the file if it exists
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Cluster name (a DNS label)
    cluster_name: String,
    /// Kubernetes API endpoint, https://host:port
    endpoint: String,
    /// Build from this secrets bundle (from `rosctl gen secrets`) instead of fresh secrets
    #[arg(long, value_name = "FILE")]
    with_secrets: Option<PathBuf>,
    /// Patch for both configs: @file.yaml or inline YAML/JSON (repeatable, applied in order)
    #[arg(long = "config-patch", value_name = "PATCH")]
    config_patch: Vec<String>,
    /// Patch for controlplane.yaml only (applied after --config-patch)
    #[arg(long = "config-patch-control-plane", value_name = "PATCH")]
    config_patch_control_plane: Vec<String>,
    /// Patch for worker.yaml only (applied after --config-patch)
    #[arg(long = "config-patch-worker", value_name = "PATCH")]
    config_patch_worker: Vec<String>,
    /// Directory to write the files to (created if missing)
    #[arg(short, long = "output-dir", default_value = ".", value_name = "DIR")]
    output_dir: PathBuf,
    /// Overwrite existing files
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Secrets(a) => gen_secrets(a),
        GenCommand::Config(a) => gen_config(a),
    }
}

fn refuse_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        anyhow::bail!(
            "{} already exists; use --force to overwrite it",
            path.display()
        );
    }
    Ok(())
}

fn gen_secrets(a: SecretsArgs) -> anyhow::Result<ExitCode> {
    refuse_overwrite(&a.output, a.force)?;
    let secrets = Secrets::generate()?;
    secrets
        .save(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("created {}", a.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Loads patch arguments, numbering inline ones by their position among all patches.
fn load_patches(args: &[String], first_position: usize) -> anyhow::Result<Vec<Patch>> {
    args.iter()
        .enumerate()
        .map(|(i, a)| Patch::load(a, first_position + i).map_err(anyhow::Error::from))
        .collect()
}

fn gen_config(a: ConfigArgs) -> anyhow::Result<ExitCode> {
    let files = ["controlplane.yaml", "worker.yaml", "rosconfig"].map(|f| a.output_dir.join(f));
    for f in &files {
        refuse_overwrite(f, a.force)?;
    }

    let secrets = match &a.with_secrets {
        Some(p) => Secrets::load(p)?,
        None => Secrets::generate()?,
    };
    let patches = load_patches(&a.config_patch, 1)?;
    let cp = load_patches(&a.config_patch_control_plane, 1 + patches.len())?;
    let worker = load_patches(&a.config_patch_worker, 1 + patches.len() + cp.len())?;
    let generated = generate(&GenOptions {
        cluster_name: a.cluster_name.clone(),
        endpoint: a.endpoint.clone(),
        secrets,
        patches,
        patches_control_plane: cp,
        patches_worker: worker,
    })?;

    std::fs::create_dir_all(&a.output_dir)
        .with_context(|| format!("creating {}", a.output_dir.display()))?;
    let [cp_path, worker_path, rosconfig_path] = &files;
    // All three hold keys or tokens: owner-only.
    write(cp_path, &generated.control_plane.to_yaml())?;
    write(worker_path, &generated.worker.to_yaml())?;
    write(rosconfig_path, &generated.rosconfig.to_yaml())?;
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    atomic_write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("created {}", path.display());
    Ok(())
}
