//! Checks of the `cluster` section and the rules that tie it to the machine's role.

use super::Checker;
use super::syntax::*;
use crate::error::FieldPath;
use crate::types::{MachineConfig, MachineType, PemKind, StoreBackend};
use ipnet::IpNet;

pub(crate) fn check(c: &mut Checker, p: &FieldPath, cfg: &MachineConfig) {
    let cl = &cfg.cluster;
    let control_plane = cfg.machine.machine_type == MachineType::ControlPlane;
    let who = if control_plane {
        "a control plane"
    } else {
        "a worker"
    };

    if cl.name.is_empty() {
        c.err(p.key("name"), "is required");
    } else if !is_lowercase_dns_label(&cl.name) {
        c.err(
            p.key("name"),
            format!(
                "{:?} is not a lowercase DNS label (a-z, 0-9, '-', at most 63)",
                cl.name
            ),
        );
    }

    match &cl.control_plane {
        Some(cp) => {
            if let Err(reason) = parse_endpoint(&cp.endpoint) {
                c.err(p.key("controlPlane").key("endpoint"), reason);
            }
        }
        None if !control_plane => c.err(
            p.key("controlPlane").key("endpoint"),
            "is required on a worker (it is how the worker finds the cluster)",
        ),
        None => {}
    }

    let np = p.key("network");
    let pods = subnets(c, &np.key("podSubnets"), &cl.network.pod_subnets);
    let services = subnets(c, &np.key("serviceSubnets"), &cl.network.service_subnets);
    for (si, s) in &services {
        for (pi, pnet) in &pods {
            if overlaps(s, pnet) {
                c.err(
                    np.key("serviceSubnets").index(*si),
                    format!("{s} overlaps {} ({pnet})", np.key("podSubnets").index(*pi)),
                );
            }
        }
    }
    if !is_dns_name(&cl.network.dns_domain) {
        c.err(
            np.key("dnsDomain"),
            format!("{:?} is not a DNS name", cl.network.dns_domain),
        );
    }

    if cl.token.is_empty() {
        c.err(p.key("token"), "is required");
    } else if !is_token(&cl.token) {
        c.err(
            p.key("token"),
            "is not a token of the form [a-z0-9]{6}.[a-z0-9]{16}",
        );
    }
    c.ca(&p.key("ca"), &cl.ca, control_plane, who);

    let sp = p.key("store");
    match (&cl.store.etcd, cl.store.backend) {
        (Some(etcd), backend) => {
            // With SQLite the etcd CA is only kept for a later switch, so its key is optional.
            let need_key = control_plane && backend == StoreBackend::Etcd;
            let ep = sp.key("etcd").key("ca");
            c.pem(ep.key("crt"), &etcd.ca.crt, PemKind::Certificate);
            if need_key && !etcd.ca.has_key() {
                c.err(
                    ep.key("key"),
                    "is required on a control plane with the etcd store",
                );
            } else if etcd.ca.has_key() {
                if control_plane {
                    c.pem(ep.key("key"), &etcd.ca.key, PemKind::PrivateKey);
                } else {
                    c.warn(
                        ep.key("key"),
                        "a worker does not need this CA's private key; leave it out",
                    );
                }
            }
        }
        (None, StoreBackend::Etcd) if control_plane => c.err(
            sp.key("etcd").key("ca"),
            "is required when store.backend is etcd",
        ),
        (None, _) => {}
    }

    for (i, san) in cl.api_server.cert_sans.iter().enumerate() {
        if !is_san(san) {
            c.err(
                p.key("apiServer").key("certSANs").index(i),
                format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
    }

    let sap = p.key("serviceAccount").key("key");
    match &cl.service_account {
        Some(sa) if control_plane => c.pem(sap, &sa.key, PemKind::PrivateKey),
        Some(_) => c.warn(
            sap,
            "a worker does not need the service-account key; leave it out",
        ),
        None if control_plane => c.err(sap, "is required on a control plane"),
        None => {}
    }

    if cl.allow_scheduling_on_control_planes && !control_plane {
        c.warn(
            p.key("allowSchedulingOnControlPlanes"),
            "has no effect on a worker",
        );
    }
}

fn subnets(c: &mut Checker, p: &FieldPath, list: &[String]) -> Vec<(usize, IpNet)> {
    if list.is_empty() {
        c.err(p.clone(), "needs at least one subnet");
    }
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match parse_cidr(s) {
            None => c.err(p.index(i), format!("{s:?} is not a valid CIDR")),
            Some(n) if n.trunc() != n => c.err(
                p.index(i),
                format!("{s:?} has host bits set; the network is {}", n.trunc()),
            ),
            Some(n) => out.push((i, n)),
        }
    }
    out
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
