//! The OCI runtime spec (runc's config.json) of a pod's container: process from the pod
//! spec over the image config, the usual Linux mounts and namespaces, cgroup limits.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::volumes::RefEnv;
use crate::scheduler::quantity;

const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The argv: Kubernetes' command/args over the image's Entrypoint/Cmd.
pub fn argv(c: &Container, image_config: &Value) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let entrypoint = strings(&image_config["Entrypoint"]);
    let cmd = strings(&image_config["Cmd"]);
    match (&c.command, &c.args) {
        (Some(command), args) if !command.is_empty() => command
            .iter()
            .chain(args.iter().flatten())
            .cloned()
            .collect(),
        (_, Some(args)) if !args.is_empty() => {
            entrypoint.into_iter().chain(args.iter().cloned()).collect()
        }
        _ => entrypoint.into_iter().chain(cmd).collect(),
    }
}

/// The node's and the pod's addresses, for `status.hostIP` and `status.podIP`.
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    pub host: String,
    pub pod: String,
}

/// Image env, then the container's env (later entries win, as in the kubelet). `valueFrom`
/// is resolved for the pod's own fields (fieldRef) and from `refs` (ConfigMaps, Secrets).
pub fn env(
    pod: &Pod,
    c: &Container,
    image_config: &Value,
    ips: &Addresses,
    refs: &RefEnv,
) -> Vec<String> {
    let mut out: Vec<(String, String)> = image_config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &refs.env_from {
        out.retain(|(old, _)| old != k);
        out.push((k.clone(), v.clone()));
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = refs.value_from.get(&e.name) {
            Some(v.clone())
        } else if let Some(v) = &e.value {
            Some(v.clone())
        } else if let Some(f) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            field_value(pod, &f.field_path, ips)
        } else {
            None
        };
        if let Some(v) = value {
            out.retain(|(k, _)| k != &e.name);
            out.push((e.name.clone(), v));
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn field_value(pod: &Pod, path: &str, ips: &Addresses) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.hostIP" => Some(ips.host.clone()),
        "status.podIP" => Some(ips.pod.clone()),
        _ => None,
    }
}

/// cgroup resources from the container's requests and limits.
pub fn resources(c: &Container) -> Value {
    let r = c.resources.as_ref();
    let get = |which: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
               key: &str| { which.and_then(|m| m.get(key)).map(|q| q.0.clone()) };
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    let mut cpu = json!({});
    let mut out = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(mem) = get(limits, "memory").and_then(|q| quantity::units(&q)) {
        out["memory"] = json!({"limit": mem as i64});
    }
    if let Some(m) = get(limits, "cpu").and_then(|q| quantity::milli(&q)) {
        cpu["period"] = json!(100_000u64);
        cpu["quota"] = json!((m * 100).max(1000) as i64);
    }
    // Shares follow the request (or the limit when only that is set), as the kubelet does.
    if let Some(m) = get(requests, "cpu")
        .or_else(|| get(limits, "cpu"))
        .and_then(|q| quantity::milli(&q))
    {
        cpu["shares"] = json!(((m * 1024) / 1000).max(2) as u64);
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        out["cpu"] = cpu;
    }
    out
}

/// Every capability the kernel knows (a privileged container gets them all).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The container's capabilities: the default set, minus `drop` (`ALL` drops every one),
/// plus `add`; all of them when privileged. Names may omit the `CAP_` prefix.
pub fn capabilities(
    sc: Option<&k8s_openapi::api::core::v1::SecurityContext>,
    privileged: bool,
) -> Vec<String> {
    if privileged {
        return ALL_CAPS.iter().map(|c| c.to_string()).collect();
    }
    let norm = |c: &String| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let drop: Vec<String> = caps
        .and_then(|c| c.drop.as_ref())
        .into_iter()
        .flatten()
        .map(norm)
        .collect();
    let mut out: Vec<String> = if drop.iter().any(|d| d == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for add in caps
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten()
        .map(norm)
    {
        if add == "CAP_ALL" {
            return ALL_CAPS.iter().map(|c| c.to_string()).collect();
        }
        if !out.contains(&add) {
            out.push(add);
        }
    }
    out
}

/// The whole runtime spec of container `c` of `pod`, whose cgroup is `cgroup_path`.
pub fn runtime_spec(
    pod: &Pod,
    c: &Container,
    image_config: &Value,
    ips: &Addresses,
    cgroup_path: &str,
    refs: &RefEnv,
    volume_mounts: Vec<Value>,
) -> Value {
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| image_config["WorkingDir"].as_str().map(String::from))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let sc = c.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user))
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group))
        .unwrap_or(0);
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let caps = capabilities(sc, privileged);
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": argv(c, image_config),
            "env": env(pod, c, image_config, ips, refs),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": !privileged,
        },
        "root": {
            "path": "rootfs",
            "readonly": sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        },
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "cgroupsPath": cgroup_path,
            "resources": resources(c),
            // No pod network yet: containers share the node's network namespace.
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    if let Some(m) = spec["mounts"].as_array_mut() {
        m.extend(volume_mounts);
        super::dns_config::add_mounts(m, pod, &ips.pod);
    }
    if privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let img = json!({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]});
        assert_eq!(
            argv(&container(json!({"name": "c"})), &img),
            ["/ep", "a", "b"]
        );
        assert_eq!(
            argv(&container(json!({"name": "c", "args": ["x"]})), &img),
            ["/ep", "x"]
        );
        assert_eq!(
            argv(
                &container(json!({"name": "c", "command": ["/bin/sh"], "args": ["-c", "x"]})),
                &img
            ),
            ["/bin/sh", "-c", "x"]
        );
    }

    #[test]
    fn env_overrides_image_and_resolves_field_refs() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}})).unwrap();
        let c = container(json!({"name": "c", "env": [
            {"name": "PATH", "value": "/x"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]}));
        let ips = Addresses {
            host: "10.0.0.1".into(),
            pod: "10.244.0.5".into(),
        };
        let img = json!({"Env": ["PATH=/bin", "HOME=/"]});
        assert_eq!(
            env(&pod, &c, &img, &ips, &RefEnv::default()),
            ["HOME=/", "PATH=/x", "POD=p", "IP=10.244.0.5"]
        );
    }

    #[test]
    fn capabilities_add_and_drop() {
        let sc = |v: Value| -> k8s_openapi::api::core::v1::SecurityContext {
            serde_json::from_value(v).unwrap()
        };
        let c = capabilities(
            Some(&sc(
                json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}),
            )),
            false,
        );
        assert_eq!(c, ["CAP_NET_ADMIN"]);
        let c = capabilities(
            Some(&sc(json!({"capabilities": {"drop": ["NET_RAW"]}}))),
            false,
        );
        assert!(!c.contains(&"CAP_NET_RAW".to_string()));
        assert!(c.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(capabilities(None, true).len(), ALL_CAPS.len());
    }

    #[test]
    fn limits_become_cgroup_values() {
        let c = container(json!({"name": "c", "resources": {
            "limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}));
        let r = resources(&c);
        assert_eq!(r["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["shares"], 256);
    }
}
