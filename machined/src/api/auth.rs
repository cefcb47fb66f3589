//! Who may call what. Every gRPC method is listed here with the access it needs; a method not
//! listed is refused. The caller's role comes from its client certificate's organisation
//! (`os:admin`, `os:operator`, `os:reader`); in maintenance mode there is no client certificate
//! and only the maintenance methods are allowed.

use crate::machine::{Machine, Mode};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The caller's role, stored in request extensions for the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A client on a maintenance-mode node (no certificate).
    Maintenance,
    Reader,
    Operator,
    Admin,
}

impl Role {
    pub fn from_organisation(org: &str) -> Option<Role> {
        match org {
            "os:admin" => Some(Role::Admin),
            "os:operator" => Some(Role::Operator),
            "os:reader" => Some(Role::Reader),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Maintenance => "maintenance",
            Role::Reader => "os:reader",
            Role::Operator => "os:operator",
            Role::Admin => "os:admin",
        }
    }

    /// Whether this caller may see secrets.
    pub fn sees_secrets(self) -> bool {
        self == Role::Admin
    }
}

/// The least role a method needs, and whether it is allowed in maintenance mode.
pub fn policy(method: &str) -> Option<(Role, bool)> {
    use Role::*;
    Some(match method {
        "Version" => (Reader, true),
        "ApplyConfiguration" => (Admin, true),
        // Discovery: readable in maintenance mode (resource calls further limit the types).
        "Disks" | "NetworkDeviceStats" | "ResourceTypes" | "GetResource" | "ListResources" => {
            (Reader, true)
        }
        "GetMachineConfig" | "WatchResources" | "ServiceList" | "Logs" | "Dmesg" | "Hostname"
        | "Memory" | "LoadAvg" | "Processes" | "Mounts" | "Time" | "Events" => (Reader, false),
        "ServiceStart" | "ServiceStop" | "ServiceRestart" | "Reboot" | "Shutdown" => {
            (Operator, false)
        }
        "Reset" | "Bootstrap" | "Kubeconfig" | "GenerateClientConfiguration" => (Admin, false),
        _ => return None,
    })
}

pub const MAINTENANCE_DENIED: &str = "node is in maintenance mode";

/// Decides the role of a call, or the status refusing it.
pub fn authorize(mode: Mode, method: &str, peer_role: Option<Role>) -> Result<Role, tonic::Status> {
    let Some((needed, in_maintenance)) = policy(method) else {
        return Err(tonic::Status::permission_denied(format!(
            "method {method} is not allowed"
        )));
    };
    match mode {
        Mode::Maintenance => {
            if in_maintenance {
                Ok(Role::Maintenance)
            } else {
                Err(tonic::Status::permission_denied(format!(
                    "{MAINTENANCE_DENIED}: only Version, ApplyConfiguration and discovery calls are allowed"
                )))
            }
        }
        Mode::Configured => {
            let role = peer_role.ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "a client certificate with organisation os:admin, os:operator or os:reader is required",
                )
            })?;
            if role >= needed {
                Ok(role)
            } else {
                Err(tonic::Status::permission_denied(format!(
                    "{method} needs role {} or higher; the client certificate has {}",
                    needed.as_str(),
                    role.as_str()
                )))
            }
        }
    }
}

/// The highest role named by the organisations of the leaf certificate.
pub fn role_from_cert(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter_map(Role::from_organisation)
        .max()
}

/// The role of a client whose certificate the TLS layer verified against the machine CA:
/// from its organisations, or, with `machine.features.rbac` off, `os:admin` for every such
/// client (as Talos does).
pub fn peer_role(der: &[u8], rbac: bool) -> Option<Role> {
    if rbac {
        role_from_cert(der)
    } else {
        Some(Role::Admin)
    }
}

/// Tower layer applying [`authorize`] to every request before it reaches a handler.
#[derive(Clone)]
pub struct AuthLayer {
    pub machine: Arc<Machine>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            machine: self.machine.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    machine: Arc<Machine>,
}

impl<S> tower::Service<Request<tonic::body::Body>> for Auth<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let leaf = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        let rbac = self
            .machine
            .running()
            .is_none_or(|r| r.config.machine.features.rbac);
        let peer_role = leaf.and_then(|der| peer_role(&der, rbac));
        let role = match authorize(self.machine.mode(), &method, peer_role) {
            Ok(role) => role,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        // A call for another node is forwarded with a client certificate carrying the
        // caller's role, so the target enforces the same permissions.
        let target = req
            .headers_mut()
            .remove(ros_api::client::NODE_HEADER)
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .filter(|t| !self.machine.is_self(t));
        if let Some(target) = target {
            let machine = self.machine.clone();
            return Box::pin(async move {
                Ok(super::proxy::forward(&machine, &target, role, req)
                    .await
                    .unwrap_or_else(|status| status.into_http()))
            });
        }
        req.extensions_mut().insert(role);
        // The clone that was made ready must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_allows_only_listed_methods() {
        assert!(authorize(Mode::Maintenance, "Version", None).is_ok());
        assert!(authorize(Mode::Maintenance, "ApplyConfiguration", None).is_ok());
        assert!(authorize(Mode::Maintenance, "Disks", None).is_ok());
        let err = authorize(Mode::Maintenance, "Reboot", None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains(MAINTENANCE_DENIED));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(authorize(Mode::Configured, "Reboot", Some(Role::Reader)).is_err());
        assert!(authorize(Mode::Configured, "Reboot", Some(Role::Operator)).is_ok());
        assert!(authorize(Mode::Configured, "Reset", Some(Role::Operator)).is_err());
        assert!(authorize(Mode::Configured, "Reset", Some(Role::Admin)).is_ok());
        assert_eq!(
            authorize(Mode::Configured, "Version", None)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(authorize(Mode::Configured, "Unknown", Some(Role::Admin)).is_err());
    }

    #[test]
    fn every_method_in_the_proto_has_a_policy() {
        let proto = include_str!("../../../api/proto/ros/machine/v1/machine.proto");
        // Only MachineService (port 50000); TrustService has its own listener.
        let machine_service = proto.split("service TrustService").next().unwrap();
        let methods: Vec<&str> = machine_service
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .collect();
        assert!(methods.len() > 20);
        for m in methods {
            assert!(policy(m).is_some(), "{m} has no policy");
        }
    }
}
