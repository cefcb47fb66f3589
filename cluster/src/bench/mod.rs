//! Shared pieces of the benchmark binaries (`src/bin/*-bench.rs`): latency figures, the
//! report every bench prints (a table with ratios, or JSON), and for `pod-bench` a private
//! containerd with a small image and the cleanup of everything it leaves behind.

pub mod containerd;
pub mod image;
pub mod procs;
pub mod report;
pub mod stats;
