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
        /// The cluster CA certificate (PEM) to use instead of generating one.
        #[arg(long, value_name = "FILE", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The cluster CA's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// The key that signs service-account tokens (PEM) instead of a generated one.
        #[arg(long, value_name = "FILE")]
        service_account_key: Option<PathBuf>,
        /// Run the cluster DNS server on this UDP and TCP address (port 0: any free port).
        #[arg(long, value_name = "ADDR:PORT")]
        dns_listen: Option<SocketAddr>,
        /// The cluster DNS domain.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
        /// Resolvers for names outside the cluster (repeatable; default: resolv.conf's).
        #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = parse_upstream)]
        dns_upstreams: Vec<SocketAddr>,
        /// The resolv.conf whose nameservers are the upstreams when no --dns-upstream is given.
        #[arg(long, default_value = "/etc/resolv.conf")]
        resolv_conf: PathBuf,
        /// This server's address in the kube-dns endpoints (default: --advertise-address,
        /// else the --dns-listen address, else the address of the default route's interface).
        #[arg(long, value_name = "IP")]
        dns_advertise_address: Option<std::net::IpAddr>,
        /// This server's address in the endpoints of the `kubernetes` Service (and of kube-dns
        /// unless --dns-advertise-address is given); default: the --listen address, or the
        /// address of the default route's interface.
        #[arg(long, value_name = "IP")]
        advertise_address: Option<std::net::IpAddr>,
        /// Seconds a client has for its TLS handshake (at most 10) and each request's headers;
        /// also how long a kept-alive connection may sit idle.
        #[arg(long, value_name = "SECONDS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        header_read_timeout: u64,
        /// Connections accepted but without a first request yet, at most; past that new
        /// connections wait in the listen backlog.
        #[arg(long, value_name = "N", default_value_t = cluster::apiserver::connections::DEFAULT_MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_pending_connections: usize,
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
                ca_cert,
                ca_key,
                service_account_key,
                dns_listen,
                cluster_domain,
                dns_upstreams,
                resolv_conf,
                dns_advertise_address,
                advertise_address,
                header_read_timeout,
                max_pending_connections,
            } => {
                raise_open_files_limit();
                std::fs::create_dir_all(&data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                cluster::private_files::secure_data_dir(&data_dir)?;
                install_given_pki(
                    &data_dir,
                    ca_cert.as_deref().zip(ca_key.as_deref()),
                    service_account_key.as_deref(),
                )?;
                let db = data_dir.join("state.db");
                let store = ros_store::sqlite::SqliteStore::open(&db)
                    .await
                    .with_context(|| format!("opening the store {}", db.display()))?;
                let opts = cluster::apiserver::Options {
                    data_dir,
                    listen,
                    service_cidr,
                    tls_sans,
                    connections: cluster::apiserver::connections::ConnectionLimits {
                        header_timeout: std::time::Duration::from_secs(header_read_timeout),
                        max_pending: max_pending_connections,
                    },
                };
                let running = cluster::apiserver::start(opts, Arc::new(store)).await?;
                announce_apiserver(&running, advertise_address).await?;
                if !disable_controllers {
                    let client =
                        cluster::controllers::manager::client_from_kubeconfig(&running.kubeconfig)
                            .await?;
                    let copts = cluster::controllers::Options {
                        cluster_cidr,
                        root_ca: Some(cluster::controllers::manager::root_ca_from_kubeconfig(
                            &running.kubeconfig,
                        )?),
                        ..Default::default()
                    };
                    cluster::controllers::manager::spawn(client, copts, Default::default());
                }
                let _dns = match dns_listen {
                    Some(listen) => Some(
                        start_dns(
                            &running.kubeconfig,
                            listen,
                            cluster_domain,
                            dns_upstreams,
                            &resolv_conf,
                            dns_advertise_address.or(advertise_address),
                            service_cidr,
                        )
                        .await?,
                    ),
                    None => None,
                };
                tokio::select! {
                    r = running.wait() => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                    _ = sigterm() => Ok(()),
                }
            }
        }
    })
}

/// Copies a CA and service-account key given as files into the server's PKI directory.
fn install_given_pki(
    data_dir: &std::path::Path,
    ca: Option<(&std::path::Path, &std::path::Path)>,
    sa_key: Option<&std::path::Path>,
) -> Result<()> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("{flag} {}", p.display()))
    };
    let ca = match ca {
        Some((crt, key)) => Some((read("--ca-cert", crt)?, read("--ca-key", key)?)),
        None => None,
    };
    let sa = match sa_key {
        Some(p) => Some(read("--service-account-key", p)?),
        None => None,
    };
    cluster::apiserver::pki::install_given(
        &data_dir.join("pki"),
        ca.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        sa.as_deref(),
    )
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("--dns-upstream {s:?}: expected IP or IP:PORT"))
}

/// Starts the cluster DNS server and keeps the kube-dns Service pointing at it.
async fn start_dns(
    kubeconfig: &std::path::Path,
    listen: SocketAddr,
    domain: String,
    upstreams: Vec<SocketAddr>,
    resolv_conf: &std::path::Path,
    advertise: Option<std::net::IpAddr>,
    service_cidr: ipnet::Ipv4Net,
) -> Result<cluster::dns::Running> {
    let client = cluster::controllers::manager::client_from_kubeconfig(kubeconfig).await?;
    let opts = cluster::dns::Options {
        listen,
        domain,
        upstreams,
        resolv_conf: Some(resolv_conf.to_path_buf()),
    };
    let running = cluster::dns::start(client.clone(), opts).await?;
    let address = cluster::announce::advertise_address(advertise, listen.ip())
        .context("--dns-advertise-address: not given and no default route to take it from")?;
    let publish = cluster::dns::service::Publish {
        cluster_ip: cluster::dns::service::cluster_dns_ip(service_cidr)
            .context("--service-cidr: too small for the cluster DNS address (its 10th)")?,
        address,
        port: running.addr.port(),
    };
    tokio::spawn(cluster::dns::service::run(client, publish));
    Ok(running)
}

/// Keeps this API server in the endpoints of the `kubernetes` Service.
async fn announce_apiserver(
    running: &cluster::apiserver::Running,
    advertise: Option<std::net::IpAddr>,
) -> Result<()> {
    let Some(address) = cluster::announce::advertise_address(advertise, running.addr.ip()) else {
        tracing::warn!(
            "no --advertise-address and no default route: the kubernetes Service gets no endpoints"
        );
        return Ok(());
    };
    let client = cluster::controllers::manager::client_from_kubeconfig(&running.kubeconfig).await?;
    tracing::info!(
        "announcing {address}:{} in the kubernetes Service's endpoints",
        running.addr.port()
    );
    tokio::spawn(cluster::announce::run(
        client,
        cluster::announce::kubernetes(address, running.addr.port()),
    ));
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Every client connection costs a descriptor: take the hard limit, as Go servers do.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("raising the open files limit to {hard}: {e}");
    }
}
