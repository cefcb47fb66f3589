//! Where an image comes from: the registry of its reference, mirrors and credentials from
//! `machine.registries` (the config crate's `Registries`), and the client settings to
//! reach each endpoint (plain HTTP for loopback registries, as containerd does).

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use ros_config::{Registries, RegistryConfig};

/// One place to try pulling an image from.
pub struct Endpoint {
    /// The host (and port) contacted; the mirror's or the image's own registry.
    pub host: String,
    pub reference: Reference,
    pub auth: RegistryAuth,
    pub client: Client,
}

/// Reads the `--registries-config` file (YAML of `machine.registries`).
pub fn load(path: &std::path::Path) -> Result<Registries> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--registries-config {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| {
        format!(
            "--registries-config {}: not a registries config",
            path.display()
        )
    })
}

/// Loopback registries speak plain HTTP (containerd does the same for localhost).
fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints for `image` in the order they are tried: mirrors, then the registry
/// itself unless a mirror entry says `skipFallback`. Credentials from the pod's pull
/// secrets (`pod_auth`, by host) come before those of the registries config.
pub fn endpoints(
    registries: &Registries,
    image: &str,
    pod_auth: &super::secrets::PodCredentials,
) -> Result<Vec<Endpoint>> {
    // reqwest (under oci-client) takes the process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference: Reference = image
        .parse()
        .with_context(|| format!("image {image:?}: not a valid reference"))?;
    let registry = reference.registry().to_string();
    let mirror = registries
        .mirrors
        .get(&registry)
        .or_else(|| registries.mirrors.get("*"));
    let mut out = Vec::new();
    for url in mirror.map(|m| m.endpoints.as_slice()).unwrap_or_default() {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            anyhow!("mirror endpoint {url:?} of {registry}: no http(s):// scheme")
        })?;
        let host = rest.trim_end_matches('/').to_string();
        let mut r = reference.clone();
        r.set_mirror_registry(host.clone());
        out.push(endpoint(registries, pod_auth, host, r, scheme == "http")?);
    }
    if !mirror.is_some_and(|m| m.skip_fallback) {
        let http = is_loopback(&registry);
        out.push(endpoint(registries, pod_auth, registry, reference, http)?);
    }
    Ok(out)
}

fn endpoint(
    registries: &Registries,
    pod_auth: &super::secrets::PodCredentials,
    host: String,
    reference: Reference,
    http: bool,
) -> Result<Endpoint> {
    let settings = registries.config.get(&host).cloned().unwrap_or_default();
    Ok(Endpoint {
        auth: match pod_auth.get(&host) {
            Some(a) => a.clone(),
            None => auth(&settings).with_context(|| format!("registries config for {host}"))?,
        },
        client: Client::new(
            client_config(&settings, http)
                .with_context(|| format!("registries config for {host}: tls"))?,
        ),
        host,
        reference,
    })
}

fn auth(settings: &RegistryConfig) -> Result<RegistryAuth> {
    let Some(a) = &settings.auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(u), Some(p)) = (&a.username, &a.password) {
        return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    if let Some(encoded) = &a.auth {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("auth.auth: not base64")?;
        let text = String::from_utf8(raw).context("auth.auth: not UTF-8")?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| anyhow!("auth.auth: expected base64 of username:password"))?;
        return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
    }
    if let Some(token) = &a.identity_token {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    Ok(RegistryAuth::Anonymous)
}

fn client_config(settings: &RegistryConfig, http: bool) -> Result<ClientConfig> {
    let mut config = ClientConfig {
        protocol: if http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        ..Default::default()
    };
    if let Some(tls) = &settings.tls {
        config.accept_invalid_certificates = tls.insecure_skip_verify;
        if let Some(ca) = &tls.ca {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca.trim())
                .context("tls.ca: not base64")?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("docker.io"));
    }

    #[test]
    fn mirrors_come_first_and_fallback_is_optional() {
        let yaml = "mirrors:
  docker.io:
    endpoints: [\"http://127.0.0.1:5001\", \"https://mirror.example\"]
config:
  mirror.example:
    auth: {username: u, password: p}
";
        let mut r: Registries = serde_yaml_ng::from_str(yaml).unwrap();
        let e = endpoints(&r, "docker.io/library/busybox:1", &Default::default()).unwrap();
        let hosts: Vec<&str> = e.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5001", "mirror.example", "docker.io"]);
        assert_eq!(e[0].reference.resolve_registry(), "127.0.0.1:5001");
        assert!(matches!(e[1].auth, RegistryAuth::Basic(ref u, _) if u == "u"));
        assert!(matches!(e[2].auth, RegistryAuth::Anonymous));
        r.mirrors.get_mut("docker.io").unwrap().skip_fallback = true;
        assert_eq!(
            endpoints(&r, "busybox:1", &Default::default())
                .unwrap()
                .len(),
            2
        );
        // Other registries have no mirror.
        let e = endpoints(&r, "127.0.0.1:5000/app:1", &Default::default()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].host, "127.0.0.1:5000");
    }

    #[test]
    fn encoded_auth_is_decoded() {
        let yaml = "config:\n  r.example:\n    auth: {auth: dXNlcjpwYXNz}\n";
        let r: Registries = serde_yaml_ng::from_str(yaml).unwrap();
        let e = endpoints(&r, "r.example/app:1", &Default::default()).unwrap();
        assert!(matches!(&e[0].auth, RegistryAuth::Basic(u, p) if u == "user" && p == "pass"));
    }
}
