//! `rosctl patch machineconfig --patch P` and `rosctl edit machineconfig`: read the running
//! config from each node, change it, and apply it like `apply-config`.

use super::Targets;
use super::apply::Mode;
use super::fanout::status_error;
use anyhow::Context as _;
use clap::Args;
use ros_api::machine::{ApplyConfigurationRequest, ApplyMode, GetMachineConfigRequest};
use ros_config::patch::Patch;

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// What to patch: `machineconfig` (or `mc`).
    pub resource: String,
    /// A patch: `@file` or inline YAML/JSON; a map is a strategic merge, a list is RFC 6902.
    #[arg(short, long = "patch", value_name = "PATCH", required = true)]
    pub patches: Vec<String>,
    #[arg(short, long, value_enum, default_value = "auto")]
    pub mode: Mode,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    /// What to edit: `machineconfig` (or `mc`).
    pub resource: String,
    #[arg(short, long, value_enum, default_value = "auto")]
    pub mode: Mode,
    #[arg(long)]
    pub dry_run: bool,
}

fn check_resource(name: &str) -> anyhow::Result<()> {
    match name.to_ascii_lowercase().as_str() {
        "machineconfig" | "mc" | "machineconfigs" => Ok(()),
        other => {
            anyhow::bail!("resource: only machineconfig can be changed this way, not {other:?}")
        }
    }
}

pub async fn patch(t: &Targets, a: &PatchArgs) -> anyhow::Result<bool> {
    check_resource(&a.resource)?;
    let patches: Vec<Patch> = a
        .patches
        .iter()
        .enumerate()
        .map(|(i, p)| Patch::load(p, i + 1))
        .collect::<Result<_, _>>()?;
    let mut failed = false;
    for node in &t.nodes {
        let result = change(node, t, a.mode, a.dry_run, |yaml| {
            let doc = ros_config::parse_yaml_value(yaml)
                .map_err(|e| anyhow::anyhow!("running config: {e}"))?;
            let doc = ros_config::patch::apply_patches(doc, &patches)?;
            Ok(Some(serde_yaml_ng::to_string(&doc)?))
        })
        .await;
        if let Err(e) = result {
            failed = true;
            eprintln!("node {node}: {e:#}");
        }
    }
    Ok(failed)
}

pub async fn edit(t: &Targets, a: &EditArgs) -> anyhow::Result<bool> {
    check_resource(&a.resource)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let mut failed = false;
    for node in &t.nodes {
        let result = change(node, t, a.mode, a.dry_run, |yaml| {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("machineconfig.yaml");
            std::fs::write(&path, yaml)?;
            let status = std::process::Command::new(&editor)
                .arg(&path)
                .status()
                .with_context(|| format!("running the editor {editor:?} ($VISUAL / $EDITOR)"))?;
            anyhow::ensure!(status.success(), "the editor {editor:?} failed: {status}");
            let edited = std::fs::read_to_string(&path)?;
            Ok((edited != yaml).then_some(edited))
        })
        .await;
        if let Err(e) = result {
            failed = true;
            eprintln!("node {node}: {e:#}");
        }
    }
    Ok(failed)
}

/// Reads the node's config, lets `f` produce the new text (None = unchanged), applies it.
async fn change(
    node: &str,
    t: &Targets,
    mode: Mode,
    dry_run: bool,
    f: impl FnOnce(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    let mut c = t.creds.connect(node).await?;
    let current = c
        .get_machine_config(GetMachineConfigRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    anyhow::ensure!(
        !current.redacted,
        "reading the full config needs the os:admin role"
    );
    let Some(new) = f(&current.yaml)? else {
        println!("node {node} ({}): no changes", current.node);
        return Ok(());
    };
    let r = c
        .apply_configuration(ApplyConfigurationRequest {
            data: new.into_bytes(),
            mode: ApplyMode::from(mode) as i32,
            dry_run,
            try_timeout_seconds: 0,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !r.accepted {
        anyhow::bail!(
            "config rejected, nothing changed:\n  {}",
            r.validation_errors.join("\n  ")
        );
    }
    println!("node {node} ({}): {}", r.node, r.mode_details);
    for line in &r.changes {
        println!("  {line}");
    }
    Ok(())
}
