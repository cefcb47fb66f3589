//! machined: the machine daemon. It takes a machine config (from the platform, from STATE or
//! through the API), derives resources from it with controllers, applies them to the system,
//! supervises services and serves the machine API (see ARCHITECTURE.md).

pub mod api;
pub mod apply;
pub mod clock;
pub mod cluster;
pub mod consumers;
pub mod controllers;
pub mod diff;
pub mod events;
pub mod hostname;
pub mod intake;
pub mod logbuf;
pub mod logship;
pub mod machine;
pub mod paths;
pub mod redact;
pub mod resources;
pub mod services;
pub mod state;
pub mod system;
pub mod tls;
mod tracing_sink;

pub use tracing_sink::init_tracing;
