//! Patches apply in order, and their failures name the patch and the field path.

use ros_config::generate::{GenOptions, generate};
use ros_config::patch::{Patch, PatchKind, patch_config};
use ros_config::secrets::Secrets;
use ros_config::{MachineConfig, MachineType};

fn worker() -> MachineConfig {
    generate(&GenOptions {
        cluster_name: "demo".into(),
        endpoint: "https://10.5.0.2:6443".into(),
        secrets: Secrets::generate().unwrap(),
        patches: vec![],
        patches_control_plane: vec![],
        patches_worker: vec![],
    })
    .unwrap()
    .worker
}

fn inline(n: usize, text: &str) -> Patch {
    Patch::load(text, n).unwrap()
}

fn fail(cfg: &MachineConfig, patches: &[Patch]) -> String {
    patch_config(cfg, patches).unwrap_err().to_string()
}

#[test]
fn strategic_and_json_patches_apply_in_order() {
    let cfg = worker();
    let p1 = inline(
        1,
        "machine:\n  network:\n    hostname: a\n    interfaces:\n    - interface: eth0\n      addresses: [10.0.0.5/24]\n",
    );
    let p2 = inline(
        2,
        r#"[{"op": "replace", "path": "/machine/network/hostname", "value": "b"},
            {"op": "add", "path": "/machine/network/interfaces/0/addresses/-", "value": "10.0.0.6/24"}]"#,
    );
    let p3 = inline(
        3,
        "machine:\n  network:\n    interfaces:\n    - interface: eth0\n      mtu: 9000\n",
    );
    assert!(matches!(p1.kind, PatchKind::StrategicMerge(_)));
    assert!(matches!(p2.kind, PatchKind::Json(_)));
    let out = patch_config(&cfg, &[p1.clone(), p2.clone(), p3.clone()]).unwrap();
    let n = &out.machine.network;
    assert_eq!(n.hostname.as_deref(), Some("b"));
    assert_eq!(n.interfaces.len(), 1);
    assert_eq!(n.interfaces[0].addresses, ["10.0.0.5/24", "10.0.0.6/24"]);
    assert_eq!(n.interfaces[0].mtu, Some(9000));
    // Order matters: the strategic patch last wins over the JSON patch.
    let p4 = inline(4, "machine:\n  network:\n    hostname: c\n");
    let out = patch_config(&cfg, &[p1, p2, p4]).unwrap();
    assert_eq!(out.machine.network.hostname.as_deref(), Some("c"));
}

#[test]
fn patch_from_file_and_its_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("net.yaml");
    std::fs::write(
        &f,
        "machine:\n  network:\n    interfaces:\n    - interface: eth0\n      addresses: [10.0.0.300/24]\n",
    )
    .unwrap();
    let p = Patch::load(&format!("@{}", f.display()), 1).unwrap();
    assert_eq!(
        fail(&worker(), &[p]),
        format!(
            "patch @{}: machine.network.interfaces[0].addresses[0]: \"10.0.0.300/24\" is not a valid CIDR",
            f.display()
        )
    );
    let e = Patch::load("@/nonexistent/patch.yaml", 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("patch @/nonexistent/patch.yaml: cannot read file: "),
        "{e}"
    );
}

#[test]
fn unknown_fields_in_patches_are_named() {
    let p = inline(1, "machine:\n  network:\n    hostnme: a\n");
    assert_eq!(
        fail(&worker(), &[p]),
        "patch #1 (inline): machine.network.hostnme: unknown field, expected one of `hostname`, `interfaces`, `nameservers`"
    );
}

#[test]
fn the_failing_patch_is_the_one_named() {
    let good = inline(1, "machine:\n  network:\n    hostname: ok\n");
    let bad = inline(
        2,
        r#"[{"op": "replace", "path": "/machine/type", "value": "boss"}]"#,
    );
    assert_eq!(
        fail(&worker(), &[good, bad]),
        "patch #2 (inline): machine.type: unknown variant `boss`, expected `controlplane` or `worker`"
    );
}

#[test]
fn json_patch_failures_name_operation_and_path() {
    let cfg = worker();
    let p = inline(
        1,
        r#"[{"op": "add", "path": "/machine/time/servers/0", "value": "x"}]"#,
    );
    assert_eq!(
        fail(&cfg, &[p]),
        "patch #1 (inline): machine.time.servers[0]: operation 0 (add) failed: path is invalid"
    );
    let p = inline(
        1,
        r#"[{"op": "test", "path": "/machine/type", "value": "worker"},
            {"op": "test", "path": "/machine/type", "value": "controlplane"}]"#,
    );
    assert_eq!(
        fail(&cfg, &[p]),
        "patch #1 (inline): machine.type: operation 1 (test) failed: value did not match"
    );
    let e = Patch::load(r#"[{"op": "frobnicate", "path": "/x"}]"#, 3)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "patch #3 (inline): operation [0].op: unknown variant `frobnicate`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`"
    );
}

#[test]
fn strategic_delete_and_its_failure() {
    let cfg = patch_config(
        &worker(),
        &[inline(
            1,
            "machine:\n  files:\n  - path: /var/a\n    content: a\n  - path: /var/b\n    content: b\n",
        )],
    )
    .unwrap();
    let out = patch_config(
        &cfg,
        &[inline(
            2,
            "machine:\n  files:\n  - path: /var/a\n    $patch: delete\n",
        )],
    )
    .unwrap();
    let paths: Vec<&str> = out.machine.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/var/b"]);
    assert_eq!(
        fail(
            &cfg,
            &[inline(
                2,
                "machine:\n  files:\n  - path: /var/zz\n    $patch: delete\n"
            )]
        ),
        "patch #2 (inline): machine.files[0]: nothing to delete: no element has path: \"/var/zz\""
    );
}

#[test]
fn a_patch_can_change_the_role_and_validation_follows() {
    let p = inline(1, "machine:\n  type: controlplane\n");
    let e = fail(&worker(), &[p]);
    assert_eq!(
        e,
        "patch #1 (inline): machine.ca.key: is required on a control plane\n\
         patch #1 (inline): cluster.ca.key: is required on a control plane\n\
         patch #1 (inline): cluster.serviceAccount.key: is required on a control plane"
    );
    let ok = patch_config(
        &worker(),
        &[inline(1, "machine:\n  nodeLabels:\n    a: b\n")],
    )
    .unwrap();
    assert_eq!(ok.machine.machine_type, MachineType::Worker);
    assert_eq!(ok.machine.node_labels["a"], "b");
}

#[test]
fn a_patch_must_be_a_map_or_a_list() {
    let e = Patch::load("just text", 5).unwrap_err().to_string();
    assert_eq!(
        e,
        "patch #5 (inline): is a string; a patch is a map (strategic merge) or a list of RFC 6902 operations"
    );
}
