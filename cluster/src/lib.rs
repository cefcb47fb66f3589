//! Control plane and node agent.
pub mod store;
