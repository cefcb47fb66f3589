//! The store suite on the etcd backend, against a real etcd started per test.

mod store_support;

use std::sync::Arc;

use cluster::store::Store;
use cluster::store::etcd::EtcdStore;
use store_support::etcd_server::EtcdServer;

async fn etcd() -> (Arc<dyn Store>, EtcdServer) {
    let server = EtcdServer::start().await;
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), None)
        .await
        .unwrap();
    (Arc::new(store), server)
}

store_suite!(etcd);
