//! A real etcd server for a test: a fresh data dir and process, killed by PID when dropped.
//! Fails the test with advice when the `etcd` binary (Debian `etcd-server`) is missing.

use ros_store::etcd_process::EtcdProcess;

pub struct EtcdServer {
    pub endpoint: String,
    // Field order matters: the process stops before its data dir is removed.
    _process: EtcdProcess,
    _data: tempfile::TempDir,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let data = tempfile::tempdir().expect("temp dir for etcd data");
        let process = EtcdProcess::start(&data.path().join("etcd"))
            .await
            .unwrap_or_else(|e| panic!("cannot run the etcd store tests: {e}"));
        EtcdServer {
            endpoint: process.endpoint().to_string(),
            _process: process,
            _data: data,
        }
    }
}
