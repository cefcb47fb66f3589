//! The Kubernetes-compatible API server: HTTPS with client certificates, discovery, OpenAPI,
//! and the REST verbs over the [`ros_store::Store`], for the kinds in [`registry`].
//!
//! Objects are JSON values checked against the typed structs of k8s-openapi and stored under
//! `/registry/<resource>/[<namespace>/]<name>`; a resourceVersion is the store revision.

pub mod auth;
pub mod authz;
pub mod connections;
mod defaults;
pub mod discovery;
mod handlers;
mod http;
mod impersonation;
mod ipalloc;
pub mod kubeconfig;
pub mod managed_fields;
pub(crate) mod namespaces;
pub mod objects;
mod openapi;
mod openapi_v3;
mod patch;
pub mod pki;
mod protobuf;
mod query_options;
pub mod registry;
mod request;
mod reviews;
pub mod sa_admission;
pub mod selectors;
mod server;
pub mod status;
mod storage;
mod table;
mod tls;
pub mod tokens;
mod validation;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use tokio::sync::{Mutex, Notify};

use ros_store::Store;
use status::ApiResult;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the PKI (`pki/`) and the admin kubeconfig (`kubeconfig`) live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub service_cidr: Ipv4Net,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Timeouts and the cap on connections that have not sent a request yet.
    pub connections: connections::ConnectionLimits,
}

/// The shared state of the server.
pub struct ApiServer {
    pub store: Arc<dyn Store>,
    /// The cluster CA (PEM), published in every namespace as ConfigMap kube-root-ca.crt.
    ca_cert: String,
    tokens: tokens::Signer,
    service_ips: ipalloc::ServiceIps,
    ns_kick: Notify,
    event_lease: Mutex<Option<(Instant, i64)>>,
    /// The certificate and key (PEM) this server presents to node agents for exec.
    node_client: std::sync::OnceLock<(String, String)>,
}

impl ApiServer {
    pub fn new(
        store: Arc<dyn Store>,
        service_cidr: Ipv4Net,
        ca_cert: String,
        tokens: tokens::Signer,
    ) -> Self {
        ApiServer {
            store,
            ca_cert,
            tokens,
            service_ips: ipalloc::ServiceIps::new(service_cidr),
            ns_kick: Notify::new(),
            event_lease: Mutex::new(None),
            node_client: std::sync::OnceLock::new(),
        }
    }

    pub(crate) async fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        namespaces::check_open(self, ns).await
    }

    /// The user a bearer token stands for: a service account's, when the token's signature
    /// holds and what it depends on still exists ([`tokens::still_valid`]).
    pub(crate) async fn authenticate_token(&self, token: &str) -> Option<auth::UserInfo> {
        let claims = self.tokens.verify(token)?;
        tokens::still_valid(self, &claims)
            .await
            .then(|| tokens::user_for(&claims))
    }

    pub(crate) fn kick_namespace_finalizer(&self) {
        self.ns_kick.notify_one();
    }

    /// The lease Events are attached to, so they expire (about an hour, as in Kubernetes).
    /// One lease serves all events of a half-hour window.
    pub(crate) async fn event_lease(&self) -> Option<i64> {
        let mut cur = self.event_lease.lock().await;
        if let Some((expires, id)) = *cur
            && expires > Instant::now() + Duration::from_secs(3600)
        {
            return Some(id);
        }
        match self.store.lease_grant(5400).await {
            Ok(id) => {
                *cur = Some((Instant::now() + Duration::from_secs(5400), id));
                Some(id)
            }
            Err(e) => {
                tracing::warn!("granting the events lease: {e}");
                None
            }
        }
    }
}

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Serves until the task ends (it does not, unless aborted).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("the API server task failed")
    }
}

/// Prepares the PKI and kubeconfig, binds, bootstraps the system namespaces and starts
/// serving. The kubeconfig names the address actually bound (useful with port 0).
pub async fn start(opts: Options, store: Arc<dyn Store>) -> Result<Running> {
    let pki_dir = opts.data_dir.join("pki");
    let mut sans = opts.tls_sans.clone();
    if !opts.listen.ip().is_unspecified() {
        sans.push(opts.listen.ip().to_string());
    }
    let pki = pki::load_or_create(&pki_dir, &sans)
        .with_context(|| format!("preparing {}", pki_dir.display()))?;
    let (tls, client_verifier) = tls::server_config(&pki)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let sa_key = rcgen::KeyPair::from_pem(&pki.sa_key).context("parsing pki/sa.key")?;
    let signer = tokens::Signer::from_pkcs8(&sa_key.serialize_der())?;
    let api = Arc::new(ApiServer::new(
        store,
        opts.service_cidr,
        pki.ca_cert.clone(),
        signer,
    ));
    let _ = api.node_client.set(pki::issue_client_with(
        &pki,
        crate::agent::exec::auth::API_SERVER_CLIENT,
        &[pki::ADMIN_GROUP],
    )?);
    namespaces::bootstrap(&api, addr.port())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping namespaces: {}", e.message))?;
    authz::bootstrap::ensure(&api)
        .await
        .map_err(|e| anyhow::anyhow!("creating the default RBAC roles: {}", e.message))?;
    namespaces::spawn_finalizer(api.clone());

    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let kubeconfig = opts.data_dir.join("kubeconfig");
    let text = kubeconfig::render(
        &format!("https://{host}:{}", addr.port()),
        &pki.ca_cert,
        &pki.admin_cert,
        &pki.admin_key,
    );
    ros_config::atomic_write_private(&kubeconfig, text.as_bytes())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;

    let task = tokio::spawn(server::serve(
        listener,
        Arc::new(tls),
        client_verifier,
        api,
        opts.connections,
    ));
    tracing::info!(
        "API server listening on https://{addr}; admin kubeconfig at {}",
        kubeconfig.display()
    );
    Ok(Running {
        addr,
        kubeconfig,
        task,
    })
}
