//! Forwarding a call to another node (`rosctl -e ENDPOINT -n NODE`): the endpoint connects to
//! the node with a client certificate it issues from the machine CA for the caller's role.

use super::auth::Role;
use crate::machine::Machine;
use ros_api::client::{self, Credentials};
use std::sync::Arc;
use tonic::Status;
use tower::Service;

pub async fn forward(
    machine: &Arc<Machine>,
    target: &str,
    role: Role,
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    if role == Role::Maintenance {
        return Err(Status::permission_denied(format!(
            "{}: forwarding to other nodes needs a configured node",
            super::auth::MAINTENANCE_DENIED
        )));
    }
    let running = machine
        .running()
        .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
    let ca = &running.config.machine.ca;
    if !ca.has_key() {
        return Err(Status::failed_precondition(
            "this node does not hold the machine CA key, so it cannot forward calls; use a control-plane node as endpoint",
        ));
    }
    let (crt, key) = match (ca.crt_pem(), ca.key_pem()) {
        (Ok(c), Ok(k)) => (c, k),
        _ => return Err(Status::internal("machine.ca is not usable")),
    };
    let leaf = ros_config::pki::issue_client_cert(&crt, &key, "machined-forward", &[role.as_str()])
        .map_err(|e| Status::internal(format!("issuing the forwarding certificate: {e}")))?;
    let creds = Credentials::Mutual {
        ca_pem: crt,
        crt_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    };
    let mut channel = client::channel(target, &creds)
        .await
        .map_err(|e| Status::unavailable(format!("node {target}: {e:#}")))?;
    tower::ServiceExt::ready(&mut channel)
        .await
        .map_err(|e| Status::unavailable(format!("node {target}: {}", client::error_chain(&e))))?;
    let response = channel
        .call(req)
        .await
        .map_err(|e| Status::unavailable(format!("node {target}: {}", client::error_chain(&e))))?;
    // The connection lives as long as the channel: keep it until the reply body is done
    // (streams such as `logs -f` outlive this function).
    Ok(response.map(|body| {
        tonic::body::Body::new(Hold {
            body,
            _channel: channel,
        })
    }))
}

struct Hold {
    body: tonic::body::Body,
    _channel: tonic::transport::Channel,
}

impl http_body::Body for Hold {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
