//! The trust port (50001): a node holding the machine CA key signs the API server certificate
//! of a node that proves itself with the machine token (workers do not hold the CA key); a
//! control plane holding the cluster CA key signs Kubernetes node identities for nodes that
//! prove themselves with the cluster token.

use crate::machine::Machine;
use ros_api::machine::trust_service_server::TrustService;
use ros_api::machine::{CertificateReply, CertificateRequest, NodeCertificateRequest};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Trust {
    pub machine: Arc<Machine>,
}

#[tonic::async_trait]
impl TrustService for Trust {
    async fn certificate(
        &self,
        req: Request<CertificateRequest>,
    ) -> Result<Response<CertificateReply>, Status> {
        let r = req.into_inner();
        let running = self
            .machine
            .running()
            .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
        let m = &running.config.machine;
        if !m.ca.has_key() {
            return Err(Status::failed_precondition(
                "this node does not hold the machine CA key",
            ));
        }
        if m.token.is_empty() || !super::same_secret(&r.token, &m.token) {
            return Err(Status::permission_denied(
                "token: does not match machine.token",
            ));
        }
        let (ca, key) = match (m.ca.crt_pem(), m.ca.key_pem()) {
            (Ok(c), Ok(k)) => (c, k),
            _ => return Err(Status::internal("machine.ca is not usable")),
        };
        let crt_pem = crate::tls::sign_server_csr(&ca, &key, &r.csr_pem)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        self.machine.events.publish(
            "machine",
            "signed a machine API certificate for another node",
        );
        Ok(Response::new(CertificateReply {
            node: self.machine.node_name(),
            crt_pem,
        }))
    }

    async fn node_certificate(
        &self,
        req: Request<NodeCertificateRequest>,
    ) -> Result<Response<CertificateReply>, Status> {
        let r = req.into_inner();
        let crt_pem = crate::cluster::sign_node_certificate(
            &self.machine,
            &r.token,
            &r.csr_pem,
            &r.node_name,
        )?;
        Ok(Response::new(CertificateReply {
            node: self.machine.node_name(),
            crt_pem,
        }))
    }
}
