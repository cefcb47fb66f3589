//! Just enough of a Kubernetes client to ask `/readyz` through the forwarded port: TLS from
//! the kubeconfig's first cluster and user (client certificate or bearer token), HTTP/1.1.

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct KubeTls {
    config: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

fn field(doc: &serde_yaml_ng::Value, list: &str, inner: &str, key: &str) -> Option<String> {
    doc.get(list)?
        .as_sequence()?
        .first()?
        .get(inner)?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

fn decode(name: &str, b64: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| format!("kubeconfig {name}: not base64"))
}

pub fn client_config(kubeconfig: &str) -> Result<KubeTls> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(kubeconfig).context("kubeconfig: not YAML")?;
    let ca = field(&doc, "clusters", "cluster", "certificate-authority-data")
        .context("kubeconfig: clusters[0].cluster.certificate-authority-data is missing")?;
    let ca = decode("certificate-authority-data", &ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.context("kubeconfig certificate-authority-data: not PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let crt = field(&doc, "users", "user", "client-certificate-data");
    let key = field(&doc, "users", "user", "client-key-data");
    let token = field(&doc, "users", "user", "token");
    let config = match (crt, key) {
        (Some(crt), Some(key)) => {
            let crt = decode("client-certificate-data", &crt)?;
            let key = decode("client-key-data", &key)?;
            let chain = CertificateDer::pem_slice_iter(&crt)
                .collect::<Result<Vec<_>, _>>()
                .context("kubeconfig client-certificate-data: not PEM")?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .context("kubeconfig client-key-data: not a PEM key")?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ if token.is_some() => builder.with_no_client_auth(),
        _ => bail!("kubeconfig: users[0].user has neither a client certificate nor a token"),
    };
    Ok(KubeTls {
        config: Arc::new(config),
        token,
    })
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`.
pub async fn get_status(tls: &KubeTls, port: u16, path: &str) -> Result<u16> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut stream = tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(name, tcp)
        .await
        .context("TLS to the Kubernetes API")?;
    let auth = tls
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut head[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    parse_status(&head[..filled])
}

fn parse_status(head: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(head);
    let code = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok());
    code.with_context(|| format!("not an HTTP response: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n").unwrap(), 200);
        assert_eq!(parse_status(b"HTTP/1.0 503 x").unwrap(), 503);
        assert!(parse_status(b"SSH-2.0").is_err());
    }

    #[test]
    fn kubeconfig_without_credentials_is_refused() {
        let pair = ros_config::pki::generate_ca("k", None).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(&pair.cert_pem);
        let kc = format!(
            "clusters:\n- cluster:\n    certificate-authority-data: {ca}\nusers:\n- user: {{}}\n"
        );
        let e = client_config(&kc).err().unwrap();
        assert!(format!("{e:#}").contains("neither"), "{e:#}");
        let with_token = kc.replace("user: {}", "user: {token: abc}");
        assert!(client_config(&with_token).is_ok());
    }
}
