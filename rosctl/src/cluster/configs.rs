//! Machine configs and the rosconfig for a planned cluster: one `gen config` run (fresh PKI),
//! then per-node settings (hostname, the two NICs, 127.0.0.1 in the certificate SANs), then
//! the user's `--config-patch*` patches.

use super::patches::NodePatches;
use super::plan::{BRIDGE_LINK, NodePlan, Plan, Role, USER_LINK};
use anyhow::{Context as _, Result};
use ros_config::generate::{GenOptions, generate};
use ros_config::rosconfig::RosConfig;
use ros_config::secrets::Secrets;
use ros_config::{Interface, MachineConfig};

/// The configs of every node (in plan order) and the admin rosconfig.
pub struct ClusterConfigs {
    pub nodes: Vec<MachineConfig>,
    pub rosconfig: RosConfig,
}

pub fn build(plan: &Plan, secrets: Secrets, patches: &NodePatches) -> Result<ClusterConfigs> {
    let generated = generate(&GenOptions {
        cluster_name: plan.name.clone(),
        endpoint: plan.endpoint.clone(),
        secrets,
        patches: Vec::new(),
        patches_control_plane: Vec::new(),
        patches_worker: Vec::new(),
    })
    .context("generating the cluster's configs")?;
    let workers = plan.nodes.iter().any(|n| n.role == Role::Worker);
    let nodes = plan
        .nodes
        .iter()
        .map(|node| {
            let base = match node.role {
                Role::Controlplane => &generated.control_plane,
                Role::Worker => &generated.worker,
            };
            let cfg = node_config(base, node, plan, !workers)?;
            let cfg = patches.apply(cfg, node.role, &node.name)?;
            cfg.validate().map_err(|e| {
                anyhow::anyhow!("{}: the patched config is invalid:\n{e}", node.name)
            })?;
            Ok(cfg)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rosconfig = generated.rosconfig;
    let ctx = rosconfig
        .contexts
        .get_mut(&plan.name)
        .context("gen config made no context for the cluster")?;
    // The host reaches the first control plane only through its forward; it forwards calls
    // for other nodes (`-n 10.5.0.3`) over the bridge.
    ctx.endpoints = vec![plan.nodes[0].api_target()];
    ctx.nodes = Vec::new();
    Ok(ClusterConfigs { nodes, rosconfig })
}

/// One node's config: hostname, DHCP on the user-mode NIC (its forwards go to the address
/// QEMU's DHCP hands out), the static bridge address, and 127.0.0.1 as a certificate name
/// because the host connects to the forwarded port.
pub fn node_config(
    base: &MachineConfig,
    node: &NodePlan,
    plan: &Plan,
    schedule_on_control_planes: bool,
) -> Result<MachineConfig> {
    let mut cfg = base.clone();
    let m = &mut cfg.machine;
    m.network.hostname = Some(node.hostname.clone());
    m.network.interfaces = vec![
        Interface {
            interface: Some(USER_LINK.into()),
            dhcp: Some(true),
            ..Default::default()
        },
        Interface {
            interface: Some(BRIDGE_LINK.into()),
            addresses: vec![format!("{}/{}", node.address, plan.network.prefix)],
            ..Default::default()
        },
    ];
    if !m.cert_sans.iter().any(|s| s == "127.0.0.1") {
        m.cert_sans.push("127.0.0.1".into());
    }
    if node.role == Role::Controlplane {
        let sans = &mut cfg.cluster.api_server.cert_sans;
        if !sans.iter().any(|s| s == "127.0.0.1") {
            sans.push("127.0.0.1".into());
        }
        cfg.cluster.allow_scheduling_on_control_planes = schedule_on_control_planes;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{}: generated config is invalid:\n{e}", node.name))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Request, plan};
    use super::*;

    fn planned(workers: u32) -> Plan {
        let mut port = 41000;
        plan(
            &Request {
                name: "demo".into(),
                controlplanes: 1,
                workers,
                cidr: "10.5.0.0/24".into(),
                state_dir: "/s/demo".into(),
            },
            || {
                port += 1;
                Ok(port)
            },
        )
        .unwrap()
    }

    #[test]
    fn nodes_get_their_links_names_and_sans() {
        let p = planned(1);
        let c = build(&p, Secrets::generate().unwrap(), &NodePatches::default()).unwrap();
        assert_eq!(c.nodes.len(), 2);
        let cp = &c.nodes[0];
        assert_eq!(
            cp.machine.machine_type,
            ros_config::MachineType::ControlPlane
        );
        assert_eq!(
            cp.machine.network.hostname.as_deref(),
            Some("demo-controlplane-1")
        );
        let links = &cp.machine.network.interfaces;
        assert_eq!(links[0].interface.as_deref(), Some("eth0"));
        assert_eq!(links[0].dhcp, Some(true));
        assert_eq!(links[1].interface.as_deref(), Some("eth1"));
        assert_eq!(links[1].addresses, ["10.5.0.2/24"]);
        assert!(cp.machine.cert_sans.contains(&"127.0.0.1".to_string()));
        assert!(cp.api_server_sans().contains(&"10.5.0.2".to_string()));
        assert_eq!(
            cp.cluster.control_plane.as_ref().unwrap().endpoint,
            "https://10.5.0.2:6443"
        );
        // With a worker, the control plane runs no pods.
        assert!(!cp.cluster.allow_scheduling_on_control_planes);
        let w = &c.nodes[1];
        assert_eq!(w.machine.machine_type, ros_config::MachineType::Worker);
        assert_eq!(w.machine.network.interfaces[1].addresses, ["10.5.0.3/24"]);
        assert!(w.machine_api_sans().contains(&"127.0.0.1".to_string()));
        assert!(!w.machine.ca.has_key(), "workers must not get the CA key");
        // Round trip through the strict parser.
        ros_config::parse(&w.to_yaml()).unwrap();

        let ctx = &c.rosconfig.contexts["demo"];
        assert_eq!(
            ctx.endpoints,
            [format!("127.0.0.1:{}", p.nodes[0].api_port)]
        );
        assert!(ctx.nodes.is_empty());
    }

    #[test]
    fn a_lone_control_plane_schedules_pods() {
        let c = build(
            &planned(0),
            Secrets::generate().unwrap(),
            &NodePatches::default(),
        )
        .unwrap();
        assert!(c.nodes[0].cluster.allow_scheduling_on_control_planes);
    }

    #[test]
    fn patches_come_after_the_node_settings() {
        // With a worker the control plane runs no pods, unless a patch says otherwise.
        let patches = NodePatches::load(
            &[],
            &["cluster:\n  allowSchedulingOnControlPlanes: true\n".to_string()],
            &[
                r#"[{"op": "add", "path": "/machine/nodeLabels", "value": {"pool": "w"}}]"#
                    .to_string(),
            ],
        )
        .unwrap();
        let c = build(&planned(1), Secrets::generate().unwrap(), &patches).unwrap();
        assert!(c.nodes[0].cluster.allow_scheduling_on_control_planes);
        assert!(c.nodes[0].machine.node_labels.is_empty());
        assert_eq!(c.nodes[1].machine.node_labels["pool"], "w");
        // The node's own settings are still there.
        assert_eq!(
            c.nodes[1].machine.network.hostname.as_deref(),
            Some("demo-worker-1")
        );
    }
}
