//! Service ClusterIP and NodePort allocation. The stored services are the record of what is
//! taken; allocation and the service's creation happen under one lock, so no address or
//! port is handed out twice.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

use super::ApiServer;
use super::status::{ApiError, ApiResult, Cause};
use super::storage;

pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

pub struct ServiceIps {
    pub net: Ipv4Net,
    lock: Mutex<()>,
}

impl ServiceIps {
    pub fn new(net: Ipv4Net) -> Self {
        ServiceIps {
            net,
            lock: Mutex::new(()),
        }
    }

    /// The first usable address: the `kubernetes` service's.
    pub fn first(&self) -> Ipv4Addr {
        self.net.hosts().next().unwrap_or(self.net.addr())
    }

    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Fills spec.clusterIP(s) and node ports of a new service. Call with the lock held.
    pub async fn assign(&self, api: &ApiServer, svc: &mut Value) -> ApiResult<()> {
        let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
        let invalid = |c: Cause| ApiError::invalid("", "Service", &name, vec![c]);
        let (used_ips, used_ports) = used(api).await?;
        let spec = &mut svc["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        if ty == "ExternalName" {
            if let Some(m) = spec.as_object_mut() {
                m.remove("clusterIP");
                m.remove("clusterIPs");
            }
            return Ok(());
        }
        let wanted = spec["clusterIP"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from);
        let ip = match wanted.as_deref() {
            Some("None") => "None".to_string(),
            Some(s) => {
                let ip: Ipv4Addr = s.parse().map_err(|_| {
                    invalid(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(s),
                        "must be a valid IP address",
                    ))
                })?;
                if !self.net.contains(&ip) || ip == self.net.network() || ip == self.net.broadcast()
                {
                    return Err(invalid(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(s),
                        &format!(
                            "failed to allocate IP {s}: the provided IP ({s}) is not in the valid range. The range of valid IPs is {}",
                            self.net
                        ),
                    )));
                }
                if used_ips.contains(&ip) {
                    return Err(invalid(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(s),
                        &format!("failed to allocate IP {s}: provided IP is already allocated"),
                    )));
                }
                s.to_string()
            }
            None => {
                // The first address is the kubernetes service's; hand out the rest in order.
                let first = self.first();
                self.net
                    .hosts()
                    .find(|ip| *ip != first && !used_ips.contains(ip))
                    .ok_or_else(|| {
                        ApiError::internal(format!(
                            "failed to allocate a serviceIP: range {} is full",
                            self.net
                        ))
                    })?
                    .to_string()
            }
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            let mut taken = used_ports;
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for (i, p) in ports.iter_mut().enumerate() {
                    match p["nodePort"].as_i64() {
                        Some(n) if !NODE_PORTS.contains(&n) => {
                            return Err(invalid(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(n),
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",
                            )));
                        }
                        Some(n) if taken.contains(&n) => {
                            return Err(invalid(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(n),
                                "provided port is already allocated",
                            )));
                        }
                        Some(n) => {
                            taken.insert(n);
                        }
                        None => {
                            let n = NODE_PORTS
                                .clone()
                                .find(|n| !taken.contains(n))
                                .ok_or_else(|| ApiError::internal("no node ports left"))?;
                            taken.insert(n);
                            p["nodePort"] = json!(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

async fn used(api: &ApiServer) -> ApiResult<(HashSet<Ipv4Addr>, HashSet<i64>)> {
    let def = super::registry::lookup("", "v1", "services").expect("services are served");
    let all = api
        .store
        .range(&storage::prefix(def, None), None, 0, None)
        .await?;
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for kv in &all.kvs {
        let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        for ip in v["spec"]["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&v["spec"]["clusterIP"]))
        {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                ips.insert(ip);
            }
        }
        for p in v["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                ports.insert(n);
            }
        }
    }
    Ok((ips, ports))
}
