//! `--config-patch`, `--config-patch-control-plane` and `--config-patch-worker` of
//! `cluster create`, as `talosctl cluster create` has them: each `@file` or inline YAML/JSON,
//! repeatable, a list being RFC 6902 operations and a map a strategic merge (the config
//! crate's patch support). They are applied to each node's finished config (after its
//! hostname, links and scheduling are set, so a patch has the last word), common ones first.

use super::plan::Role;
use anyhow::{Result, anyhow, bail};
use ros_config::patch::{Patch, patch_config};
use ros_config::{MachineConfig, MachineType};

pub const ALL: &str = "--config-patch";
pub const CONTROL_PLANE: &str = "--config-patch-control-plane";
pub const WORKER: &str = "--config-patch-worker";

/// The loaded patches, each with the flag it came from (errors name it).
#[derive(Debug, Clone, Default)]
pub struct NodePatches {
    all: Vec<Patch>,
    control_plane: Vec<Patch>,
    worker: Vec<Patch>,
}

/// Reads one flag's values; inline patches are numbered per flag (`#2 (inline)`).
fn load(flag: &str, args: &[String]) -> Result<Vec<Patch>> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| Patch::load(arg, i + 1).map_err(|e| anyhow!("{flag}: {e}")))
        .collect()
}

impl NodePatches {
    /// Reads every patch before anything starts, so a bad one stops `create` early.
    pub fn load(all: &[String], control_plane: &[String], worker: &[String]) -> Result<Self> {
        Ok(Self {
            all: load(ALL, all)?,
            control_plane: load(CONTROL_PLANE, control_plane)?,
            worker: load(WORKER, worker)?,
        })
    }

    /// `cfg` with the patches for `role` applied, one at a time so an error names its flag
    /// and patch; `node` names the node in errors.
    pub fn apply(&self, cfg: MachineConfig, role: Role, node: &str) -> Result<MachineConfig> {
        let specific = match role {
            Role::Controlplane => (CONTROL_PLANE, &self.control_plane),
            Role::Worker => (WORKER, &self.worker),
        };
        let mut cfg = cfg;
        for (flag, patches) in [(ALL, &self.all), specific] {
            for patch in patches {
                cfg = patch_config(&cfg, std::slice::from_ref(patch))
                    .map_err(|e| anyhow!("{flag}: {node}: {e}"))?;
                let wanted = match role {
                    Role::Controlplane => MachineType::ControlPlane,
                    Role::Worker => MachineType::Worker,
                };
                if cfg.machine.machine_type != wanted {
                    bail!(
                        "{flag}: {node}: patch {}: machine.type: a patch cannot change a node's role (use --controlplanes/--workers)",
                        patch.name
                    );
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ros_config::generate::{GenOptions, generate};
    use ros_config::secrets::Secrets;

    fn configs() -> (MachineConfig, MachineConfig) {
        let g = generate(&GenOptions {
            cluster_name: "demo".into(),
            endpoint: "https://10.5.0.2:6443".into(),
            secrets: Secrets::generate().unwrap(),
            patches: Vec::new(),
            patches_control_plane: Vec::new(),
            patches_worker: Vec::new(),
        })
        .unwrap();
        (g.control_plane, g.worker)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn common_patches_reach_every_node_and_role_patches_their_role() {
        let p = NodePatches::load(
            &strings(&["machine:\n  nodeLabels:\n    all: \"yes\"\n"]),
            &strings(&[r#"[{"op": "add", "path": "/cluster/allowSchedulingOnControlPlanes", "value": true}]"#]),
            &strings(&[r#"{"machine": {"nodeLabels": {"tier": "edge"}}}"#]),
        )
        .unwrap();
        let (cp, worker) = configs();
        let cp = p.apply(cp, Role::Controlplane, "cp-1").unwrap();
        assert!(cp.cluster.allow_scheduling_on_control_planes);
        assert_eq!(
            cp.machine.node_labels.get("all").map(String::as_str),
            Some("yes")
        );
        assert!(!cp.machine.node_labels.contains_key("tier"));
        let w = p.apply(worker, Role::Worker, "w-1").unwrap();
        assert_eq!(
            w.machine.node_labels.get("all").map(String::as_str),
            Some("yes")
        );
        assert_eq!(
            w.machine.node_labels.get("tier").map(String::as_str),
            Some("edge")
        );
        assert!(!w.cluster.allow_scheduling_on_control_planes);
    }

    #[test]
    fn patches_apply_in_order_and_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirror.yaml");
        std::fs::write(
            &file,
            "machine:\n  registries:\n    mirrors:\n      registry.test:\n        endpoints: [\"http://10.0.2.2:5000\"]\n        skipFallback: true\n",
        )
        .unwrap();
        let p = NodePatches::load(
            &strings(&[
                &format!("@{}", file.display()),
                r#"[{"op": "replace", "path": "/machine/registries/mirrors/registry.test/endpoints/0", "value": "http://10.0.2.2:5001"}]"#,
            ]),
            &[],
            &[],
        )
        .unwrap();
        let (_, worker) = configs();
        let w = p.apply(worker, Role::Worker, "w-1").unwrap();
        let m = &w.machine.registries.mirrors["registry.test"];
        assert_eq!(m.endpoints, ["http://10.0.2.2:5001"]);
        assert!(m.skip_fallback);
        // The result is a valid config the strict parser takes back.
        ros_config::parse(&w.to_yaml()).unwrap();
    }

    #[test]
    fn errors_name_the_flag_the_patch_and_the_problem() {
        let e = NodePatches::load(&[], &[], &strings(&["@/nonexistent/p.yaml"])).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("--config-patch-worker: "), "{e}");
        assert!(
            e.contains("@/nonexistent/p.yaml") && e.contains("cannot read"),
            "{e}"
        );

        let e = NodePatches::load(&strings(&["ok: [1"]), &[], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--config-patch: patch #1 (inline)"),
            "{e}"
        );

        let e = NodePatches::load(&strings(&["42"]), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("a patch is a map"), "{e}");

        // Parsed fine, fails on the config: unknown field, with the node and its path.
        let p = NodePatches::load(
            &[],
            &strings(&["machine: {}", "machine:\n  noSuchField: 1\n"]),
            &[],
        )
        .unwrap();
        let (cp, worker) = configs();
        let e = p
            .apply(cp, Role::Controlplane, "demo-controlplane-1")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--config-patch-control-plane: demo-controlplane-1: patch #2 (inline)"),
            "{e}"
        );
        assert!(e.contains("noSuchField"), "{e}");
        // Control-plane patches leave workers alone.
        p.apply(worker, Role::Worker, "w-1").unwrap();

        // A JSON patch whose target is missing.
        let p = NodePatches::load(
            &strings(&[r#"[{"op": "replace", "path": "/machine/nothing/here", "value": 1}]"#]),
            &[],
            &[],
        )
        .unwrap();
        let (_, worker) = configs();
        let e = p
            .apply(worker, Role::Worker, "w-1")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--config-patch: w-1: patch #1 (inline)"),
            "{e}"
        );

        // Changing the role is refused (by validation, or by the role check when the
        // config would still be valid).
        let p = NodePatches::load(&strings(&["machine:\n  type: worker\n"]), &[], &[]).unwrap();
        let (cp, _) = configs();
        let e = p
            .apply(cp, Role::Controlplane, "cp-1")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--config-patch: cp-1: patch #1 (inline)"),
            "{e}"
        );
    }
}
