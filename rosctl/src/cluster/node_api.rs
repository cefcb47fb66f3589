//! Talking to the new nodes while `cluster create` runs: maintenance mode, apply-config,
//! configured mode, bootstrap, kubeconfig, and the Kubernetes API's readiness.

use super::plan::NodePlan;
use super::state;
use anyhow::{Context as _, Result, bail};
use ros_api::client::Credentials;
use ros_api::machine::{
    ApplyConfigurationRequest, ApplyMode, BootstrapRequest, KubeconfigRequest, VersionRequest,
};
use ros_config::rosconfig::RosConfig;
use std::fmt;
use std::time::{Duration, Instant};

/// How long one call may take before it counts as a failed attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Booting,
    Applying,
    Configuring,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Booting => "booting, waiting for the maintenance-mode API",
            Phase::Applying => "applying its config (apply-config --insecure)",
            Phase::Configuring => "configured, waiting for the mutual-TLS API",
        })
    }
}

/// A node's machine API with the cluster's admin credentials.
pub struct Conn {
    pub target: String,
    pub creds: Credentials,
}

impl Conn {
    pub fn new(rosconfig: &RosConfig, context: &str, target: &str) -> Result<Self> {
        let ctx = rosconfig
            .contexts
            .get(context)
            .with_context(|| format!("rosconfig: no context {context:?}"))?;
        Ok(Self {
            target: target.to_string(),
            creds: Credentials::Mutual {
                ca_pem: ctx.ca_pem().context("rosconfig ca")?,
                crt_pem: ctx.crt_pem().context("rosconfig crt")?,
                key_pem: ctx.key_pem().context("rosconfig key")?,
            },
        })
    }

    async fn client(&self) -> Result<ros_api::client::Client> {
        timed(ros_api::client::connect(&self.target, &self.creds)).await
    }
}

async fn timed<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CALL_TIMEOUT:?}"))?
}

/// The node's `mode` from Version, with the given credentials.
async fn version_mode(target: &str, creds: &Credentials) -> Result<String> {
    timed(async {
        let mut c = ros_api::client::connect(target, creds).await?;
        let r = c.version(VersionRequest {}).await?.into_inner();
        Ok(r.mode)
    })
    .await
}

/// Fails at once when the node's QEMU is gone (its console tells why).
fn check_alive(node: &NodePlan) -> Result<()> {
    if state::running_pid(node).is_none() {
        bail!(
            "{}: QEMU is not running any more (console: {})",
            node.name,
            state::console_log(node).display()
        );
    }
    Ok(())
}

/// Boot to maintenance mode, apply `config_yaml` insecurely over the forward, then wait for
/// the node to answer with the cluster's mutual TLS in configured mode.
pub async fn configure(
    node: &NodePlan,
    config_yaml: &str,
    rosconfig: &RosConfig,
    context: &str,
    timeout: Duration,
    report: impl Fn(Phase),
) -> Result<()> {
    let target = node.api_target();
    report(Phase::Booting);
    let deadline = Instant::now() + timeout;
    loop {
        check_alive(node)?;
        let last = match version_mode(&target, &Credentials::Insecure).await {
            Ok(mode) if mode == "maintenance" => break,
            Ok(mode) => bail!(
                "{}: the node is in {mode:?} mode before it got a config (a config from elsewhere?)",
                node.name
            ),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{}: no maintenance-mode API on {target} within {timeout:?} (last error: {last})",
                node.name
            );
        }
        tokio::time::sleep(POLL).await;
    }

    report(Phase::Applying);
    let reply = timed(async {
        let mut c = ros_api::client::connect(&target, &Credentials::Insecure).await?;
        let r = c
            .apply_configuration(ApplyConfigurationRequest {
                data: config_yaml.as_bytes().to_vec(),
                mode: ApplyMode::Auto as i32,
                dry_run: false,
                try_timeout_seconds: 0,
            })
            .await?;
        Ok(r.into_inner())
    })
    .await
    .with_context(|| format!("{}: apply-config", node.name))?;
    if !reply.accepted {
        bail!(
            "{}: config rejected:\n  {}",
            node.name,
            reply.validation_errors.join("\n  ")
        );
    }

    report(Phase::Configuring);
    let conn = Conn::new(rosconfig, context, &target)?;
    loop {
        check_alive(node)?;
        let last = match version_mode(&target, &conn.creds).await {
            Ok(mode) if mode == "configured" => return Ok(()),
            Ok(mode) => format!("mode {mode}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{}: not answering in configured mode with the cluster's certificates within {timeout:?} (last: {last})",
                node.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

pub enum Bootstrap {
    Done(String),
    /// The node's machined cannot bootstrap (Unimplemented): an image without the cluster role.
    Unavailable(String),
}

pub async fn bootstrap(conn: &Conn) -> Result<Bootstrap> {
    let mut c = conn.client().await.context("bootstrap")?;
    match tokio::time::timeout(CALL_TIMEOUT * 3, c.bootstrap(BootstrapRequest {})).await {
        Err(_) => bail!("bootstrap: no answer within {:?}", CALL_TIMEOUT * 3),
        Ok(Ok(r)) => Ok(Bootstrap::Done(r.into_inner().message)),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            Ok(Bootstrap::Unavailable(s.message().to_string()))
        }
        Ok(Err(s)) => bail!("bootstrap: {:?}: {}", s.code(), s.message()),
    }
}

/// Polls the Kubeconfig call until the cluster has written one.
pub async fn wait_kubeconfig(conn: &Conn, node: &NodePlan, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        check_alive(node)?;
        let attempt = timed(async {
            let mut c = conn.client().await?;
            Ok(c.kubeconfig(KubeconfigRequest {}).await)
        })
        .await;
        let last = match attempt {
            Ok(Ok(r)) => return Ok(r.into_inner().kubeconfig),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => s.message().to_string(),
            Ok(Err(s)) => bail!("kubeconfig: {:?}: {}", s.code(), s.message()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{}: no kubeconfig within {timeout:?} (last: {last})",
                node.name
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Rewrites every cluster's `server` (the node's bridge address is not reachable from the
/// host; the forwarded port is).
pub fn point_kubeconfig_at(kubeconfig: &[u8], server: &str) -> Result<String> {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(kubeconfig).context("kubeconfig from the node: not YAML")?;
    let clusters = doc
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .context("kubeconfig from the node: no clusters list")?;
    for entry in clusters {
        let cluster = entry
            .get_mut("cluster")
            .and_then(|c| c.as_mapping_mut())
            .context("kubeconfig from the node: clusters[].cluster is not a mapping")?;
        cluster.insert("server".into(), server.into());
    }
    Ok(serde_yaml_ng::to_string(&doc)?)
}

/// Waits for `GET /readyz` on the forwarded Kubernetes port to answer 200 (a TCP connect
/// alone proves nothing: QEMU's forward accepts before the guest does).
pub async fn wait_kubernetes(
    node: &NodePlan,
    port: u16,
    kubeconfig: &str,
    timeout: Duration,
) -> Result<()> {
    let tls = super::kube_tls::client_config(kubeconfig)?;
    let deadline = Instant::now() + timeout;
    loop {
        check_alive(node)?;
        let last = match timed(super::kube_tls::get_status(&tls, port, "/readyz")).await {
            Ok(200) => return Ok(()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "{}: Kubernetes API on 127.0.0.1:{port} not ready within {timeout:?} (last: {last})",
                node.name
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_server_is_rewritten_everywhere() {
        let kc = b"apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://10.5.0.2:6443\n    certificate-authority-data: QUJD\n- name: b\n  cluster:\n    server: https://x:1\ncontexts: []\n";
        let out = point_kubeconfig_at(kc, "https://127.0.0.1:4444").unwrap();
        assert_eq!(
            out.matches("server: https://127.0.0.1:4444").count(),
            2,
            "{out}"
        );
        assert!(!out.contains("10.5.0.2") && out.contains("certificate-authority-data: QUJD"));
        assert!(point_kubeconfig_at(b"kind: Config\n", "https://h:1").is_err());
        assert!(point_kubeconfig_at(b"clusters: [ {cluster: 3} ]", "https://h:1").is_err());
    }
}
