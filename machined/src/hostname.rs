//! The node's name: the configured hostname; else, with `machine.features.stableHostname`
//! (the default) and no name from the platform, one derived from the machine id, so nodes
//! without a configured name still get distinct names that survive reboots (as Talos does).

use std::io::Read;
use std::path::Path;

/// init's default hostname (init/src/boot.rs) and the kernel's "no name": not a real name.
const PLACEHOLDERS: &[&str] = &["", "(none)", "localhost", "ros"];

/// Whether `name` is a placeholder rather than a name the platform gave the node.
pub fn is_placeholder(name: &str) -> bool {
    PLACEHOLDERS.contains(&name)
}

/// The machine id: 32 hex digits made once and kept on STATE (`machine-id`), so it survives
/// reboots and a reset gives a new one.
pub fn machine_id(state: &Path) -> std::io::Result<String> {
    let path = state.join("machine-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(id.to_ascii_lowercase());
        }
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ros_config::atomic_write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// `ros-` and six characters of the machine id, as `ros-1a2-b3c`.
pub fn stable(machine_id: &str) -> String {
    let id: String = machine_id.chars().filter(char::is_ascii_hexdigit).collect();
    let id = format!("{id:0<6}");
    format!("ros-{}-{}", &id[..3], &id[3..6])
}

/// The name a config gives the node: `machine.network.hostname`, else the stable name when
/// the feature is on and the platform gave no name (`boot_hostname`, the name machined found
/// at start, is a placeholder).
pub fn for_config(
    cfg: &ros_config::MachineConfig,
    boot_hostname: &str,
    machine_id: &str,
) -> Option<String> {
    if let Some(h) = cfg
        .machine
        .network
        .hostname
        .as_ref()
        .filter(|h| !h.is_empty())
    {
        return Some(h.clone());
    }
    (cfg.machine.features.stable_hostname && is_placeholder(boot_hostname))
        .then(|| stable(machine_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml_machine: &str) -> ros_config::MachineConfig {
        let yaml =
            format!("version: v1alpha1\nmachine:\n  type: worker\n{yaml_machine}cluster: {{}}\n");
        serde_json::from_value(ros_config::parse_yaml_value(&yaml).unwrap()).unwrap()
    }

    #[test]
    fn configured_then_stable_then_none() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(stable(id), "ros-012-345");
        let named = cfg("  network:\n    hostname: w1\n");
        assert_eq!(for_config(&named, "ros", id).as_deref(), Some("w1"));
        let unnamed = cfg("");
        assert_eq!(
            for_config(&unnamed, "ros", id).as_deref(),
            Some("ros-012-345")
        );
        assert_eq!(
            for_config(&unnamed, "(none)", id).as_deref(),
            Some("ros-012-345")
        );
        // A name from the platform is kept.
        assert_eq!(for_config(&unnamed, "edge-7", id), None);
        let off = cfg("  features:\n    stableHostname: false\n");
        assert_eq!(for_config(&off, "ros", id), None);
    }

    #[test]
    fn the_machine_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = machine_id(dir.path()).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(machine_id(dir.path()).unwrap(), a);
        std::fs::write(dir.path().join("machine-id"), "junk").unwrap();
        assert_ne!(machine_id(dir.path()).unwrap(), a);
    }
}
