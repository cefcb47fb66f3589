//! Who may open an exec session on this node: the API server, which presents a client
//! certificate from the cluster CA in `system:masters` (as kube-apiserver's
//! `--kubelet-client-certificate`). The agent trusts the CA its kubeconfig names. Anyone else
//! reaching the kubelet port gets 403: running commands in containers is not open to the
//! network.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;

/// The user name of the API server's certificate for nodes.
pub const API_SERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

/// The cluster CA certificates from `kubeconfig` (inline data or a file).
pub async fn cluster_ca(kubeconfig: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    Ok(config
        .root_cert
        .unwrap_or_default()
        .into_iter()
        .map(CertificateDer::from)
        .collect())
}

/// Accepts connections without a certificate (log reads) and verifies the ones that bring
/// one against `ca`.
pub fn client_verifier(ca: &[CertificateDer<'static>]) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .context("the cluster CA from the kubeconfig")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .context("the kubelet port's client certificate verifier")
}

/// Whether the (already verified) client certificate may exec: one in `system:masters`.
pub fn may_exec(peer: Option<&CertificateDer<'_>>) -> bool {
    peer.and_then(|c| crate::apiserver::auth::user_from_certificate(c))
        .is_some_and(|u| u.is_admin())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::pki;
    use rustls::pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn only_masters_certificates_may_exec() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::load_or_create(dir.path(), &[]).unwrap();
        let (api, _) = pki::issue_client_with(&ca, API_SERVER_CLIENT, &[pki::ADMIN_GROUP]).unwrap();
        let (node, _) = pki::issue_client_with(&ca, "system:node:n1", &["system:nodes"]).unwrap();
        assert!(may_exec(Some(&der(&api))));
        assert!(!may_exec(Some(&der(&node))));
        assert!(!may_exec(None));
        assert!(client_verifier(&[der(&ca.ca_cert)]).is_ok());
    }
}
