//! `rosctl config ...`: manage the rosconfig like `talosctl config` manages talosconfig.

use crate::global::GlobalArgs;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets};
use ros_config::pki;
use ros_config::rosconfig::RosConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set the endpoints of the current context (replaces the list).
    #[command(visible_alias = "endpoints")]
    Endpoint(ListArgs),
    /// Set the default nodes of the current context (replaces the list; none clears it).
    #[command(visible_alias = "nodes")]
    Node(NodeArgs),
    /// Switch the current context.
    #[command(visible_alias = "use-context")]
    Context(ContextArgs),
    /// List the contexts.
    Contexts,
    /// Merge the contexts of another rosconfig into this one.
    Merge(MergeArgs),
    /// Show the current context: endpoints, nodes, role and certificate expiry.
    Info,
    /// Write a new rosconfig with a fresh client certificate signed by a control-plane node
    /// (needs os:admin): `config new reader.rosconfig --roles os:reader --crt-ttl 24h`.
    New(crate::machine::client_config::NewArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Addresses (host or host:port)
    #[arg(required = true, num_args = 1..)]
    values: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Node addresses
    values: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    /// Context name
    name: String,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// rosconfig file to merge from
    file: PathBuf,
}

pub fn run(cmd: ConfigCommand, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Endpoint(a) => edit(g, |r, origin| {
            r.context_mut(g.context.as_deref(), origin)?.endpoints = a.values;
            Ok(())
        }),
        ConfigCommand::Node(a) => edit(g, |r, origin| {
            r.context_mut(g.context.as_deref(), origin)?.nodes = a.values;
            Ok(())
        }),
        ConfigCommand::Context(a) => edit(g, |r, origin| {
            r.context(Some(&a.name), origin)?;
            r.context = a.name;
            Ok(())
        }),
        ConfigCommand::Contexts => contexts(g),
        ConfigCommand::Merge(a) => merge(g, a),
        ConfigCommand::Info => info(g),
        ConfigCommand::New(a) => crate::machine::client_config::run(&a, g),
    }
}

/// Load, change, save atomically.
fn edit(
    g: &GlobalArgs,
    change: impl FnOnce(&mut RosConfig, &str) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let (path, mut r) = g.load_rosconfig()?;
    change(&mut r, &path.display().to_string())?;
    r.save(&path)?;
    Ok(ExitCode::SUCCESS)
}

fn contexts(g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (_, r) = g.load_rosconfig()?;
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(vec!["CURRENT", "NAME", "ENDPOINTS", "NODES"]);
    for (name, ctx) in &r.contexts {
        let current = if *name == r.context { "*" } else { "" };
        table.add_row(vec![
            current.to_string(),
            name.clone(),
            ctx.endpoints.join(","),
            ctx.nodes.join(","),
        ]);
    }
    println!("{}", table.trim_fmt());
    Ok(ExitCode::SUCCESS)
}

fn merge(g: &GlobalArgs, a: MergeArgs) -> anyhow::Result<ExitCode> {
    let path = g.rosconfig_path()?;
    let mut r = RosConfig::load_or_default(&path)?;
    let other = RosConfig::load(&a.file)?;
    for (from, to) in r.merge(other) {
        eprintln!("renamed rosconfig context {from:?} -> {to:?}");
    }
    r.save(&path)?;
    eprintln!("merged {} into {}", a.file.display(), path.display());
    Ok(ExitCode::SUCCESS)
}

fn info(g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let (path, r) = g.load_rosconfig()?;
    let origin = path.display().to_string();
    let (name, ctx) = r.context(g.context.as_deref(), &origin)?;
    let crt = ctx
        .crt_pem()
        .with_context(|| format!("{origin}: contexts.{name}.crt"))?;
    let cert =
        pki::describe(&crt).map_err(|e| anyhow::anyhow!("{origin}: contexts.{name}.crt: {e}"))?;
    let none = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("Current context:     {name}");
    println!("Nodes:               {}", none(&ctx.nodes));
    println!("Endpoints:           {}", none(&ctx.endpoints));
    println!("Roles:               {}", none(&cert.organizations));
    let fmt = time::format_description::well_known::Rfc3339;
    let expires = cert.not_after.format(&fmt).unwrap_or_default();
    let left = (cert.not_after - time::OffsetDateTime::now_utc()).whole_days();
    println!("Certificate expires: {expires} ({left} days from now)");
    Ok(ExitCode::SUCCESS)
}
