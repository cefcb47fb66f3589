//! The machine API server: TLS accepted with the machine's current server config (maintenance
//! or mutual TLS), every call authorised by [`auth::AuthLayer`], served by [`service::Api`].

pub mod auth;
mod client_config;
pub mod proxy;
mod service;
pub mod sysinfo;
mod trust;

use crate::machine::Machine;
use ros_api::machine::machine_service_server::MachineServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Compares secrets without an early exit, so timing does not reveal how much matched.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// TLS connections accepted on `listener`, each with the config current at accept time (so a
/// mode switch applies to new connections at once).
fn incoming(
    listener: TcpListener,
    tls: crate::tls::TlsSwitch,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serves the machine API on `listener` until the process ends.
pub async fn serve(machine: Arc<Machine>, listener: TcpListener) -> anyhow::Result<()> {
    let stream = incoming(listener, machine.tls.clone());
    tonic::transport::Server::builder()
        .layer(auth::AuthLayer {
            machine: machine.clone(),
        })
        .add_service(MachineServiceServer::new(service::Api { machine }))
        .serve_with_incoming(stream)
        .await?;
    Ok(())
}

/// Serves the trust port (certificate signing for nodes without the CA key).
pub async fn serve_trust(machine: Arc<Machine>, listener: TcpListener) -> anyhow::Result<()> {
    let stream = incoming(listener, machine.trust_tls.clone());
    tonic::transport::Server::builder()
        .add_service(
            ros_api::machine::trust_service_server::TrustServiceServer::new(trust::Trust {
                machine,
            }),
        )
        .serve_with_incoming(stream)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_comparison() {
        assert!(super::same_secret("abc.def", "abc.def"));
        assert!(!super::same_secret("abc.def", "abc.deg"));
        assert!(!super::same_secret("abc", "abcd"));
    }
}
