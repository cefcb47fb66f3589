//! The `Addresses` status resource: every address on the links as the kernel has it (static
//! ones from the config, the DHCP lease's, and the system's own such as loopback), refreshed
//! periodically, after each apply pass and when read.

use crate::machine::Machine;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often the kernel's addresses are read again (a lease can come or go at any time).
const PERIOD: Duration = Duration::from_secs(5);

/// Reads the addresses from the system and replaces the `Addresses` resources with them.
pub fn refresh(machine: &Machine) {
    let found = match machine.system.addresses() {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("reading the addresses on the links: {e}");
            return;
        }
    };
    let configured: Vec<String> = machine
        .resources
        .list("AddressSpec")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let items = found
        .into_iter()
        .map(|a| {
            let id = format!("{}/{}", a.link, a.address);
            let source = if a.dhcp {
                "dhcp"
            } else if configured.contains(&id) {
                "static"
            } else {
                "system"
            };
            let spec = json!({
                "link": a.link,
                "address": a.address,
                "family": a.family,
                "scope": a.scope,
                "source": source,
            });
            (id, spec)
        })
        .collect();
    machine.resources.replace_all("Addresses", items);
}

pub fn spawn(machine: Arc<Machine>) {
    tokio::spawn(async move {
        loop {
            let m = machine.clone();
            let _ = tokio::task::spawn_blocking(move || {
                refresh(&m);
                super::resolvers::refresh(&m);
            })
            .await;
            tokio::time::sleep(PERIOD).await;
        }
    });
}
