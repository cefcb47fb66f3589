//! Checks of the `machine` section (network in its own file).

use super::Checker;
use super::syntax::*;
use crate::error::FieldPath;
use crate::types::{FileOp, MachineConfig, MachineType};
use std::collections::BTreeMap;

pub(crate) fn check(c: &mut Checker, p: &FieldPath, cfg: &MachineConfig) {
    let m = &cfg.machine;
    let control_plane = m.machine_type == MachineType::ControlPlane;
    let who = if control_plane {
        "a control plane"
    } else {
        "a worker"
    };

    if m.token.is_empty() {
        c.err(p.key("token"), "is required");
    } else if !is_token(&m.token) {
        c.err(
            p.key("token"),
            "is not a token of the form [a-z0-9]{6}.[a-z0-9]{16}",
        );
    }
    c.ca(&p.key("ca"), &m.ca, control_plane, who);
    for (i, san) in m.cert_sans.iter().enumerate() {
        if !is_san(san) {
            c.err(
                p.key("certSANs").index(i),
                format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
    }

    if let Some(install) = &m.install {
        let ip = p.key("install");
        if let Some(disk) = &install.disk
            && !(disk.starts_with("/dev/") && disk.len() > 5)
        {
            c.err(
                ip.key("disk"),
                format!("{disk:?} is not a device path under /dev/"),
            );
        }
        if let Some(image) = &install.image
            && (image.is_empty() || image.contains(char::is_whitespace))
        {
            c.err(
                ip.key("image"),
                format!("{image:?} is not an image reference"),
            );
        }
    }

    super::network::check(c, &p.key("network"), &m.network);

    if let Some(time) = &m.time {
        for (i, s) in time.servers.iter().enumerate() {
            if let Err(reason) = parse_host_port(s, 123) {
                c.err(p.key("time").key("servers").index(i), reason);
            }
        }
    }

    for (i, module) in m.kernel.modules.iter().enumerate() {
        let mp = p.key("kernel").key("modules").index(i);
        if !is_module_name(&module.name) {
            c.err(
                mp.key("name"),
                format!(
                    "{:?} is not a kernel module name (letters a-z, digits, _ and -)",
                    module.name
                ),
            );
        }
        for (j, param) in module.parameters.iter().enumerate() {
            if !is_module_parameter(param) {
                c.err(
                    mp.key("parameters").index(j),
                    format!("{param:?} is not a module parameter (key=value or flag, no spaces)"),
                );
            }
        }
    }

    for k in m.sysctls.keys() {
        if !is_sysctl_key(k) {
            c.err(p.key("sysctls").key(k), "is not a kernel parameter name");
        }
    }

    check_files(c, &p.key("files"), cfg);

    for k in m.env.keys() {
        if !is_env_name(k) {
            c.err(p.key("env").key(k), "is not an environment variable name");
        }
    }
    check_labels(c, &p.key("nodeLabels"), &m.node_labels);
    check_taints(c, &p.key("nodeTaints"), &m.node_taints);

    let rp = p.key("registries");
    for (host, mirror) in &m.registries.mirrors {
        let mp = rp.key("mirrors").key(host);
        if host != "*" && !is_registry_host(host) {
            c.err(mp.clone(), format!("{host:?} is not a registry host"));
        }
        if mirror.endpoints.is_empty() {
            c.err(mp.key("endpoints"), "needs at least one endpoint");
        }
        for (i, e) in mirror.endpoints.iter().enumerate() {
            if let Err(reason) = check_url(e, &["http", "https"], false) {
                c.err(mp.key("endpoints").index(i), reason);
            }
        }
    }
    for (host, conf) in &m.registries.config {
        let hp = rp.key("config").key(host);
        if !is_registry_host(host) {
            c.err(hp.clone(), format!("{host:?} is not a registry host"));
        }
        if let Some(auth) = &conf.auth {
            let has_user = auth.username.is_some() || auth.password.is_some();
            if has_user && (auth.username.is_none() || auth.password.is_none()) {
                c.err(hp.key("auth"), "username and password go together");
            }
            if !has_user && auth.auth.is_none() && auth.identity_token.is_none() {
                c.err(
                    hp.key("auth"),
                    "needs username and password, auth, or identityToken",
                );
            }
        }
        if let Some(tls) = &conf.tls {
            if let Some(ca) = &tls.ca {
                c.pem(
                    hp.key("tls").key("ca"),
                    ca,
                    crate::types::PemKind::Certificate,
                );
            }
            if let Some(id) = &tls.client_identity {
                let ip = hp.key("tls").key("clientIdentity");
                c.pem(ip.key("crt"), &id.crt, crate::types::PemKind::Certificate);
                c.pem(ip.key("key"), &id.key, crate::types::PemKind::PrivateKey);
            }
        }
    }

    if let Some(logging) = &m.logging {
        for (i, d) in logging.destinations.iter().enumerate() {
            if let Err(reason) = check_url(&d.endpoint, &["udp", "tcp"], true) {
                c.err(
                    p.key("logging")
                        .key("destinations")
                        .index(i)
                        .key("endpoint"),
                    reason,
                );
            }
        }
    }
}

/// `host[:port]` as used for registry names (`docker.io`, `registry.local:5000`).
fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (s, None),
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    is_host(host) && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

fn check_files(c: &mut Checker, p: &FieldPath, cfg: &MachineConfig) {
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, f) in cfg.machine.files.iter().enumerate() {
        let fp = p.index(i);
        let bad_path = !f.path.starts_with('/')
            || f.path == "/"
            || f.path.ends_with('/')
            || f.path.split('/').any(|c| c == ".." || c == ".");
        if bad_path {
            c.err(
                fp.key("path"),
                format!("{:?} is not an absolute file path", f.path),
            );
        }
        if f.permissions > 0o7777 {
            c.err(
                fp.key("permissions"),
                format!("{:#o} has bits beyond 0o7777", f.permissions),
            );
        }
        if f.op == FileOp::Create {
            if let Some(first) = created.get(f.path.as_str()) {
                c.err(
                    fp.key("path"),
                    format!(
                        "{:?} is already created by {}",
                        f.path,
                        p.index(*first).key("path")
                    ),
                );
            } else {
                created.insert(&f.path, i);
            }
        }
    }
}

fn check_labels(c: &mut Checker, p: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if !is_label_key(k) {
            c.err(p.key(k), "is not a valid label key");
        } else if !is_label_value(v) {
            c.err(p.key(k), format!("{v:?} is not a valid label value"));
        }
    }
}

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn check_taints(c: &mut Checker, p: &FieldPath, taints: &BTreeMap<String, String>) {
    for (k, v) in taints {
        if !is_label_key(k) {
            c.err(p.key(k), "is not a valid taint key");
            continue;
        }
        // "value:Effect", ":Effect" or just "Effect".
        let (value, effect) = v.rsplit_once(':').unwrap_or(("", v));
        if !TAINT_EFFECTS.contains(&effect) {
            c.err(
                p.key(k),
                format!("{v:?} must end in an effect: NoSchedule, PreferNoSchedule or NoExecute"),
            );
        } else if !is_label_value(value) {
            c.err(p.key(k), format!("{value:?} is not a valid taint value"));
        }
    }
}
