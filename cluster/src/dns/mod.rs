//! Cluster DNS, as k3s ships CoreDNS: a DNS server in `cluster server` answering the cluster
//! domain from watches on Services, EndpointSlices and Pods ([`zone`]) and forwarding
//! everything else to the node's resolvers ([`forward`]), over UDP and TCP ([`serve`]); and
//! the `kube-dns` Service whose endpoints are the servers running it ([`service`]).

pub mod answer;
pub mod forward;
pub mod serve;
pub mod service;
pub mod udp_reply;
pub mod watch;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use hickory_proto::rr::Name;

/// How the DNS server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// UDP and TCP address (port 0: a free port, the same for both).
    pub listen: SocketAddr,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Where questions outside the cluster go; none: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    pub resolv_conf: Option<std::path::PathBuf>,
}

/// A running DNS server; its tasks stop when it is dropped.
pub struct Running {
    /// The address bound (UDP and TCP).
    pub addr: SocketAddr,
    _tasks: AbortOnDrop,
}

/// Aborts tasks when dropped.
pub struct AbortOnDrop(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The cluster domain as a DNS name (checked, fully qualified, lower case).
pub fn domain_name(domain: &str) -> Result<Name> {
    let mut name = Name::from_ascii(domain.trim_end_matches('.'))
        .with_context(|| format!("--cluster-domain {domain:?}: not a DNS name"))?;
    anyhow::ensure!(
        name.num_labels() > 0,
        "--cluster-domain {domain:?}: not a DNS name"
    );
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Binds the listeners and starts answering (SERVFAIL until the watches have listed once).
pub async fn start(client: kube::Client, opts: Options) -> Result<Running> {
    let domain = domain_name(&opts.domain)?;
    let (udp, tcp) = serve::bind(opts.listen).await?;
    let addr = udp.local_addr()?;
    let forwarder = forward::Forwarder {
        fixed: opts.upstreams,
        resolv_conf: opts.resolv_conf,
        own: addr,
    };
    if forwarder.upstreams().is_empty() {
        tracing::warn!("cluster DNS: no upstream resolvers yet; names outside the cluster fail");
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    let responder = Arc::new(answer::Responder {
        zone: rx,
        forwarder,
    });
    let tasks = vec![
        tokio::spawn(watch::run(client, domain.clone(), tx)),
        tokio::spawn(serve::udp(udp, responder.clone())),
        tokio::spawn(serve::tcp(tcp, responder)),
    ];
    tracing::info!("cluster DNS for {domain} listening on {addr} (UDP and TCP)");
    Ok(Running {
        addr,
        _tasks: AbortOnDrop(tasks),
    })
}
