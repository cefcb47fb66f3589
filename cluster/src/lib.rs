//! Control plane and node agent.
pub mod agent;
pub mod announce;
pub mod apiserver;
pub mod bench;
pub mod controllers;
pub mod dns;
pub mod leader;
pub mod node_labels;
pub mod private_files;
pub mod proxy;
pub mod scheduler;
pub mod version;
