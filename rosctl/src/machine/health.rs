//! `rosctl health`: checks the control plane through the Kubernetes API, as an admin (the
//! kubeconfig comes from the Kubeconfig call, or `--kubeconfig`): the API answers, the store
//! serves reads, the scheduler and controller-manager leaders hold fresh Leases, nodes are Ready.

use super::Targets;
use crate::duration::parse_duration;
use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Use this kubeconfig instead of asking the node for an admin one.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Use this API server URL instead of the one in the kubeconfig.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Keep checking until everything passes or DURATION (e.g. 90s, 5m) has passed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}

/// True when `host` (a name, an IP or `IP:port`) is a loopback address or `localhost`.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| host.trim_matches(['[', ']']).to_string());
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A node reached through a forward on 127.0.0.1 (`rosctl cluster create`) hands out the
/// cluster's own endpoint, which only the nodes' network reaches; dialling it from here would
/// send traffic somewhere else entirely, so ask for the forwarded kubeconfig instead.
fn refuse_unreachable_endpoint(node: &str, config: &kube::Config) -> anyhow::Result<()> {
    let server_host = config.cluster_url.host().unwrap_or_default();
    if is_loopback(node) && !is_loopback(server_host) {
        anyhow::bail!(
            "node {node} is reached through a local forward, but its kubeconfig points at {}; \
             pass --kubeconfig (e.g. the one `rosctl cluster create` wrote) or --server",
            config.cluster_url
        );
    }
    Ok(())
}

async fn client(
    kubeconfig: &str,
    server: Option<&str>,
    fetched_from: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let kc: kube::config::Kubeconfig =
        serde_yaml_ng::from_str(kubeconfig).map_err(|e| anyhow::anyhow!("kubeconfig: {e}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("kubeconfig: {e}"))?;
    if let Some(s) = server {
        config.cluster_url = s
            .parse()
            .map_err(|e| anyhow::anyhow!("--server {s}: {e}"))?;
    } else if let Some(node) = fetched_from {
        refuse_unreachable_endpoint(node, &config)?;
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(kube::Client::try_from(config)?)
}

fn error_text(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(s) = source {
                let part = s.to_string();
                // hyper and kube repeat their sources' text in their own.
                if !text.contains(&part) {
                    text = format!("{text}: {part}");
                }
                source = s.source();
            }
            text
        }
    }
}

async fn api_check(client: &kube::Client) -> Result<String, String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let body = client.request_text(req).await.map_err(error_text)?;
    let version = client.apiserver_version().await.map_err(error_text)?;
    Ok(format!(
        "/readyz {}, version {}",
        body.trim(),
        version.git_version
    ))
}

async fn store_check(client: &kube::Client) -> Result<String, String> {
    let ns: Api<Namespace> = Api::all(client.clone());
    let list = ns.list(&ListParams::default()).await.map_err(error_text)?;
    if !list
        .items
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    {
        return Err("namespace kube-system is missing".into());
    }
    Ok(format!(
        "reads served ({} namespaces, resourceVersion {})",
        list.items.len(),
        list.metadata.resource_version.unwrap_or_default()
    ))
}

/// A leader Lease in kube-system whose holder renewed it within its duration.
async fn lease_check(client: &kube::Client, name: &str) -> Result<String, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases
        .get_opt(name)
        .await
        .map_err(error_text)?
        .ok_or_else(|| format!("no Lease kube-system/{name}: no leader elected"))?;
    let spec = lease.spec.unwrap_or_default();
    let holder = spec
        .holder_identity
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("Lease {name} has no holder"))?;
    let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
    let renewed = spec
        .renew_time
        .or(spec.acquire_time)
        .ok_or_else(|| format!("Lease {name} held by {holder} was never renewed"))?;
    let age = k8s_openapi::jiff::Timestamp::now()
        .duration_since(renewed.0)
        .as_secs();
    if age > duration {
        return Err(format!(
            "leader {holder} last renewed {age}s ago (lease lasts {duration}s)"
        ));
    }
    Ok(format!("leader {holder}, renewed {age}s ago"))
}

async fn nodes_check(client: &kube::Client) -> Result<String, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(error_text)?;
    if list.items.is_empty() {
        return Ok("no nodes registered yet".into());
    }
    let mut not_ready = Vec::new();
    for n in &list.items {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready {
            not_ready.push(n.metadata.name.clone().unwrap_or_default());
        }
    }
    if not_ready.is_empty() {
        Ok(format!("{} Ready", list.items.len()))
    } else {
        Err(format!(
            "not Ready: {} (of {})",
            not_ready.join(", "),
            list.items.len()
        ))
    }
}

/// Runs every check once.
pub async fn run_checks(client: &kube::Client) -> Vec<Check> {
    let api = check("api", api_check(client).await);
    if !api.ok {
        let skipped = |name| Check {
            name,
            ok: false,
            detail: "skipped: the API does not answer".into(),
        };
        return vec![
            api,
            skipped("store"),
            skipped("scheduler"),
            skipped("controller-manager"),
            skipped("nodes"),
        ];
    }
    let (store, sched, cm, nodes) = tokio::join!(
        store_check(client),
        lease_check(client, "kube-scheduler"),
        lease_check(client, "kube-controller-manager"),
        nodes_check(client),
    );
    vec![
        api,
        check("store", store),
        check("scheduler", sched),
        check("controller-manager", cm),
        check("nodes", nodes),
    ]
}

fn print(checks: &[Check]) {
    let mut tb = super::output::table(&["CHECK", "STATUS", "DETAIL"]);
    for c in checks {
        tb.add_row(vec![
            c.name.to_string(),
            if c.ok { "OK" } else { "FAIL" }.to_string(),
            c.detail.clone(),
        ]);
    }
    super::output::print(tb);
}

pub async fn health(t: &Targets, a: &HealthArgs) -> anyhow::Result<bool> {
    let fetched_from = match &a.kubeconfig {
        Some(_) => None,
        None => t.nodes.first().map(String::as_str),
    };
    let kubeconfig = match &a.kubeconfig {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", p.display()))?,
        None => {
            let node = t
                .nodes
                .first()
                .ok_or_else(|| anyhow::anyhow!("no node to ask for a kubeconfig: pass -n"))?;
            let reply = super::kubeconfig::fetch(t, node).await?;
            String::from_utf8(reply.kubeconfig)
                .map_err(|_| anyhow::anyhow!("node {node}: the kubeconfig is not UTF-8"))?
        }
    };
    let client = client(&kubeconfig, a.server.as_deref(), fetched_from).await?;
    let Some(wait) = a.wait else {
        let checks = run_checks(&client).await;
        print(&checks);
        return Ok(checks.iter().any(|c| !c.ok));
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let deadline = Instant::now() + wait;
    loop {
        let checks = run_checks(&client).await;
        let failing: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        if failing.is_empty() || Instant::now() >= deadline {
            spinner.finish_and_clear();
            print(&checks);
            return Ok(!failing.is_empty());
        }
        spinner.set_message(format!(
            "waiting for {}: {}",
            failing[0].name, failing[0].detail
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:46655"));
        assert!(is_loopback("[::1]:50000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.5.0.2"));
        assert!(!is_loopback("10.5.0.2:50000"));
        assert!(!is_loopback("node.example"));
    }

    #[test]
    fn a_forwarded_node_never_sends_us_to_the_cluster_endpoint() {
        let mut config = kube::Config::new("https://10.5.0.2:6443".parse().unwrap());
        let err = refuse_unreachable_endpoint("127.0.0.1:46655", &config).unwrap_err();
        assert!(err.to_string().contains("pass --kubeconfig"), "{err}");
        assert!(refuse_unreachable_endpoint("10.5.0.2:50000", &config).is_ok());
        config.cluster_url = "https://127.0.0.1:34109".parse().unwrap();
        assert!(refuse_unreachable_endpoint("127.0.0.1:46655", &config).is_ok());
    }
}
