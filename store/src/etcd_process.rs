//! A local, single-member etcd server process for development, tests and benchmarks: started
//! on free 127.0.0.1 ports with a given data dir (and optionally TLS on its client port),
//! killed by its PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::StoreError;
use super::etcd::{EtcdStore, EtcdTls};

/// How long etcd may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct EtcdProcess {
    child: Child,
    endpoint: String,
}

/// TLS on the local etcd's client port (PEM files).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server certificate and key etcd presents.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, etcd requires client certificates signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on PATH (Debian package `etcd-server`).
pub fn etcd_binary() -> Result<PathBuf, StoreError> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            StoreError::Other(
                "the `etcd` server binary was not found on PATH: install it \
                 (`apt-get install etcd-server` on Debian) or set ETCD_BIN"
                    .into(),
            )
        })
}

fn free_port() -> Result<u16, StoreError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StoreError::other("find a free 127.0.0.1 port", e))
}

impl EtcdProcess {
    /// Starts etcd with its data in `data_dir` and waits until it answers.
    pub async fn start(data_dir: &Path) -> Result<EtcdProcess, StoreError> {
        Self::spawn(data_dir, None).await
    }

    /// Starts etcd serving clients over TLS (`https://` endpoint) and waits until it answers
    /// a client using `client`.
    pub async fn start_tls(
        data_dir: &Path,
        server: &ServerTls,
        client: EtcdTls,
    ) -> Result<EtcdProcess, StoreError> {
        Self::spawn(data_dir, Some((server, client))).await
    }

    async fn spawn(
        data_dir: &Path,
        tls: Option<(&ServerTls, EtcdTls)>,
    ) -> Result<EtcdProcess, StoreError> {
        let bin = etcd_binary()?;
        let (client, peer) = (free_port()?, free_port()?);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(&bin);
        if let Some((server, _)) = &tls {
            command
                .arg(format!("--cert-file={}", server.cert_file.display()))
                .arg(format!("--key-file={}", server.key_file.display()));
            if let Some(ca) = &server.client_ca_file {
                command
                    .arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        let child = command
            .arg("--name=local")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=local={peer_url}"))
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| StoreError::other(&format!("start {}", bin.display()), e))?;
        let mut process = EtcdProcess {
            child,
            endpoint: client_url,
        };
        process.wait_ready(tls.map(|(_, client)| client)).await?;
        Ok(process)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id, for callers that want to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self, tls: Option<EtcdTls>) -> Result<(), StoreError> {
        let deadline = Instant::now() + START_TIMEOUT;
        // Connects lazily, so every status call below tries to connect again.
        let client = EtcdStore::connect(std::slice::from_ref(&self.endpoint), tls).await?;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| StoreError::other("poll etcd", e))?
            {
                return Err(StoreError::Other(format!(
                    "etcd exited during start-up: {status}"
                )));
            }
            let error = match client.status().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(StoreError::Other(format!(
                    "etcd at {} did not answer within {START_TIMEOUT:?} (last error: {error})",
                    self.endpoint
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
