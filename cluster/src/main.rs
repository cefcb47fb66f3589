//! `cluster`: the control plane (`server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cluster", version, about = "ros control plane and node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the store (SQLite under --data-dir) and the API server.
    Server {
        /// Directory for the database, certificates and the admin kubeconfig.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address the API server listens on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Range Service ClusterIPs are allocated from.
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cidr: ipnet::Ipv4Net,
        /// Extra DNS names or IP addresses for the serving certificate (repeatable).
        #[arg(long = "tls-san")]
        tls_sans: Vec<String>,
        /// Run only the API server, without the in-process scheduler and controller manager.
        #[arg(long)]
        disable_controllers: bool,
        /// Range node pod CIDRs (one /24 per node) are allocated from.
        #[arg(long, default_value = "10.244.0.0/16")]
        cluster_cidr: ipnet::Ipv4Net,
    },
    /// Run the node agent: register the Node and run its pods through containerd.
    Agent(cluster::agent::Options),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Agent(opts) => tokio::select! {
                r = cluster::agent::run(opts) => r,
                _ = sigterm() => Ok(()),
            },
            Command::Server {
                data_dir,
                listen,
                service_cidr,
                tls_sans,
                disable_controllers,
                cluster_cidr,
            } => {
                std::fs::create_dir_all(&data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                let db = data_dir.join("state.db");
                let store = cluster::store::sqlite::SqliteStore::open(&db)
                    .await
                    .with_context(|| format!("opening the store {}", db.display()))?;
                let opts = cluster::apiserver::Options {
                    data_dir,
                    listen,
                    service_cidr,
                    tls_sans,
                };
                let running = cluster::apiserver::start(opts, Arc::new(store)).await?;
                if !disable_controllers {
                    let client =
                        cluster::controllers::manager::client_from_kubeconfig(&running.kubeconfig)
                            .await?;
                    let copts = cluster::controllers::Options {
                        cluster_cidr,
                        ..Default::default()
                    };
                    cluster::controllers::manager::spawn(client, copts, Default::default());
                }
                tokio::select! {
                    r = running.wait() => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                    _ = sigterm() => Ok(()),
                }
            }
        }
    })
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
