//! Control plane and node agent.
