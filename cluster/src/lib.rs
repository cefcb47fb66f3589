//! Control plane and node agent.
pub mod apiserver;
pub mod store;
