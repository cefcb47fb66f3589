//! The cluster zone as CoreDNS's kubernetes plugin serves it, built from Services,
//! EndpointSlices and Pods: a pure snapshot answering one question at a time.
//!
//! Names (under the cluster domain `d`):
//! - `<svc>.<ns>.svc.d`: the ClusterIPs, or for a headless service its ready endpoints'
//!   addresses; an ExternalName service answers with a CNAME.
//! - `<host>.<svc>.<ns>.svc.d`: one endpoint of a headless service (`host` is the endpoint's
//!   hostname, or its address with dashes).
//! - `_<port>._<proto>.<svc>.<ns>.svc.d`: SRV for a named port.
//! - `<a-b-c-d>.<ns>.pod.d`: the address written in the name (CoreDNS `pods insecure`).
//! - reverse names of service, endpoint and pod addresses (PTR).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every answer (CoreDNS's default for the kubernetes plugin).
pub const TTL: u32 = 5;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the zone says about a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The name exists and has records of the type (answers, additional records).
    Answer(Vec<Record>, Vec<Record>),
    /// An ExternalName service: this CNAME, whose target the server resolves elsewhere.
    Alias(Box<Record>, Name),
    /// The name exists but has no records of the type.
    NoData,
    /// The name is in the zone and does not exist.
    NxDomain,
    /// Not ours to answer: forward it.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    /// Lower case, as DNS labels compare.
    name: String,
    /// `tcp`, `udp` or `sctp`.
    protocol: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Endpoint {
    ip: IpAddr,
    /// The label naming it under the service: its hostname, or its address with dashes.
    label: String,
    ports: Vec<Port>,
}

#[derive(Debug, Clone, Default)]
struct ServiceEntry {
    cluster_ips: Vec<IpAddr>,
    headless: bool,
    external_name: Option<String>,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// A snapshot of the zone.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    serial: u32,
    services: HashMap<(String, String), ServiceEntry>,
    namespaces: BTreeSet<String>,
    ptr: HashMap<IpAddr, Vec<Name>>,
}

/// `10.1.2.3` as `10-1-2-3`, `fd00::1` as `fd00--1` (CoreDNS's form).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address a dashed label stands for.
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn protocol(p: Option<&str>) -> String {
    lower(p.unwrap_or("TCP"))
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, data)
}

fn family_matches(ip: &IpAddr, qtype: RecordType) -> bool {
    matches!(
        (ip, qtype),
        (IpAddr::V4(_), RecordType::A) | (IpAddr::V6(_), RecordType::AAAA)
    )
}

impl Zone {
    /// `domain` is the cluster domain (e.g. `cluster.local`); `serial` goes into the SOA.
    pub fn build(
        domain: &Name,
        serial: u32,
        services: &[Service],
        slices: &[EndpointSlice],
        pods: &[Pod],
    ) -> Zone {
        let mut zone = Zone {
            domain: domain.to_lowercase(),
            serial,
            services: HashMap::new(),
            namespaces: BTreeSet::new(),
            ptr: HashMap::new(),
        };
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let cluster_ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let external_name = (spec.type_.as_deref() == Some("ExternalName"))
                .then(|| spec.external_name.clone())
                .flatten();
            let entry = ServiceEntry {
                headless: external_name.is_none()
                    && spec.cluster_ip.as_deref().is_some_and(|ip| ip == "None"),
                cluster_ips: if external_name.is_some() {
                    Vec::new()
                } else {
                    cluster_ips
                },
                external_name,
                ports: spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| Port {
                        name: lower(p.name.as_deref().unwrap_or("")),
                        protocol: protocol(p.protocol.as_deref()),
                        port: u16::try_from(p.port).unwrap_or(0),
                    })
                    .collect(),
                endpoints: Vec::new(),
            };
            zone.namespaces.insert(lower(ns));
            zone.services.insert((lower(ns), lower(name)), entry);
        }
        let publish_not_ready: BTreeSet<(String, String)> = services
            .iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.publish_not_ready_addresses)
                    .unwrap_or(false)
            })
            .filter_map(|s| {
                Some((
                    lower(s.metadata.namespace.as_deref()?),
                    lower(s.metadata.name.as_deref()?),
                ))
            })
            .collect();
        for slice in slices {
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let key = (
                lower(slice.metadata.namespace.as_deref().unwrap_or("")),
                lower(svc),
            );
            let all = publish_not_ready.contains(&key);
            let Some(entry) = zone.services.get_mut(&key) else {
                continue;
            };
            let ports: Vec<Port> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: lower(p.name.as_deref().unwrap_or("")),
                        protocol: protocol(p.protocol.as_deref()),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for ep in &slice.endpoints {
                // A missing ready condition means ready (EndpointSlice API).
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !all {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let label = ep
                        .hostname
                        .as_deref()
                        .map(lower)
                        .unwrap_or_else(|| dashed(ip));
                    entry.endpoints.push(Endpoint {
                        ip,
                        label,
                        ports: ports.clone(),
                    });
                }
            }
        }
        // Reverse names: services first, then endpoints of headless services, then pods.
        let mut keys: Vec<_> = zone.services.keys().cloned().collect();
        keys.sort();
        for (ns, name) in &keys {
            let entry = &zone.services[&(ns.clone(), name.clone())];
            let Ok(svc_name) = zone.service_name(ns, name) else {
                continue;
            };
            for ip in &entry.cluster_ips {
                zone.ptr.entry(*ip).or_default().push(svc_name.clone());
            }
            if entry.headless {
                let mut endpoint_names = Vec::new();
                for ep in &entry.endpoints {
                    if let Ok(n) =
                        Name::from_ascii(&ep.label).and_then(|l| l.append_name(&svc_name))
                    {
                        endpoint_names.push((ep.ip, n));
                    }
                }
                for (ip, n) in endpoint_names {
                    zone.ptr.entry(ip).or_default().push(n);
                }
            }
        }
        for pod in pods {
            let Some(ns) = pod.metadata.namespace.as_deref() else {
                continue;
            };
            zone.namespaces.insert(lower(ns));
            let spec = pod.spec.as_ref();
            if spec.and_then(|s| s.host_network).unwrap_or(false) {
                continue; // the node's address, not the pod's
            }
            let status = pod.status.as_ref();
            let ips = status
                .and_then(|s| s.pod_ips.as_ref())
                .into_iter()
                .flatten()
                .map(|p| p.ip.clone())
                .chain(status.and_then(|s| s.pod_ip.clone()));
            for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                if zone.ptr.contains_key(&ip) {
                    continue;
                }
                if let Ok(n) = zone.relative(&[&dashed(ip), ns, "pod"]) {
                    zone.ptr.insert(ip, vec![n]);
                }
            }
        }
        zone
    }

    /// `labels` (most specific first) under the cluster domain.
    fn relative(&self, labels: &[&str]) -> Result<Name, hickory_proto::ProtoError> {
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))?.append_domain(&self.domain)
    }

    fn service_name(&self, ns: &str, name: &str) -> Result<Name, hickory_proto::ProtoError> {
        self.relative(&[name, ns, "svc"])
    }

    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The zone's SOA record (for answers to SOA and for negative answers).
    pub fn soa(&self) -> Record {
        let ns = self
            .relative(&["ns", "dns"])
            .unwrap_or_else(|_| Name::root());
        let hostmaster = self
            .relative(&["hostmaster"])
            .unwrap_or_else(|_| Name::root());
        Record::from_rdata(
            self.domain.clone(),
            TTL,
            RData::SOA(SOA::new(
                ns,
                hostmaster,
                self.serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        )
    }

    /// What the zone answers to `name` (any case) and `qtype`.
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let name = name.to_lowercase();
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        if let Ok(net) = fqdn.parse_arpa_name() {
            if net.prefix_len() != net.max_prefix_len() {
                return Lookup::NotOurs;
            }
            return match self.ptr.get(&net.addr()) {
                Some(targets) if qtype == RecordType::PTR => Lookup::Answer(
                    targets
                        .iter()
                        .map(|t| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(t.clone()))))
                        .collect(),
                    Vec::new(),
                ),
                Some(_) => Lookup::NoData,
                None => Lookup::NotOurs,
            };
        }
        if !self.domain.zone_of(&fqdn) {
            return Lookup::NotOurs;
        }
        let extra = usize::from(fqdn.num_labels() - self.domain.num_labels());
        let labels: Vec<String> = fqdn
            .iter()
            .take(extra)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        match l.as_slice() {
            [] => match qtype {
                RecordType::SOA => Lookup::Answer(vec![self.soa()], Vec::new()),
                _ => Lookup::NoData,
            },
            ["svc"] | ["pod"] => Lookup::NoData,
            [ns, "svc" | "pod"] => {
                if self.namespaces.contains(*ns) {
                    Lookup::NoData
                } else {
                    Lookup::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(&name, ns, svc, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(&name, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [host, svc, ns, "svc"] => self.endpoint(&name, ns, svc, host, qtype),
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) if family_matches(&ip, qtype) => {
                    Lookup::Answer(vec![address_record(&name, ip)], Vec::new())
                }
                Some(_) => Lookup::NoData,
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        }
    }

    fn service(&self, name: &Name, ns: &str, svc: &str, qtype: RecordType) -> Lookup {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Lookup::NxDomain;
        };
        if let Some(target) = &entry.external_name {
            let Ok(mut target) = Name::from_ascii(target) else {
                return Lookup::NoData;
            };
            target.set_fqdn(true);
            let cname = Record::from_rdata(name.clone(), TTL, RData::CNAME(CNAME(target.clone())));
            return if qtype == RecordType::CNAME {
                Lookup::Answer(vec![cname], Vec::new())
            } else {
                Lookup::Alias(Box::new(cname), target)
            };
        }
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let ips: Vec<IpAddr> = if entry.headless {
                    entry.endpoints.iter().map(|e| e.ip).collect()
                } else {
                    entry.cluster_ips.clone()
                };
                let mut seen = BTreeSet::new();
                let answers: Vec<Record> = ips
                    .into_iter()
                    .filter(|ip| family_matches(ip, qtype) && seen.insert(*ip))
                    .map(|ip| address_record(name, ip))
                    .collect();
                if answers.is_empty() {
                    Lookup::NoData
                } else {
                    Lookup::Answer(answers, Vec::new())
                }
            }
            RecordType::SRV => {
                let mut answers = Vec::new();
                let mut additional = Vec::new();
                for p in entry.ports.iter().filter(|p| !p.name.is_empty()) {
                    if let Lookup::Answer(a, b) =
                        self.srv(name, ns, svc, &p.name, &p.protocol, qtype)
                    {
                        answers.extend(a);
                        additional.extend(b);
                    }
                }
                dedup(&mut answers);
                dedup(&mut additional);
                if answers.is_empty() {
                    Lookup::NoData
                } else {
                    Lookup::Answer(answers, additional)
                }
            }
            _ => Lookup::NoData,
        }
    }

    fn endpoint(&self, name: &Name, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Lookup {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Lookup::NxDomain;
        };
        let matching: Vec<&Endpoint> = entry
            .endpoints
            .iter()
            .filter(|e| entry.headless && e.label == host)
            .collect();
        if matching.is_empty() {
            return Lookup::NxDomain;
        }
        let answers: Vec<Record> = matching
            .iter()
            .filter(|e| family_matches(&e.ip, qtype))
            .map(|e| address_record(name, e.ip))
            .collect();
        if answers.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer(answers, Vec::new())
        }
    }

    /// SRV for port `port` (a name) over `proto` of a service, asked as `name`.
    fn srv(
        &self,
        name: &Name,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Lookup {
        let Some(entry) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Lookup::NxDomain;
        };
        let Ok(svc_name) = self.service_name(ns, svc) else {
            return Lookup::NxDomain;
        };
        let wanted = |p: &Port| p.name == port && p.protocol == proto;
        if !entry.ports.iter().any(wanted) {
            return Lookup::NxDomain;
        }
        if qtype != RecordType::SRV {
            return Lookup::NoData;
        }
        let mut targets: Vec<(Name, u16, Vec<IpAddr>)> = Vec::new();
        if entry.headless {
            for ep in &entry.endpoints {
                let Some(p) = ep.ports.iter().find(|p| wanted(p)) else {
                    continue;
                };
                let Ok(target) = Name::from_ascii(&ep.label).and_then(|l| l.append_name(&svc_name))
                else {
                    continue;
                };
                match targets.iter_mut().find(|t| t.0 == target && t.1 == p.port) {
                    Some(t) => t.2.push(ep.ip),
                    None => targets.push((target, p.port, vec![ep.ip])),
                }
            }
        } else {
            for p in entry.ports.iter().filter(|p| wanted(p)) {
                targets.push((svc_name.clone(), p.port, entry.cluster_ips.clone()));
            }
        }
        if targets.is_empty() {
            return Lookup::NoData;
        }
        let weight = (100 / targets.len()).max(1) as u16;
        let mut answers = Vec::new();
        let mut additional = Vec::new();
        for (target, port, ips) in targets {
            answers.push(Record::from_rdata(
                name.clone(),
                TTL,
                RData::SRV(SRV::new(0, weight, port, target.clone())),
            ));
            additional.extend(ips.into_iter().map(|ip| address_record(&target, ip)));
        }
        dedup(&mut additional);
        Lookup::Answer(answers, additional)
    }
}

fn dedup(records: &mut Vec<Record>) {
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    for r in records.drain(..) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    *records = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"namespace": "default", "name": "web"},
             "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"namespace": "db", "name": "pg"},
             "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]}},
            {"metadata": {"namespace": "default", "name": "ext"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"namespace": "db", "name": "pg-x", "labels": {"kubernetes.io/service-name": "pg"}},
             "addressType": "IPv4",
             "ports": [{"name": "sql", "port": 15432, "protocol": "TCP"}],
             "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
             ]},
        ]))
        .unwrap();
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"namespace": "apps", "name": "p"}, "spec": {"containers": []},
             "status": {"podIP": "10.42.1.9"}},
        ]))
        .unwrap();
        Zone::build(
            &Name::from_ascii("cluster.local.").unwrap(),
            7,
            &services,
            &slices,
            &pods,
        )
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ips(l: &Lookup) -> Vec<String> {
        match l {
            Lookup::Answer(a, _) => a
                .iter()
                .map(|r| match &r.data {
                    RData::A(a) => a.0.to_string(),
                    RData::AAAA(a) => a.0.to_string(),
                    RData::PTR(p) => p.0.to_string(),
                    RData::SRV(s) => format!("{} {}", s.port, s.target),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn services_answer_their_cluster_ip_or_ready_endpoints() {
        let z = zone();
        let a = z.lookup(&name("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(ips(&a), ["10.43.0.20"]);
        let upper = z.lookup(&name("WEB.Default.svc.cluster.local."), RecordType::A);
        assert_eq!(ips(&upper), ["10.43.0.20"]);
        assert_eq!(
            z.lookup(&name("web.default.svc.cluster.local."), RecordType::AAAA),
            Lookup::NoData
        );
        let headless = z.lookup(&name("pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(ips(&headless), ["10.42.0.5", "10.42.0.6"]);
        let host = z.lookup(&name("pg-0.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(ips(&host), ["10.42.0.5"]);
        let dashed = z.lookup(&name("10-42-0-6.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(ips(&dashed), ["10.42.0.6"]);
        assert_eq!(
            z.lookup(&name("10-42-0-7.pg.db.svc.cluster.local."), RecordType::A),
            Lookup::NxDomain,
            "not-ready endpoints are not published"
        );
    }

    #[test]
    fn srv_for_named_ports() {
        let z = zone();
        let srv = z.lookup(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(ips(&srv), ["80 web.default.svc.cluster.local."]);
        let Lookup::Answer(_, extra) = &srv else {
            unreachable!()
        };
        assert_eq!(extra.len(), 1);
        let headless = z.lookup(&name("_sql._tcp.pg.db.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            ips(&headless),
            [
                "15432 pg-0.pg.db.svc.cluster.local.",
                "15432 10-42-0-6.pg.db.svc.cluster.local."
            ]
        );
        assert_eq!(
            z.lookup(
                &name("_nope._tcp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Lookup::NxDomain
        );
        assert_eq!(
            z.lookup(
                &name("_http._udp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Lookup::NxDomain
        );
    }

    #[test]
    fn pods_external_names_and_reverse() {
        let z = zone();
        let pod = z.lookup(&name("10-42-1-9.apps.pod.cluster.local."), RecordType::A);
        assert_eq!(ips(&pod), ["10.42.1.9"]);
        let Lookup::Alias(_, target) =
            z.lookup(&name("ext.default.svc.cluster.local."), RecordType::A)
        else {
            panic!("ExternalName is an alias")
        };
        assert_eq!(target, name("example.org."));
        let rev = |ip: &str| Name::from(ip.parse::<IpAddr>().unwrap());
        assert_eq!(
            ips(&z.lookup(&rev("10.43.0.20"), RecordType::PTR)),
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            ips(&z.lookup(&rev("10.42.0.5"), RecordType::PTR)),
            ["pg-0.pg.db.svc.cluster.local."]
        );
        assert_eq!(
            ips(&z.lookup(&rev("10.42.1.9"), RecordType::PTR)),
            ["10-42-1-9.apps.pod.cluster.local."]
        );
        assert_eq!(
            z.lookup(&rev("192.0.2.1"), RecordType::PTR),
            Lookup::NotOurs
        );
    }

    #[test]
    fn unknown_names_in_the_zone_do_not_exist_and_others_are_forwarded() {
        let z = zone();
        for n in [
            "nope.default.svc.cluster.local.",
            "x.y.z.cluster.local.",
            "nope.svc.cluster.local.",
        ] {
            assert_eq!(z.lookup(&name(n), RecordType::A), Lookup::NxDomain, "{n}");
        }
        assert_eq!(
            z.lookup(&name("default.svc.cluster.local."), RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("example.org."), RecordType::A),
            Lookup::NotOurs
        );
        assert!(matches!(
            z.lookup(&name("cluster.local."), RecordType::SOA),
            Lookup::Answer(..)
        ));
    }
}
