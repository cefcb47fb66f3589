//! Connecting to machined (used by rosctl and the tests): TLS over TCP with our own rustls config (mutual TLS against the
//! machine CA, or `--insecure` for maintenance mode), HTTP/2 by tonic on top.

use crate::machine::machine_service_client::MachineServiceClient;
use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// A machine API client; requests carry the `x-ros-node` header when they go through another
/// node (see [`connect_via`]).
pub type Client = MachineServiceClient<InterceptedService<Channel, NodeHeader>>;

/// Metadata key naming the node a request is for, when it is sent through an endpoint node.
pub const NODE_HEADER: &str = "x-ros-node";

/// Adds `x-ros-node` to every request when set.
#[derive(Clone, Debug, Default)]
pub struct NodeHeader(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for NodeHeader {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(NODE_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// How to authenticate to the nodes.
#[derive(Clone)]
pub enum Credentials {
    /// Maintenance mode: accept the node's self-signed certificate, present none.
    Insecure,
    /// Verify the node against `ca_pem`, present no certificate (the trust port).
    ServerOnly { ca_pem: String },
    /// Mutual TLS: verify the node against `ca`, present the client certificate.
    Mutual {
        ca_pem: String,
        crt_pem: String,
        key_pem: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn tls_config(creds: &Credentials) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let mut config = match creds {
        Credentials::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
            .with_no_client_auth(),
        Credentials::ServerOnly { ca_pem } => builder
            .with_root_certificates(roots_from(ca_pem)?)
            .with_no_client_auth(),
        Credentials::Mutual {
            ca_pem,
            crt_pem,
            key_pem,
        } => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(cert.context("rosconfig ca: not a PEM certificate")?)?;
            }
            let chain = CertificateDer::pem_slice_iter(crt_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .context("rosconfig crt: not a PEM certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .context("rosconfig key: not a PEM key")?;
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn roots_from(ca_pem: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("ca: not a PEM certificate")?)?;
    }
    Ok(roots)
}

/// A client for the trust port (`host[:port]`, default 50001).
pub async fn trust_client(
    target: &str,
    creds: &Credentials,
) -> anyhow::Result<crate::machine::trust_service_client::TrustServiceClient<Channel>> {
    let (host, port) = split_target(target);
    let port = if target.ends_with(&format!(":{port}")) {
        port
    } else {
        crate::TRUST_PORT
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(crate::machine::trust_service_client::TrustServiceClient::new(channel(&addr, creds).await?))
}

/// `host`, `host:port`, `[v6]:port` -> (host, port) with the machine API port as default.
pub fn split_target(target: &str) -> (String, u16) {
    let default = crate::MACHINE_API_PORT;
    if let Some(rest) = target.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once("]:") {
            return (host.to_string(), port.parse().unwrap_or(default));
        }
        return (rest.trim_end_matches(']').to_string(), default);
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_string(), port.parse().unwrap_or(default))
        }
        _ => (target.to_string(), default),
    }
}

/// Connects to one node.
pub async fn connect(target: &str, creds: &Credentials) -> anyhow::Result<Client> {
    let ch = channel(target, creds).await?;
    Ok(
        MachineServiceClient::with_interceptor(ch, NodeHeader::default())
            .max_decoding_message_size(64 << 20),
    )
}

/// Connects to `endpoint`, which forwards every call to `node`.
pub async fn connect_via(
    endpoint: &str,
    node: &str,
    creds: &Credentials,
) -> anyhow::Result<Client> {
    let ch = channel(endpoint, creds).await?;
    let value = node
        .parse()
        .with_context(|| format!("{node}: not a valid node name"))?;
    Ok(
        MachineServiceClient::with_interceptor(ch, NodeHeader(Some(value)))
            .max_decoding_message_size(64 << 20),
    )
}

/// An HTTP/2 channel to one node over our TLS.
pub async fn channel(target: &str, creds: &Credentials) -> anyhow::Result<Channel> {
    let tls = tokio_rustls::TlsConnector::from(tls_config(creds)?);
    let (host, port) = split_target(target);
    let server_name = ServerName::try_from(host.clone())
        .with_context(|| format!("{target}: not a host name or address"))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let uri = format!("http://{addr}");
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        let addr = addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(uri)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {}", error_chain(&e)))?;
    Ok(channel)
}

/// An error with its sources, so a TLS refusal shows its reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Accepts any server certificate but still checks handshake signatures (maintenance mode has
/// no CA to verify against; `--insecure` says the user accepts that).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_get_the_default_port() {
        assert_eq!(split_target("10.5.0.2"), ("10.5.0.2".into(), 50000));
        assert_eq!(split_target("10.5.0.2:1234"), ("10.5.0.2".into(), 1234));
        assert_eq!(split_target("node-1"), ("node-1".into(), 50000));
        assert_eq!(split_target("[::1]:9"), ("::1".into(), 9));
        assert_eq!(split_target("::1"), ("::1".into(), 50000));
    }
}
