//! `rosctl config new`: a new rosconfig whose client certificate a node holding the machine
//! CA key signs (GenerateClientConfiguration, os:admin only), with the given roles and
//! lifetime — as `talosctl config new`, but one year by default rather than ten.

use super::{Targets, fanout};
use crate::duration::parse_duration;
use crate::global::GlobalArgs;
use clap::Args;
use ros_api::machine::GenerateClientConfigurationRequest;
use ros_config::rosconfig::{Context, RosConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// One year: long enough not to surprise, short enough that a lost file stops working.
pub const DEFAULT_CRT_TTL: &str = "8760h";

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Where to write the new rosconfig.
    #[arg(default_value = "rosconfig")]
    pub path: PathBuf,
    /// Roles of the new certificate (os:admin, os:operator, os:reader).
    #[arg(long, value_delimiter = ',', default_value = "os:admin")]
    pub roles: Vec<String>,
    /// How long the certificate is valid (e.g. 24h, 30d, 8760h).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CRT_TTL, value_parser = parse_duration)]
    pub crt_ttl: Duration,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: &NewArgs, g: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if a.crt_ttl.is_zero() {
        anyhow::bail!("--crt-ttl: must be longer than zero");
    }
    if a.path.exists() && !a.force {
        anyhow::bail!("{} exists: pass --force to overwrite it", a.path.display());
    }
    let conn = g.connection()?;
    let t = Targets::resolve(g, false)?;
    let node = t
        .nodes
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no node to ask: pass -n"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply = runtime.block_on(async {
        let mut client = t.creds.connect(&node).await?;
        client
            .generate_client_configuration(GenerateClientConfigurationRequest {
                roles: a.roles.clone(),
                crt_ttl_seconds: i64::try_from(a.crt_ttl.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| anyhow::anyhow!("node {node}: {}", fanout::status_error(s)))
    })?;
    let mut context = Context::from_pem(
        conn.endpoints.clone(),
        &reply.ca_pem,
        &reply.crt_pem,
        &reply.key_pem,
    );
    context.nodes = conn.nodes.clone();
    let config = RosConfig {
        context: conn.context.clone(),
        contexts: [(conn.context.clone(), context)].into(),
    };
    config.save(&a.path)?;
    eprintln!(
        "rosconfig with roles {} (valid {}h), signed by {}, written to {}",
        a.roles.join(","),
        a.crt_ttl.as_secs() / 3600,
        reply.node,
        a.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
