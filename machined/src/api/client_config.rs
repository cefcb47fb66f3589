//! `GenerateClientConfiguration` (`rosctl config new`): a node holding the machine CA key signs
//! a new client identity for the machine API with the requested roles and lifetime, so an
//! admin can hand out a short-lived or read-only rosconfig without the CA key.

use super::auth::Role;
use crate::machine::Machine;
use ros_api::machine::{GenerateClientConfigurationReply, GenerateClientConfigurationRequest};
use ros_config::pki;
use tonic::Status;

/// The subject's common name: the roles say what it may do, this only names the issuer.
const COMMON_NAME: &str = "rosctl-config-new";

pub fn generate(
    machine: &Machine,
    req: &GenerateClientConfigurationRequest,
) -> Result<GenerateClientConfigurationReply, Status> {
    let roles = check_roles(&req.roles)?;
    if req.crt_ttl_seconds <= 0 {
        return Err(Status::invalid_argument(format!(
            "crt_ttl: must be positive (got {}s)",
            req.crt_ttl_seconds
        )));
    }
    let ttl = time::Duration::seconds(req.crt_ttl_seconds);
    let running = machine
        .running()
        .ok_or_else(|| Status::failed_precondition("the node has no config"))?;
    let ca = &running.config.machine.ca;
    if !ca.has_key() {
        return Err(Status::failed_precondition(
            "this node does not hold the machine CA key: ask a control-plane node (-n)",
        ));
    }
    let (ca_pem, ca_key) = match (ca.crt_pem(), ca.key_pem()) {
        (Ok(c), Ok(k)) => (c, k),
        _ => return Err(Status::internal("machine.ca is not usable")),
    };
    // A certificate outliving its CA would stop working with it: refuse rather than mislead.
    let ca_end = pki::describe(&ca_pem)
        .map_err(|e| Status::internal(format!("machine.ca: {e}")))?
        .not_after;
    let end = time::OffsetDateTime::now_utc() + ttl;
    if end > ca_end {
        return Err(Status::invalid_argument(format!(
            "crt_ttl: {}h would outlive the machine CA, which expires {}",
            req.crt_ttl_seconds / 3600,
            ca_end.date()
        )));
    }
    let organizations: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    let leaf = pki::issue(
        &ca_pem,
        &ca_key,
        pki::Usage::Client,
        &pki::LeafRequest {
            common_name: COMMON_NAME,
            organizations: &organizations,
            validity: Some(ttl),
            ..Default::default()
        },
    )
    .map_err(|e| Status::internal(format!("issuing the client certificate: {e}")))?;
    machine.events.publish(
        "machine",
        format!(
            "issued a machine API client certificate (roles {}, valid {}h)",
            organizations.join(","),
            req.crt_ttl_seconds / 3600
        ),
    );
    Ok(GenerateClientConfigurationReply {
        node: machine.node_name(),
        ca_pem,
        crt_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    })
}

/// The requested roles: at least one, each a machine API role, at most two (a certificate
/// here carries at most two organisations).
fn check_roles(requested: &[String]) -> Result<Vec<Role>, Status> {
    if requested.is_empty() {
        return Err(Status::invalid_argument(
            "roles: at least one is needed (os:admin, os:operator or os:reader)",
        ));
    }
    let mut roles = Vec::new();
    for r in requested {
        let role = Role::from_organisation(r).ok_or_else(|| {
            Status::invalid_argument(format!(
                "roles: {r:?} is not a role (os:admin, os:operator or os:reader)"
            ))
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.len() > 2 {
        return Err(Status::invalid_argument(
            "roles: at most two (the highest one decides)",
        ));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_checked() {
        let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_roles(&s(&["os:reader", "os:reader"])).unwrap(),
            [Role::Reader]
        );
        let e = check_roles(&s(&["os:root"])).unwrap_err();
        assert!(e.message().contains("\"os:root\" is not a role"), "{e}");
        assert!(
            check_roles(&[])
                .unwrap_err()
                .message()
                .starts_with("roles:")
        );
        assert!(check_roles(&s(&["os:admin", "os:operator", "os:reader"])).is_err());
    }
}
