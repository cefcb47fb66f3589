//! The store's integration tests, one test binary: the shared suite on each backend (SQLite,
//! a real etcd), the etcd client beyond the suite (TLS, fail-over, cluster services), and
//! SQLite's durability under `kill -9`.

mod support;

mod crash;
mod etcd;
mod etcd_client;
mod sqlite;
