//! The store suite on the etcd backend, against a real etcd started per test.

use std::sync::Arc;

use crate::support::etcd_server::EtcdServer;
use ros_store::Store;
use ros_store::etcd::EtcdStore;

async fn etcd() -> (Arc<dyn Store>, EtcdServer) {
    let server = EtcdServer::start().await;
    let store = EtcdStore::connect(std::slice::from_ref(&server.endpoint), None)
        .await
        .unwrap();
    (Arc::new(store), server)
}

crate::store_suite!(etcd);
