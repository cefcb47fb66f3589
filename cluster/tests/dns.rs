//! Cluster DNS: `cluster server --dns-listen` on SQLite answering for Services, headless
//! endpoints, named ports, pods and reverse names as they change, NXDOMAIN for unknown names,
//! truncation over UDP, and forwarding to an upstream the test runs on 127.0.0.1 (UDP and
//! TCP), asked with hickory-proto messages and the real `dig`; and the kube-dns Service and
//! endpoints it publishes. Then, with a real containerd, a pod's /etc/resolv.conf and
//! /etc/hosts as the agent writes them. Needs dig (Debian package dnsutils); the pod test
//! needs what the agent tests need (containerd, runc, busybox-static, kubectl).

mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DIG: &str = "/usr/bin/dig";
const DOMAIN: &str = "cluster.local";

/// `cluster server` with the DNS server on 127.0.0.1 (a free port); killed on drop.
struct DnsServer {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl DnsServer {
    fn start(upstream: SocketAddr) -> DnsServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cluster"))
            .args(["server", "--disable-controllers", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--dns-listen", "127.0.0.1:0"])
            // kube-dns keeps its own address; `kubernetes` gets the general one.
            .args(["--advertise-address", "127.0.0.2"])
            .args(["--dns-advertise-address", "127.0.0.1"])
            .args(["--dns-upstream", &upstream.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting cluster server");
        DnsServer {
            child,
            kubeconfig: data.join("kubeconfig"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

/// Polls `check` every 100 ms until it gives `Some`; panics after 30 s with `what`.
async fn eventually<T, F, Fut>(what: &str, log: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nserver log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn question(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = question(name, qtype, edns);
    sock.send_to(&q, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
    m
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    let q = question(name, qtype, false);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let n = s.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The answer records' data as text (addresses, SRV "port target", PTR/CNAME targets).
fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::SRV(s) => format!("{} {}", s.port, s.target),
            RData::PTR(p) => p.0.to_string(),
            RData::CNAME(c) => c.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    v.sort();
    v
}

fn has_soa(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| matches!(r.data, RData::SOA(_)))
}

/// A tiny upstream resolver on 127.0.0.1 (UDP and TCP, same port): `*.example.test` A
/// 192.0.2.1, NXDOMAIN for the rest; counts the questions per transport.
struct Upstream {
    addr: SocketAddr,
    udp: Arc<AtomicUsize>,
    tcp: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn upstream_answer(request: &[u8]) -> Vec<u8> {
    let req = Message::from_vec(request).unwrap();
    let mut out = Message::response(req.metadata.id, OpCode::Query);
    out.metadata.recursion_available = true;
    out.add_queries(req.queries.clone());
    let q = &req.queries[0];
    let zone = Name::from_ascii("example.test.").unwrap();
    if zone.zone_of(q.name()) && q.query_type() == RecordType::A {
        out.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
    } else {
        out.metadata.response_code = ResponseCode::NXDomain;
    }
    out.to_vec().unwrap()
}

async fn start_upstream() -> Upstream {
    let udp_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp_sock.local_addr().unwrap();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the upstream's TCP port (same as its UDP port)");
    let (udp, tcp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let udp_count = udp.clone();
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, peer)) = udp_sock.recv_from(&mut buf).await else {
                continue;
            };
            udp_count.fetch_add(1, Ordering::SeqCst);
            let _ = udp_sock.send_to(&upstream_answer(&buf[..n]), peer).await;
        }
    });
    let tcp_count = tcp.clone();
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tcp_count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(n) = s.read_u16().await else { return };
                let mut buf = vec![0u8; n as usize];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let a = upstream_answer(&buf);
                let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&a);
                let _ = s.write_all(&framed).await;
            });
        }
    });
    Upstream {
        addr,
        udp,
        tcp,
        tasks: vec![t1, t2],
    }
}

fn dig(server: SocketAddr, args: &[&str]) -> Vec<String> {
    assert!(
        Path::new(DIG).exists(),
        "this test needs {DIG} (Debian package dnsutils)"
    );
    let out = Command::new(DIG)
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+short",
            "+time=5",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("running dig");
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

fn fqdn(rel: &str) -> String {
    format!("{rel}.{DOMAIN}.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_the_api_and_forwards_the_rest() {
    let upstream = start_upstream().await;
    let server = DnsServer::start(upstream.addr);
    let log = || server.log();
    eventually("the kubeconfig", log, || async {
        server.kubeconfig.exists().then_some(())
    })
    .await;
    let c = client(&server.kubeconfig).await;

    // kube-dns: the 10th address of the (default) service range, endpoints on our port.
    let services: Api<Service> = Api::namespaced(c.clone(), "kube-system");
    let kube_dns = eventually("the kube-dns Service", log, || async {
        services.get_opt("kube-dns").await.ok().flatten()
    })
    .await;
    let spec = kube_dns.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".to_string(), 53, "UDP".to_string()),
            ("dns-tcp".to_string(), 53, "TCP".to_string())
        ]
    );
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "kube-system");
    let slice = eventually("the kube-dns EndpointSlice", log, || async {
        let l = slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=kube-dns"))
            .await
            .ok()?;
        l.items.into_iter().next()
    })
    .await;
    assert_eq!(slice.endpoints.len(), 1);
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    let port = slice.ports.as_ref().unwrap()[0].port.unwrap();
    let dns = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port as u16);
    let endpoints: Api<Endpoints> = Api::namespaced(c.clone(), "kube-system");
    let ep = endpoints.get("kube-dns").await.unwrap();
    let subset = &ep.subsets.unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "127.0.0.1");
    assert!(
        subset
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .all(|p| p.port == port)
    );

    // This server announces itself with a lease (several control planes each list theirs).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.clone(), "kube-system");
    let announced = leases
        .list(&kube::api::ListParams::default().labels("dns.ros.dev/server=true"))
        .await
        .unwrap();
    let holders: Vec<_> = announced
        .items
        .iter()
        .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
        .collect();
    assert_eq!(holders, ["127.0.0.1"]);

    // The `kubernetes` Service's endpoints: --advertise-address and the API server's port.
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let api_url = kc.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .server
        .clone()
        .unwrap();
    let api_port: i32 = api_url.rsplit(':').next().unwrap().parse().unwrap();
    let default_eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    let ep = eventually("the kubernetes Endpoints", log, || async {
        default_eps.get_opt("kubernetes").await.ok().flatten()
    })
    .await;
    let subset = &ep.subsets.unwrap()[0];
    let ips: Vec<_> = subset.addresses.iter().flatten().map(|a| &a.ip).collect();
    assert_eq!(ips, ["127.0.0.2"]);
    let ports: Vec<_> = subset
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port))
        .collect();
    assert_eq!(ports, [(Some("https"), api_port)]);
    let default_slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "default");
    let slice = default_slices.get("kubernetes").await.unwrap();
    let labels = slice.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/service-name").map(String::as_str),
        Some("kubernetes")
    );
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.2"]);
    assert_eq!(slice.ports.unwrap()[0].port, Some(api_port));
    let holders: Vec<_> = leases
        .list(&kube::api::ListParams::default().labels("apiserver.ros.dev/server=true"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.spec?.holder_identity)
        .collect();
    assert_eq!(holders, ["127.0.0.2"]);

    // The system services answer once the watches have synced.
    let m = eventually("kube-dns answering", log, || async {
        let m = ask_udp(dns, &fqdn("kube-dns.kube-system.svc"), RecordType::A, false).await;
        (m.metadata.response_code == ResponseCode::NoError).then_some(m)
    })
    .await;
    assert_eq!(data(&m), ["10.96.0.10"]);
    assert!(m.metadata.authoritative);
    let m = ask_udp(dns, &fqdn("kubernetes.default.svc"), RecordType::A, true).await;
    assert_eq!(data(&m), ["10.96.0.1"]);
    assert!(m.edns.is_some(), "an EDNS question gets an EDNS answer");

    // A ClusterIP service with a named port: A, SRV, PTR, and `dig` agrees.
    let default_services: Api<Service> = Api::namespaced(c.clone(), "default");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .unwrap();
    let web = default_services
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    let m = eventually("web's address", log, || async {
        let m = ask_udp(dns, &fqdn("web.default.svc"), RecordType::A, false).await;
        (!m.answers.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(data(&m), [web_ip.as_str()]);
    let srv = ask_udp(
        dns,
        &fqdn("_http._tcp.web.default.svc"),
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(data(&srv), [format!("80 {}", fqdn("web.default.svc"))]);
    assert_eq!(srv.additionals.len(), 1, "the target's address comes along");
    let rev = Name::from(web_ip.parse::<IpAddr>().unwrap()).to_ascii();
    let ptr = ask_udp(dns, &rev, RecordType::PTR, false).await;
    assert_eq!(data(&ptr), [fqdn("web.default.svc")]);
    assert_eq!(
        dig(dns, &[&fqdn("web.default.svc")]),
        [web_ip.as_str()],
        "dig over UDP"
    );
    assert_eq!(
        dig(dns, &["+tcp", "-x", &web_ip]),
        [fqdn("web.default.svc")],
        "dig -x over TCP"
    );

    // A headless service: its ready endpoints, by hostname too, and SRV per endpoint.
    let pg: Service = serde_json::from_value(json!({
        "metadata": {"name": "pg"},
        "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]},
    }))
    .unwrap();
    default_services
        .create(&PostParams::default(), &pg)
        .await
        .unwrap();
    let default_slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "default");
    let slice = |ready_third: bool| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "pg-1", "labels": {"kubernetes.io/service-name": "pg"}},
            "addressType": "IPv4",
            "ports": [{"name": "sql", "port": 15432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.7"], "conditions": {"ready": ready_third}},
            ],
        }))
        .unwrap()
    };
    default_slices
        .create(&PostParams::default(), &slice(false))
        .await
        .unwrap();
    let m = eventually("pg's endpoints", log, || async {
        let m = ask_udp(dns, &fqdn("pg.default.svc"), RecordType::A, false).await;
        (!m.answers.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(data(&m), ["10.244.1.5", "10.244.1.6"]);
    let m = ask_tcp(dns, &fqdn("pg-0.pg.default.svc"), RecordType::A).await;
    assert_eq!(data(&m), ["10.244.1.5"]);
    let m = ask_udp(
        dns,
        &fqdn("_sql._tcp.pg.default.svc"),
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(
        data(&m),
        [
            format!("15432 {}", fqdn("10-244-1-6.pg.default.svc")),
            format!("15432 {}", fqdn("pg-0.pg.default.svc")),
        ]
    );
    // The third endpoint becomes ready: the answer follows.
    let mut current = default_slices.get("pg-1").await.unwrap();
    let mut next = slice(true);
    next.metadata.resource_version = current.metadata.resource_version.take();
    default_slices
        .replace("pg-1", &PostParams::default(), &next)
        .await
        .unwrap();
    eventually("the third endpoint", log, || async {
        let m = ask_udp(dns, &fqdn("pg.default.svc"), RecordType::A, false).await;
        (data(&m) == ["10.244.1.5", "10.244.1.6", "10.244.1.7"]).then_some(())
    })
    .await;

    // A pod's dashed name and its reverse name.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.244.3.4", "podIPs": [{"ip": "10.244.3.4"}]}})),
    )
    .await
    .unwrap();
    let m = ask_udp(dns, &fqdn("10-244-3-4.default.pod"), RecordType::A, false).await;
    assert_eq!(data(&m), ["10.244.3.4"]);
    let rev = Name::from("10.244.3.4".parse::<IpAddr>().unwrap()).to_ascii();
    eventually("the pod's reverse name", log, || async {
        let m = ask_udp(dns, &rev, RecordType::PTR, false).await;
        (data(&m) == [fqdn("10-244-3-4.default.pod")]).then_some(())
    })
    .await;

    // Unknown names in the zone: NXDOMAIN with the zone's SOA; deleted services go away.
    let m = ask_udp(dns, &fqdn("nope.default.svc"), RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(has_soa(&m), "{m:?}");
    let m = ask_udp(dns, &fqdn("web.default.svc"), RecordType::AAAA, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && has_soa(&m), "NODATA: {m:?}");
    default_services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web gone", log, || async {
        let m = ask_udp(dns, &fqdn("web.default.svc"), RecordType::A, false).await;
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    })
    .await;

    // A large answer: truncated over plain UDP, whole over TCP.
    let many: Service = serde_json::from_value(json!({
        "metadata": {"name": "many"},
        "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 1}]},
    }))
    .unwrap();
    default_services
        .create(&PostParams::default(), &many)
        .await
        .unwrap();
    let addresses: Vec<_> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.244.9.{i}")]}))
        .collect();
    let big: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
        "addressType": "IPv4",
        "ports": [{"name": "x", "port": 1, "protocol": "TCP"}],
        "endpoints": addresses,
    }))
    .unwrap();
    default_slices
        .create(&PostParams::default(), &big)
        .await
        .unwrap();
    let m = eventually("the large answer", log, || async {
        let m = ask_tcp(dns, &fqdn("many.default.svc"), RecordType::A).await;
        (m.answers.len() == 60).then_some(m)
    })
    .await;
    assert!(!m.metadata.truncation);
    let m = ask_udp(dns, &fqdn("many.default.svc"), RecordType::A, false).await;
    assert!(m.metadata.truncation, "60 addresses do not fit 512 bytes");
    assert!(m.answers.is_empty());
    let m = ask_udp(dns, &fqdn("many.default.svc"), RecordType::A, true).await;
    assert!(
        !m.metadata.truncation && m.answers.len() == 60,
        "they fit EDNS's 1232"
    );
    assert_eq!(
        dig(dns, &["+noedns", &fqdn("many.default.svc")]).len(),
        60,
        "dig retries a truncated answer over TCP"
    );

    // An ExternalName service: a CNAME, with the target's address from the upstream.
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "db.example.test"},
    }))
    .unwrap();
    default_services
        .create(&PostParams::default(), &ext)
        .await
        .unwrap();
    let m = eventually("the ExternalName alias", log, || async {
        let m = ask_udp(dns, &fqdn("ext.default.svc"), RecordType::A, false).await;
        (!m.answers.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(data(&m), ["192.0.2.1", "db.example.test."]);

    // Everything else goes to the upstream, over the client's transport (reverse names of
    // addresses the cluster does not know went there too).
    let (udp_before, tcp_before) = (
        upstream.udp.load(Ordering::SeqCst),
        upstream.tcp.load(Ordering::SeqCst),
    );
    let m = ask_udp(dns, "www.example.test.", RecordType::A, false).await;
    assert_eq!(data(&m), ["192.0.2.1"]);
    assert!(!m.metadata.authoritative);
    assert_eq!(upstream.udp.load(Ordering::SeqCst), udp_before + 1);
    let m = ask_tcp(dns, "api.example.test.", RecordType::A).await;
    assert_eq!(data(&m), ["192.0.2.1"]);
    assert_eq!(upstream.tcp.load(Ordering::SeqCst), tcp_before + 1);
    let m = ask_udp(dns, "nothing.invalid.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(dig(dns, &["www.example.test"]), ["192.0.2.1"]);
    assert_eq!(m.metadata.message_type, MessageType::Response);
}

#[test]
fn pods_get_the_cluster_resolv_conf_and_hosts() {
    use agent_support::{Agent, Containerd, IMAGE, wait_for};
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = kubectl_support::Server::start();
    let root = tempfile::tempdir().unwrap();
    let node_resolv = root.path().join("node-resolv.conf");
    std::fs::write(
        &node_resolv,
        "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n",
    )
    .unwrap();
    let agent = Agent::start_with(
        &server.kubeconfig,
        &containerd,
        "n1",
        &root.path().join("agent"),
        &[
            "--cluster-dns",
            "10.43.0.10",
            "--cluster-domain",
            "cluster.test",
            "--resolv-conf",
            node_resolv.to_str().unwrap(),
        ],
    );
    let pod = |name: &str, extra: serde_json::Value| {
        let mut spec = json!({
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/hosts"]}],
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
            .to_string()
    };
    server.ok_stdin(&["apply", "-f", "-"], &pod("cluster-first", json!({})));
    server.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "custom",
            json!({"dnsPolicy": "None", "hostname": "db", "subdomain": "pg",
                   "dnsConfig": {"nameservers": ["192.0.2.9"], "searches": ["x.example"],
                                 "options": [{"name": "ndots", "value": "2"}]}}),
        ),
    );
    server.ok_stdin(
        &["apply", "-f", "-"],
        &pod("node-dns", json!({"dnsPolicy": "Default"})),
    );
    let context = || {
        format!(
            "agent log:\n{}\nserver log (tail):\n{}",
            agent.log(),
            server
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let output = |name: &str| {
        wait_for(&format!("pod {name} to succeed"), context, || {
            let out = server.run(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
            (String::from_utf8_lossy(&out.stdout) == "Succeeded").then_some(())
        });
        server.ok(&["logs", name])
    };
    let text = output("cluster-first");
    let (resolv, hosts) = text.split_once("---\n").expect(&text);
    assert_eq!(
        resolv,
        "nameserver 10.43.0.10\nsearch default.svc.cluster.test svc.cluster.test cluster.test corp.example\noptions ndots:5\n"
    );
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    // The test agent shares the host network, so the pod's address is the node's.
    assert!(hosts.ends_with("127.0.0.1\tcluster-first\n"), "{hosts}");

    let text = output("custom");
    let (resolv, hosts) = text.split_once("---\n").expect(&text);
    assert_eq!(
        resolv,
        "nameserver 192.0.2.9\nsearch x.example\noptions ndots:2\n"
    );
    assert!(
        hosts.ends_with("127.0.0.1\tdb.pg.default.svc.cluster.test\tdb\n"),
        "{hosts}"
    );

    let text = output("node-dns");
    let (resolv, _) = text.split_once("---\n").expect(&text);
    assert_eq!(
        resolv,
        "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"
    );
    drop(agent);
}
