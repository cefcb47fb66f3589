//! The etcd members a client talks to: one lazily connected gRPC channel per endpoint, with
//! connect timeout and HTTP/2 keep-alive, and TLS when configured.
//!
//! Fail-over rather than balancing: calls go to the member in use until it answers
//! `Unavailable` (unreachable, or no leader), then to the next. A dead member so costs one
//! failed call instead of every other call, as random balancing over lazy connections would.
//! Reads are retried on the next member at once; writes are not (a write whose answer was
//! lost may have been applied), the next call goes to the next member.
//!
//! TLS: tonic's own rustls support (`tls-ring`, `ClientTlsConfig`) rather than our own
//! hyper-util/tokio-rustls connector as in `ros-api`: it already takes a CA, an optional client
//! identity and a server-name override, which is all etcd needs, in a few lines.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::StoreError;

/// Give up connecting to a member after this long (then the call fails over).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections too, so a member that vanished is noticed (and its
/// watches fail) within interval + timeout rather than at the next TCP timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS material for talking to etcd (PEM text).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate.
    pub ca_pem: String,
    /// A client certificate and key, when etcd requires client authentication.
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    /// The name to check in the server certificate, if not the endpoint's host.
    pub server_name: Option<String>,
}

pub(super) struct Members {
    /// (endpoint URL, channel), in the order given.
    channels: Vec<(String, Channel)>,
    /// Index of the member in use.
    current: AtomicUsize,
}

impl Members {
    /// Channels to `endpoints` (`http://host:port`, `https://host:port` with `tls`, or
    /// `host:port`, which means https when `tls` is given). Connects lazily: an unreachable
    /// member shows at the first call.
    pub(super) fn new(endpoints: &[String], tls: Option<EtcdTls>) -> Result<Members, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Other("etcd endpoints: none given".into()));
        }
        let tls = tls.map(tls_config).transpose()?;
        let channels = endpoints
            .iter()
            .map(|url| Ok((url.clone(), endpoint(url, tls.as_ref())?.connect_lazy())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Members {
            channels,
            current: AtomicUsize::new(0),
        })
    }

    /// The member in use: its index (for [`Members::failed`]) and channel.
    pub(super) fn current(&self) -> (usize, Channel) {
        let index = self.current.load(Ordering::Relaxed) % self.channels.len();
        (index, self.channels[index].1.clone())
    }

    /// Moves on from member `index` if it is still the one in use (calls failing at the same
    /// time move on once, not once each).
    pub(super) fn failed(&self, index: usize, status: &Status) {
        if status.code() != Code::Unavailable || self.channels.len() < 2 {
            return;
        }
        let next = (index + 1) % self.channels.len();
        if self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                from = %self.channels[index].0,
                to = %self.channels[next].0,
                "etcd member unavailable ({}), failing over",
                status.message()
            );
        }
    }

    /// Runs a call that may safely run twice on the member in use, then on each next one
    /// while the answer is `Unavailable`.
    pub(super) async fn read<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempts = self.channels.len();
        loop {
            let (index, channel) = self.current();
            match call(channel).await {
                Err(status) if status.code() == Code::Unavailable && attempts > 1 => {
                    self.failed(index, &status);
                    attempts -= 1;
                }
                Err(status) => {
                    self.failed(index, &status);
                    return Err(status);
                }
                ok => return ok,
            }
        }
    }

    /// Runs a call once on the member in use; if that member is unavailable the next call
    /// goes to the next one.
    pub(super) async fn write<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let (index, channel) = self.current();
        let result = call(channel).await;
        if let Err(status) = &result {
            self.failed(index, status);
        }
        result
    }
}

fn tls_config(tls: EtcdTls) -> Result<ClientTlsConfig, StoreError> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(tls.ca_pem));
    match (tls.client_cert_pem, tls.client_key_pem) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
        (None, None) => {}
        _ => {
            return Err(StoreError::Other(
                "etcd tls: client_cert_pem and client_key_pem must be given together".into(),
            ));
        }
    }
    if let Some(name) = tls.server_name {
        config = config.domain_name(name);
    }
    Ok(config)
}

fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, StoreError> {
    let bad = |why: &str| StoreError::Other(format!("etcd endpoint {url:?}: {why}"));
    let uri = match (url.split_once("://"), tls) {
        (Some(("http", _)), Some(_)) => {
            return Err(bad("TLS settings are given, use https://"));
        }
        (Some(("https", _)), None) => {
            return Err(bad("https:// needs TLS settings (at least the CA)"));
        }
        (Some(("http" | "https", _)), _) => url.to_string(),
        (Some((scheme, _)), _) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        (None, Some(_)) => format!("https://{url}"),
        (None, None) => format!("http://{url}"),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| bad(&format!("TLS settings: {e}")))?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> EtcdTls {
        EtcdTls {
            ca_pem: String::new(),
            client_cert_pem: None,
            client_key_pem: None,
            server_name: None,
        }
    }

    fn error_of(endpoints: &[&str], tls: Option<EtcdTls>) -> String {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        match Members::new(&endpoints, tls) {
            Ok(_) => panic!("{endpoints:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn endpoints_are_checked_against_the_tls_settings() {
        assert!(error_of(&[], None).contains("none given"));
        assert!(error_of(&["https://127.0.0.1:2379"], None).contains("needs TLS settings"));
        assert!(error_of(&["http://127.0.0.1:2379"], Some(tls())).contains("use https://"));
        assert!(error_of(&["unix:///run/etcd.sock"], None).contains("unsupported scheme"));
        let half = EtcdTls {
            client_cert_pem: Some("cert".into()),
            ..tls()
        };
        assert!(error_of(&["127.0.0.1:2379"], Some(half)).contains("given together"));
        let members = Members::new(&["127.0.0.1:2379".into(), "127.0.0.2:2379".into()], None)
            .expect("scheme-less endpoints mean http without TLS");
        assert_eq!(members.current().0, 0);
    }

    #[tokio::test]
    async fn only_unavailable_members_are_left() {
        let members = Members::new(&["127.0.0.1:1".into(), "127.0.0.1:2".into()], None).unwrap();
        members.failed(0, &Status::not_found("no such key"));
        assert_eq!(members.current().0, 0, "a normal error keeps the member");
        members.failed(0, &Status::unavailable("connection refused"));
        assert_eq!(members.current().0, 1);
        // A second report about member 0 (a call that started before) changes nothing.
        members.failed(0, &Status::unavailable("connection refused"));
        assert_eq!(members.current().0, 1);
        members.failed(1, &Status::unavailable("connection refused"));
        assert_eq!(members.current().0, 0, "wraps around");
    }
}
