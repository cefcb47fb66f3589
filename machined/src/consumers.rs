//! Who consumes each part of the machine config, and whether a change takes effect on the
//! running node. This one table is what `apply` decides with (reboot or not) and what the
//! cluster role's services are fingerprinted by (a change to a path a service consumes
//! restarts exactly that service); a test walks the config schema and fails when a field has
//! no entry here, or an entry names no field.
//!
//! Paths are key segments joined by dots; `*` stands for any key of a map (a registry host, a
//! sysctl name). An entry covers its path and everything under it; lists are single values.

use crate::cluster::specs::{AGENT, CONTAINERD, SERVER};
use serde_json::Value;

/// A component that reads part of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// The parser: the document's format version (nothing else to apply).
    Parser,
    /// A machined controller (`controllers/`), reconciled whenever the running config changes;
    /// the name is its `ControllerStatus` id.
    Controller(&'static str),
    /// An input of a supervised service (its arguments, environment or generated files): a
    /// change rewrites the inputs and restarts that service.
    Service(&'static str),
    /// The machine API: its certificate, trust requests and access checks follow the running
    /// config.
    MachineApi,
    /// The cluster role (`cluster/`): which services this node runs, and its calls
    /// (bootstrap, kubeconfig, node certificate signing), which read the running config each
    /// time.
    ClusterRole,
    /// The log forwarder (`logship/`).
    LogForwarder,
}

/// When a change to a path takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// At once: the consumers follow the running config.
    Live,
    /// At the next boot (the consumers read it then; changing it under running services would
    /// break them, e.g. the cluster CA or the service ranges).
    Reboot,
    /// Nothing on the node reads it in this version; it is validated and stored only.
    Unconsumed(&'static str),
}

pub struct Entry {
    pub path: &'static str,
    pub consumers: &'static [Consumer],
    pub effect: Effect,
}

use Consumer::*;
use Effect::*;

const fn e(path: &'static str, consumers: &'static [Consumer], effect: Effect) -> Entry {
    Entry {
        path,
        consumers,
        effect,
    }
}

/// Everything that feeds the node's name: the hostname controller, the machine API
/// certificate, the server's certificate names and the agent's node name.
const NAME: &[Consumer] = &[
    Controller("hostname"),
    MachineApi,
    Service(SERVER),
    Service(AGENT),
];

pub const TABLE: &[Entry] = &[
    e("version", &[Parser], Live),
    e(
        "machine.type",
        &[ClusterRole, Service(SERVER), Service(AGENT)],
        Reboot,
    ),
    e("machine.token", &[MachineApi], Live),
    e("machine.ca", &[MachineApi], Reboot),
    e("machine.certSANs", &[MachineApi], Live),
    e(
        "machine.install",
        &[],
        Unconsumed("no installer in this version: images are written whole by the imager"),
    ),
    e("machine.network.hostname", NAME, Live),
    e(
        "machine.network.interfaces",
        &[
            Controller("links"),
            Controller("addresses"),
            Controller("routes"),
            Controller("dhcp"),
            MachineApi,
            Service(SERVER),
            Service(AGENT),
        ],
        Live,
    ),
    e(
        "machine.network.nameservers",
        &[Controller("resolvers")],
        Live,
    ),
    e("machine.time", &[Controller("timeservers")], Live),
    e("machine.sysctls", &[Controller("sysctls")], Live),
    e(
        "machine.kernel.modules",
        &[Controller("kernelmodules")],
        Live,
    ),
    e("machine.files", &[Controller("files")], Live),
    e(
        "machine.env",
        &[Service(SERVER), Service(CONTAINERD), Service(AGENT)],
        Live,
    ),
    e("machine.nodeLabels", &[Service(AGENT)], Live),
    e("machine.nodeTaints", &[Service(AGENT)], Live),
    e("machine.registries", &[Service(AGENT)], Live),
    e("machine.logging.destinations", &[LogForwarder], Live),
    e("machine.features.rbac", &[MachineApi], Live),
    e("machine.features.stableHostname", NAME, Live),
    e("cluster.name", &[ClusterRole, Service(AGENT)], Live),
    e(
        "cluster.controlPlane.endpoint",
        &[ClusterRole, MachineApi, Service(SERVER), Service(AGENT)],
        Live,
    ),
    e(
        "cluster.network",
        &[Service(SERVER), Service(AGENT)],
        Reboot,
    ),
    e("cluster.token", &[ClusterRole, Service(AGENT)], Live),
    e(
        "cluster.ca",
        &[ClusterRole, Service(SERVER), Service(AGENT)],
        Reboot,
    ),
    e(
        "cluster.store",
        &[],
        Unconsumed("cluster server keeps its state in SQLite; the etcd store is not wired yet"),
    ),
    e("cluster.apiServer.certSANs", &[Service(SERVER)], Live),
    e("cluster.serviceAccount.key", &[Service(SERVER)], Reboot),
    e(
        "cluster.allowSchedulingOnControlPlanes",
        &[ClusterRole],
        Live,
    ),
];

fn segments(pattern: &str) -> Vec<&str> {
    pattern.split('.').collect()
}

/// Whether `path` lies under `pattern` or `pattern` under `path` (a removed section touches
/// every entry below it).
fn touches(pattern: &str, path: &[String]) -> bool {
    segments(pattern)
        .iter()
        .zip(path)
        .all(|(p, s)| *p == "*" || p == s)
}

/// The entries a changed path touches.
pub fn entries_for(path: &[String]) -> impl Iterator<Item = &'static Entry> + '_ {
    TABLE.iter().filter(move |e| touches(e.path, path))
}

/// What a set of changed paths asks of the node.
#[derive(Debug, Default, PartialEq)]
pub struct Impact {
    /// Changed paths that need a reboot.
    pub reboot: Vec<String>,
    /// Sections with changes that nothing on the node reads (with why).
    pub unconsumed: Vec<String>,
    /// Services whose inputs changed (restarted when running).
    pub services: Vec<&'static str>,
}

pub fn impact(changed: &[Vec<String>]) -> Impact {
    let mut out = Impact::default();
    for path in changed {
        let shown = crate::diff::show_path(path);
        let entries: Vec<&Entry> = entries_for(path).collect();
        if entries.is_empty() {
            // Not a config field (the types reject unknown ones): be safe.
            out.reboot.push(shown);
            continue;
        }
        for e in entries {
            match e.effect {
                Reboot if !out.reboot.contains(&shown) => out.reboot.push(shown.clone()),
                Unconsumed(why) => {
                    let line = format!("{} ({why})", e.path);
                    if !out.unconsumed.contains(&line) {
                        out.unconsumed.push(line);
                    }
                }
                _ => {}
            }
            for c in e.consumers {
                if let Service(id) = c
                    && !out.services.contains(id)
                {
                    out.services.push(id);
                }
            }
        }
    }
    out
}

/// The values of every path the table gives `service`, as one JSON document: a service's
/// spec carries it, so a change to any of them makes the spec differ and the cluster role
/// restarts that service (and only it).
pub fn service_inputs(service: &str, config: &Value) -> Value {
    let mut inputs = serde_json::Map::new();
    for e in TABLE {
        if e.consumers
            .iter()
            .any(|c| matches!(c, Service(id) if *id == service))
        {
            let mut found = Vec::new();
            collect(config, &segments(e.path), &mut String::new(), &mut found);
            for (k, v) in found {
                inputs.insert(k, v);
            }
        }
    }
    Value::Object(inputs)
}

fn collect(v: &Value, pattern: &[&str], at: &mut String, out: &mut Vec<(String, Value)>) {
    let Some((first, rest)) = pattern.split_first() else {
        out.push((at.clone(), v.clone()));
        return;
    };
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        if *first != "*" && first != k {
            continue;
        }
        let len = at.len();
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(k);
        collect(child, rest, at, out);
        at.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    /// Every field of the config schema, as patterns: objects with properties are descended,
    /// maps of objects descended with `*`; lists, scalars and maps of scalars are leaves.
    fn schema_leaves() -> Vec<String> {
        let schema: Value = serde_json::from_str(&ros_config::schema::json_schema()).unwrap();
        let mut out = Vec::new();
        walk(&schema, &schema, "", &mut out);
        out
    }

    fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap();
            return resolve(root, &root["$defs"][name]);
        }
        // `Option<T>`: anyOf [T, null].
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = alts
                .iter()
                .filter(|a| a.get("type") != Some(&json!("null")))
                .collect();
            if non_null.len() == 1 {
                return resolve(root, non_null[0]);
            }
        }
        s
    }

    fn walk(root: &Value, s: &Value, at: &str, out: &mut Vec<String>) {
        let s = resolve(root, s);
        let join = |k: &str| {
            if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            }
        };
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(root, v, &join(k), out);
            }
            return;
        }
        if let Some(values) = s.get("additionalProperties").filter(|v| v.is_object()) {
            let values = resolve(root, values);
            if values.get("properties").is_some() {
                walk(root, values, &join("*"), out);
                return;
            }
        }
        out.push(at.to_string());
    }

    fn covering(leaf: &str) -> Vec<&'static str> {
        TABLE
            .iter()
            .filter(|e| leaf == e.path || leaf.starts_with(&format!("{}.", e.path)))
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn every_config_field_has_exactly_one_entry() {
        let leaves = schema_leaves();
        assert!(leaves.len() > 30, "{leaves:?}");
        assert!(
            leaves.contains(&"machine.registries.mirrors.*.endpoints".to_string()),
            "{leaves:?}"
        );
        let mut missing = Vec::new();
        for leaf in &leaves {
            match covering(leaf).len() {
                0 => missing.push(leaf.clone()),
                1 => {}
                _ => panic!("{leaf} is covered by several entries: {:?}", covering(leaf)),
            }
        }
        assert!(
            missing.is_empty(),
            "config fields with no consumer in machined/src/consumers.rs: {missing:?}"
        );
        for e in TABLE {
            assert!(
                leaves
                    .iter()
                    .any(|l| l == e.path || l.starts_with(&format!("{}.", e.path))),
                "{} names no config field",
                e.path
            );
        }
    }

    #[test]
    fn entries_name_their_consumers_and_live_ones_have_one() {
        for e in TABLE {
            match e.effect {
                Unconsumed(_) => assert!(e.consumers.is_empty(), "{}", e.path),
                _ => assert!(!e.consumers.is_empty(), "{} has no consumer", e.path),
            }
            for c in e.consumers {
                match c {
                    Service(id) => assert!([SERVER, CONTAINERD, AGENT].contains(id), "{id}"),
                    Controller(name) => assert!(
                        crate::controllers::CONTROLLERS.contains(name),
                        "{}: unknown controller {name}",
                        e.path
                    ),
                    _ => {}
                }
            }
        }
        // The fields nothing reads are exactly these; a new one must get a consumer.
        let unconsumed: Vec<&str> = TABLE
            .iter()
            .filter(|e| matches!(e.effect, Unconsumed(_)))
            .map(|e| e.path)
            .collect();
        assert_eq!(unconsumed, ["machine.install", "cluster.store"]);
    }

    #[test]
    fn registries_restart_the_agent_only_and_need_no_reboot() {
        let i = impact(&[path("machine.registries.mirrors.registry.x.endpoints")]);
        assert_eq!(i.services, [AGENT]);
        assert!(i.reboot.is_empty() && i.unconsumed.is_empty());
        let i = impact(&[path("machine.env")]);
        assert_eq!(i.services, [SERVER, CONTAINERD, AGENT]);
        let i = impact(&[path("cluster.network.podSubnets"), path("machine.type")]);
        assert_eq!(i.reboot, ["cluster.network.podSubnets", "machine.type"]);
        // A whole removed section touches every entry under it.
        let i = impact(&[path("machine.logging")]);
        assert!(i.reboot.is_empty() && i.services.is_empty());
        let i = impact(&[path("machine.install")]);
        assert!(i.reboot.is_empty());
        assert_eq!(i.unconsumed.len(), 1);
        assert!(impact(&[path("machine.networkX")]).reboot.len() == 1);
    }

    #[test]
    fn service_inputs_follow_the_table() {
        let cfg = json!({
            "machine": {
                "registries": {"mirrors": {"r.x": {"endpoints": ["http://a"]}}},
                "sysctls": {"a.b": "1"},
                "env": {"X": "1"},
            },
            "cluster": {"name": "c"},
        });
        let agent = service_inputs(AGENT, &cfg);
        assert_eq!(
            agent["machine/registries"]["mirrors"]["r.x"]["endpoints"][0],
            "http://a"
        );
        assert_eq!(agent["machine/env"]["X"], "1");
        assert_eq!(agent["cluster/name"], "c");
        assert!(agent.get("machine/sysctls").is_none());
        let containerd = service_inputs(CONTAINERD, &cfg);
        assert!(containerd.get("machine/registries").is_none());
        let mut changed = cfg.clone();
        changed["machine"]["registries"]["mirrors"]["r.x"]["endpoints"][0] = json!("http://b");
        assert_ne!(service_inputs(AGENT, &changed), agent);
        assert_eq!(service_inputs(CONTAINERD, &changed), containerd);
    }
}
