//! Controllers: derive resources from the running config and apply them to the system through
//! the `System` trait, idempotently, retrying with backoff until they succeed or the config
//! changes.

pub mod address_status;
mod derive;
pub mod resolvers;
pub mod timesync;

pub use derive::{Desired, derive};

use crate::machine::Machine;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Retry delay after `attempt` failures: 100 ms doubling up to 30 s.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(9)).min(30_000))
}

/// Runs the controllers until machined exits.
pub fn spawn(machine: Arc<Machine>) {
    address_status::spawn(machine.clone());
    timesync::spawn(machine.clone());
    tokio::spawn(async move {
        let mut config = machine.watch_config();
        loop {
            let running = config.borrow_and_update().clone();
            let links = machine.system.ethernet_links();
            let mut desired = derive(running.as_deref().map(|r| &r.config), &links);
            if let Some(r) = &running {
                // The configured or stable name; without one, the name the node booted with
                // (undoing a name an earlier config set).
                desired.hostname = machine.hostname_for(&r.config).or_else(|| {
                    (!machine.boot_hostname.is_empty()
                        && machine.system.hostname() != machine.boot_hostname)
                        .then(|| machine.boot_hostname.clone())
                });
            }
            publish(&machine, &desired);
            let mut attempt = 0u32;
            loop {
                let failures = apply(&machine, &desired);
                record(&machine, &failures, attempt);
                address_status::refresh(&machine);
                resolvers::refresh(&machine);
                if failures.is_empty() {
                    break;
                }
                let delay = retry_delay(attempt);
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    changed = config.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                }
            }
            if config.has_changed().unwrap_or(false) {
                continue;
            }
            if config.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Writes the derived spec resources (the store makes identical writes no-ops).
fn publish(machine: &Machine, d: &Desired) {
    let store = &machine.resources;
    match &d.hostname {
        Some(h) => {
            store.put("Hostname", "hostname", json!({"hostname": h}));
        }
        None => {
            store.delete("Hostname", "hostname");
        }
    }
    let mut links: Vec<(String, serde_json::Value)> = d
        .links
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                json!({"name": l.name, "mtu": l.mtu, "dhcp": l.dhcp}),
            )
        })
        .collect();
    for name in &d.dhcp_links {
        if !links.iter().any(|(id, _)| id == name) {
            links.push((
                name.clone(),
                json!({"name": name, "mtu": null, "dhcp": true}),
            ));
        }
    }
    store.replace_all("Links", links);
    store.replace_all(
        "AddressSpec",
        d.links
            .iter()
            .flat_map(|l| {
                l.addresses.iter().map(move |a| {
                    (
                        format!("{}/{a}", l.name),
                        json!({"link": l.name, "address": a}),
                    )
                })
            })
            .collect(),
    );
    store.replace_all(
        "Routes",
        d.routes
            .iter()
            .map(|r| {
                (
                    format!("{}/{}", r.link, r.network),
                    serde_json::to_value(r).unwrap_or_default(),
                )
            })
            .collect(),
    );
    // Resolvers: the servers in use, from the config or the DHCP leases.
    resolvers::refresh(machine);
    store.replace_all(
        "TimeServers",
        if d.time_servers.is_empty() {
            vec![]
        } else {
            vec![(
                "timeservers".to_string(),
                json!({"servers": d.time_servers}),
            )]
        },
    );
    store.replace_all(
        "Sysctls",
        d.sysctls
            .iter()
            .map(|(k, v)| (k.clone(), json!({"value": v})))
            .collect(),
    );
    store.replace_all(
        "Files",
        d.files
            .iter()
            .map(|f| (f.path.clone(), json!({"path": f.path, "permissions": format!("{:o}", f.mode), "append": f.append, "bytes": f.content.len()})))
            .collect(),
    );
}

/// Applies every desired effect; returns (controller, error) for each that failed.
fn apply(machine: &Machine, d: &Desired) -> Vec<(&'static str, String)> {
    let sys = &machine.system;
    let mut failures = Vec::new();
    let mut check = |controller: &'static str, r: crate::system::SysResult| {
        if let Err(e) = r {
            failures.push((controller, e.to_string()));
        }
    };
    if let Some(h) = &d.hostname {
        check("hostname", sys.set_hostname(h));
    }
    for l in &d.links {
        check("links", sys.ensure_link(&l.name, l.mtu));
        if !l.addresses.is_empty() {
            check("addresses", sys.ensure_addresses(&l.name, &l.addresses));
        }
    }
    for link in &d.dhcp_links {
        check("dhcp", sys.start_dhcp(link));
    }
    if !d.routes.is_empty() {
        check("routes", sys.ensure_routes(&d.routes));
    }
    if !d.resolvers.is_empty() {
        check("resolvers", sys.set_resolvers(&d.resolvers));
    }
    if !d.time_servers.is_empty() {
        check("timeservers", sys.set_time_servers(&d.time_servers));
    }
    // Modules first: sysctls such as net.bridge.* exist only once their module is loaded.
    let (modules, errors) = load_modules(sys.as_ref(), &d.kernel_modules);
    machine.resources.replace_all("KernelModuleStatus", modules);
    for e in errors {
        check("kernelmodules", Err(e));
    }
    for (k, v) in &d.sysctls {
        check("sysctls", sys.set_sysctl(k, v));
    }
    for f in &d.files {
        check(
            "files",
            sys.write_file(&f.path, &f.content, f.mode, f.append),
        );
    }
    failures
}

/// Loads each wanted module; returns the `KernelModuleStatus` resources (id = module name) and
/// the errors. One module failing does not keep the others from loading.
fn load_modules(
    sys: &dyn crate::system::System,
    wants: &[derive::ModuleWant],
) -> (
    Vec<(String, serde_json::Value)>,
    Vec<crate::system::SystemError>,
) {
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for k in wants {
        let result = sys.load_kernel_module(&k.name, &k.parameters);
        let error = result.as_ref().err().map(|e| e.to_string());
        statuses.push((
            k.name.clone(),
            json!({"name": k.name, "parameters": k.parameters, "loaded": error.is_none(), "error": error}),
        ));
        errors.extend(result.err());
    }
    (statuses, errors)
}

/// The controllers' `ControllerStatus` ids (the consumer table names them).
pub(crate) const CONTROLLERS: &[&str] = &[
    "hostname",
    "links",
    "addresses",
    "dhcp",
    "routes",
    "resolvers",
    "timeservers",
    "kernelmodules",
    "sysctls",
    "files",
];

fn record(machine: &Machine, failures: &[(&'static str, String)], attempt: u32) {
    for name in CONTROLLERS {
        let errors: Vec<&String> = failures
            .iter()
            .filter(|(c, _)| c == name)
            .map(|(_, e)| e)
            .collect();
        let spec = if errors.is_empty() {
            json!({"ready": true, "attempt": attempt + 1, "error": null})
        } else {
            json!({"ready": false, "attempt": attempt + 1, "error": errors.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("; ")})
        };
        machine.resources.put("ControllerStatus", name, spec);
    }
    for (controller, error) in failures {
        tracing::warn!(controller, attempt, "apply failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::DevSystem;

    fn want(name: &str, parameters: &[&str]) -> derive::ModuleWant {
        derive::ModuleWant {
            name: name.into(),
            parameters: parameters.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn modules_load_in_order_and_a_failure_is_reported_per_module() {
        let sys = DevSystem::new("h");
        sys.fail_next("kmod", 1);
        let wants = [want("wireguard", &[]), want("loop", &["max_loop=64"])];
        let (statuses, errors) = load_modules(&sys, &wants);
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors, ["kmod: injected failure"]);
        assert_eq!(statuses[0].0, "wireguard");
        assert_eq!(statuses[0].1["loaded"], false);
        assert_eq!(statuses[0].1["error"], "kmod: injected failure");
        assert_eq!(statuses[1].0, "loop");
        assert_eq!(statuses[1].1["loaded"], true);
        assert!(statuses[1].1["error"].is_null());
        assert_eq!(sys.effects(), ["kmod load loop [max_loop=64]"]);

        // The retry loads the one that failed.
        let (statuses, errors) = load_modules(&sys, &wants);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(statuses.iter().all(|(_, s)| s["loaded"] == true));
    }

    #[test]
    fn config_modules_are_desired() {
        let yaml = "version: v1alpha1\nmachine:\n  type: worker\n  kernel:\n    modules:\n    - name: br_netfilter\n    - name: loop\n      parameters: [max_loop=64]\ncluster: {}\n";
        let cfg: ros_config::MachineConfig =
            serde_json::from_value(ros_config::parse_yaml_value(yaml).unwrap()).unwrap();
        let d = derive(Some(&cfg), &[]);
        assert_eq!(
            d.kernel_modules,
            [want("br_netfilter", &[]), want("loop", &["max_loop=64"])]
        );
    }
}
