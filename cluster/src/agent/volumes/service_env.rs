//! The service env vars the kubelet gives every container: always those of the API
//! server's `kubernetes` Service in `default` (`KUBERNETES_SERVICE_HOST`, ...), and with
//! `enableServiceLinks` (the default) those of every Service of the pod's namespace, in
//! Docker-link style (`<NAME>_SERVICE_HOST`, `<NAME>_PORT_<port>_<PROTO>_ADDR`, ...).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams};

/// The API server's Service, in `default`.
pub const MASTER_SERVICE: &str = "kubernetes";

fn var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables of one service, in the kubelet's order.
fn service_vars(s: &Service, out: &mut Vec<(String, String)>) {
    let Some(ip) = cluster_ip(s) else { return };
    let ports = s
        .spec
        .as_ref()
        .and_then(|sp| sp.ports.as_deref())
        .unwrap_or(&[]);
    let Some(first) = ports.first() else { return };
    let prefix = var_name(s.metadata.name.as_deref().unwrap_or(""));
    out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push((port_var.clone(), first.port.to_string()));
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{port_var}_{}", var_name(n)), p.port.to_string()));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{ip}:{}", p.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
}

/// The variables for a pod of `namespace` given the services that exist: `master` (the
/// `kubernetes` Service, if any) and the namespace's own (when `links`).
pub fn vars(
    namespace: &str,
    master: Option<&Service>,
    own: &[Service],
    links: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    if let Some(m) = master {
        chosen.insert(MASTER_SERVICE.to_string(), m);
    }
    if links {
        for s in own {
            let name = s.metadata.name.clone().unwrap_or_default();
            // In `default` the master service is that very service; elsewhere it wins over
            // a namespace's own `kubernetes` Service.
            if name == MASTER_SERVICE && namespace != "default" {
                continue;
            }
            chosen.insert(name, s);
        }
    }
    let mut out = Vec::new();
    for s in chosen.values() {
        service_vars(s, &mut out);
    }
    out
}

/// Reads the services and makes the variables for `pod`.
pub async fn for_pod(client: &Client, pod: &Pod) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let master = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt(MASTER_SERVICE)
        .await
        .context("reading the kubernetes Service for the service env vars")?;
    let own = if links {
        Api::<Service>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing the Services of {ns} for the service env vars"))?
            .items
    } else {
        Vec::new()
    };
    Ok(vars(ns, master.as_ref(), &own, links))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}}))
        .unwrap()
    }

    #[test]
    fn variables_follow_the_kubelet() {
        let master = svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
        );
        let own = [
            svc("app", "my-db", "10.96.0.9", json!([{"port": 5432}])),
            svc("app", "headless", "None", json!([{"port": 80}])),
        ];
        let v: BTreeMap<String, String> =
            vars("app", Some(&master), &own, true).into_iter().collect();
        assert_eq!(v["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(v["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(v["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(v["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(v["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(v["KUBERNETES_PORT_443_TCP_PROTO"], "tcp");
        assert_eq!(v["MY_DB_SERVICE_HOST"], "10.96.0.9");
        assert_eq!(v["MY_DB_PORT_5432_TCP"], "tcp://10.96.0.9:5432");
        assert!(!v.keys().any(|k| k.starts_with("HEADLESS")));
        // Without service links only the master service's variables remain.
        let v = vars("app", Some(&master), &own, false);
        assert!(v.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
        assert_eq!(v.len(), 8);
    }
}
