//! The machine API server: TLS accepted with the machine's current server config (maintenance
//! or mutual TLS), every call authorised by [`auth::AuthLayer`], served by [`service::Api`].

pub mod auth;
pub mod proxy;
mod service;
pub mod sysinfo;

use crate::machine::Machine;
use ros_api::machine::machine_service_server::MachineServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until the process ends.
pub async fn serve(machine: Arc<Machine>, listener: TcpListener) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(64);
    let tls = machine.tls.clone();
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
            // Each connection gets the config current at accept time, so a mode switch applies
            // to new connections at once.
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .layer(auth::AuthLayer {
            machine: machine.clone(),
        })
        .add_service(MachineServiceServer::new(service::Api { machine }))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await?;
    Ok(())
}
