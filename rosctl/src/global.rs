//! Flags every command accepts (like talosctl's): which rosconfig, context, endpoints, nodes.

use anyhow::Context as _;
use clap::Args;
use ros_config::rosconfig::{self, RosConfig};
use std::path::PathBuf;

const GLOBAL: &str = "Global options";

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Client config file [default: $ROSCONFIG, then ~/.ros/config]
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub rosconfig: Option<PathBuf>,
    /// Context of the rosconfig to use [default: its current context]
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub context: Option<String>,
    /// Nodes to act on, comma-separated [default: the context's nodes]
    #[arg(
        short = 'n',
        long,
        global = true,
        value_delimiter = ',',
        value_name = "NODES",
        help_heading = GLOBAL
    )]
    pub nodes: Vec<String>,
    /// Endpoints to connect through, comma-separated [default: the context's endpoints]
    #[arg(
        short = 'e',
        long,
        global = true,
        value_delimiter = ',',
        value_name = "ENDPOINTS",
        help_heading = GLOBAL
    )]
    pub endpoints: Vec<String>,
}

/// Everything needed to call the machine API: the context with flag overrides applied.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Name of the context used.
    pub context: String,
    pub endpoints: Vec<String>,
    /// Empty means "the endpoint itself".
    pub nodes: Vec<String>,
    pub ca_pem: String,
    pub crt_pem: String,
    pub key_pem: String,
}

impl GlobalArgs {
    /// The rosconfig file path (`--rosconfig`, `$ROSCONFIG`, `~/.ros/config`).
    pub fn rosconfig_path(&self) -> anyhow::Result<PathBuf> {
        Ok(rosconfig::resolve_path(self.rosconfig.as_deref())?)
    }

    /// Loads the rosconfig (it must exist).
    pub fn load_rosconfig(&self) -> anyhow::Result<(PathBuf, RosConfig)> {
        let path = self.rosconfig_path()?;
        if !path.exists() {
            anyhow::bail!(
                "rosconfig {} does not exist (generate one with `rosctl gen config`, then pass --rosconfig or merge it with `rosctl config merge`)",
                path.display()
            );
        }
        let cfg = RosConfig::load(&path)?;
        Ok((path, cfg))
    }

    /// The selected context with `-e`/`-n` applied, and its credentials as PEM.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let (path, cfg) = self.load_rosconfig()?;
        let origin = path.display().to_string();
        let (name, ctx) = cfg.context(self.context.as_deref(), &origin)?;
        let field = |f: &str| format!("{origin}: contexts.{name}.{f}");
        let endpoints = if self.endpoints.is_empty() {
            ctx.endpoints.clone()
        } else {
            self.endpoints.clone()
        };
        if endpoints.is_empty() {
            anyhow::bail!(
                "no endpoints: pass -e/--endpoints or run `rosctl config endpoint ADDR` (context {name:?} in {origin})"
            );
        }
        Ok(Connection {
            context: name.to_string(),
            endpoints,
            nodes: if self.nodes.is_empty() {
                ctx.nodes.clone()
            } else {
                self.nodes.clone()
            },
            ca_pem: ctx.ca_pem().with_context(|| field("ca"))?,
            crt_pem: ctx.crt_pem().with_context(|| field("crt"))?,
            key_pem: ctx.key_pem().with_context(|| field("key"))?,
        })
    }
}
