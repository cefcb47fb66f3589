//! The Node object of this machine: registration, status heartbeat (Ready while
//! containerd answers) and the node Lease in kube-node-lease.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::node_labels::CONTROL_PLANE_LABEL;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;
pub const KUBELET_PORT: u16 = 10250;
pub const MAX_PODS: u32 = 110;

/// The machine facts a Node reports.
#[derive(Clone, Debug)]
pub struct MachineInfo {
    pub cpus: usize,
    pub memory_kib: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub hostname: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` of /proc/meminfo in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// PRETTY_NAME of an os-release file.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

impl MachineInfo {
    pub fn read() -> Result<MachineInfo> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        Ok(MachineInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_kib: mem_total_kib(&meminfo).context("/proc/meminfo has no MemTotal")?,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&std::fs::read_to_string("/etc/os-release").unwrap_or_default())
                .unwrap_or_else(|| "Linux".to_string()),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            hostname: read_trim("/proc/sys/kernel/hostname"),
        })
    }
}

pub struct NodeAgent {
    pub client: Client,
    pub name: String,
    pub ip: String,
    /// Port of the log endpoint, reported as the kubelet endpoint.
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    /// Taints from the machine config (`--node-taint`), merged into the Node's own.
    pub taints: Vec<Taint>,
    /// `--control-plane`: the role label, and the role's taint owned by `taints`.
    pub control_plane: bool,
    pub machine: MachineInfo,
}

/// A node taint as `--node-taint` gives it: `key=value:Effect` or `key:Effect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Parses one `--node-taint` value; the error names the flag and what is wrong.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let bad =
        |why: &str| format!("--node-taint {s:?}: {why} (expected key=value:Effect or key:Effect)");
    let (kv, effect) = s.rsplit_once(':').ok_or_else(|| bad("no effect"))?;
    if !TAINT_EFFECTS.contains(&effect) {
        return Err(bad(&format!(
            "effect {effect:?} is not one of {}",
            TAINT_EFFECTS.join(", ")
        )));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    let name = key.rsplit('/').next().unwrap_or("");
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(valid_char)
        || key.split('/').count() > 2
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(bad(&format!("{key:?} is not a valid taint key")));
    }
    if value
        .as_deref()
        .is_some_and(|v| v.len() > 63 || !v.chars().all(valid_char))
    {
        return Err(bad("the value is not a valid label value"));
    }
    Ok(Taint {
        key: key.to_string(),
        value: value.filter(|v| !v.is_empty()),
        effect: effect.to_string(),
    })
}

impl Taint {
    fn to_json(&self) -> Value {
        let mut t = json!({"key": self.key, "effect": self.effect});
        if let Some(v) = &self.value {
            t["value"] = json!(v);
        }
        t
    }
}

/// `existing` (the Node's `spec.taints`) with `ours` added: a taint with the same key and
/// effect is replaced by ours (the machine config decides its value), a taint whose key is
/// `owned` but which is not among ours is removed (the control-plane taint once scheduling
/// is allowed there), every other one (the node-lifecycle controller's, an admin's) is kept.
/// None when nothing changes.
pub fn merge_taints(existing: &[Value], ours: &[Taint], owned: &[&str]) -> Option<Vec<Value>> {
    let mut merged: Vec<Value> = existing.to_vec();
    merged.retain(|e| {
        let key = e["key"].as_str().unwrap_or("");
        !owned.contains(&key)
            || ours
                .iter()
                .any(|t| t.key == key && e["effect"] == t.effect.as_str())
    });
    let mut changed = merged.len() != existing.len();
    for t in ours {
        let want = t.to_json();
        match merged
            .iter_mut()
            .find(|e| e["key"] == t.key.as_str() && e["effect"] == t.effect.as_str())
        {
            Some(e)
                if e.get("value")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    == t.value.as_deref() => {}
            Some(e) => {
                *e = want;
                changed = true;
            }
            None => {
                merged.push(want);
                changed = true;
            }
        }
    }
    changed.then_some(merged)
}

/// `existing` (the Node's labels) with `ours` set; others are kept. None when nothing changes.
pub fn merge_labels(
    existing: &serde_json::Map<String, Value>,
    ours: &BTreeMap<String, String>,
) -> Option<serde_json::Map<String, Value>> {
    let mut merged = existing.clone();
    let mut changed = false;
    for (k, v) in ours {
        if merged.get(k).and_then(Value::as_str) != Some(v.as_str()) {
            merged.insert(k.clone(), json!(v));
            changed = true;
        }
    }
    changed.then_some(merged)
}

impl NodeAgent {
    /// The labels this agent sets: `--node-label`s and, on a control plane, its role.
    pub fn own_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        if self.control_plane {
            labels.insert(CONTROL_PLANE_LABEL.into(), String::new());
        }
        labels
    }

    /// Taint keys this agent adds or removes as its flags say.
    fn owned_taint_keys(&self) -> Vec<&'static str> {
        if self.control_plane {
            vec![CONTROL_PLANE_LABEL]
        } else {
            vec![]
        }
    }

    /// Creates the Node when it does not exist. An existing one is kept (its spec and other
    /// labels may have been changed by the cluster); only our labels and taints are merged
    /// into it.
    pub async fn register(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes
            .get_opt(&self.name)
            .await
            .context("reading the Node")?
            .is_some()
        {
            return self.merge_into_existing(&nodes).await;
        }
        let mut labels = self.own_labels();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert(
            "kubernetes.io/arch".into(),
            super::runtime::host_arch().into(),
        );
        let mut spec = json!({});
        if !self.taints.is_empty() {
            spec["taints"] = self.taints.iter().map(Taint::to_json).collect();
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => self.merge_into_existing(&nodes).await,
            Err(e) => Err(e).context("creating the Node"),
        }
    }

    /// Sets our labels and taints on the existing Node, keeping the ones others set (a
    /// replace at the read resourceVersion, retried on conflict).
    async fn merge_into_existing(&self, nodes: &Api<Node>) -> Result<()> {
        let labels = self.own_labels();
        let owned = self.owned_taint_keys();
        for _ in 0..5 {
            let node = nodes.get(&self.name).await.context("reading the Node")?;
            let mut value = serde_json::to_value(&node)?;
            let existing = value["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let taints = merge_taints(&existing, &self.taints, &owned);
            let old_labels = value["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let new_labels = merge_labels(&old_labels, &labels);
            if taints.is_none() && new_labels.is_none() {
                return Ok(());
            }
            match taints {
                // No taints left: no empty list either (as a Node registered without any).
                Some(t) if t.is_empty() => {
                    if let Some(spec) = value["spec"].as_object_mut() {
                        spec.remove("taints");
                    }
                }
                Some(t) => value["spec"]["taints"] = Value::Array(t),
                None => {}
            }
            if let Some(l) = new_labels {
                value["metadata"]["labels"] = Value::Object(l);
            }
            let node: Node = serde_json::from_value(value)?;
            match nodes
                .replace(&self.name, &PostParams::default(), &node)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    return Err(e).context(
                        "setting the --node-label labels and --node-taint taints on the Node",
                    );
                }
            }
        }
        anyhow::bail!(
            "setting the --node-label labels and --node-taint taints on the Node: it kept changing (conflicts)"
        )
    }

    /// The status this node reports; `runtime` is containerd's version or why it is down.
    pub fn status(&self, old: Option<&Node>, runtime: &Result<String>) -> Value {
        let now = jiff::Timestamp::now().to_string();
        let m = &self.machine;
        let resources = json!({
            "cpu": m.cpus.to_string(),
            "memory": format!("{}Ki", m.memory_kib),
            "pods": MAX_PODS.to_string(),
        });
        let (ready, reason, message) = match runtime {
            Ok(_) => (
                "True",
                "KubeletReady",
                "ros agent is posting ready status".to_string(),
            ),
            Err(e) => (
                "False",
                "ContainerRuntimeDown",
                format!("container runtime is down: {e:#}"),
            ),
        };
        let old_conditions = old
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| {
            let since = old_conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| now.clone());
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": since})
        };
        json!({
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": self.ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": m.machine_id,
                "systemUUID": m.machine_id,
                "bootID": m.boot_id,
                "kernelVersion": m.kernel,
                "osImage": m.os_image,
                "containerRuntimeVersion": match runtime {
                    Ok(v) => format!("containerd://{v}"),
                    Err(_) => "containerd://unknown".to_string(),
                },
                // One version with the API server's /version (kubectl compares them);
                // the agent is also the node's service proxy.
                "kubeletVersion": crate::version::git_version(),
                "kubeProxyVersion": crate::version::git_version(),
                "operatingSystem": "linux",
                "architecture": super::runtime::host_arch(),
            },
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
                condition("Ready", ready, reason, &message),
            ],
        })
    }

    pub async fn post_status(&self, runtime: &Result<String>) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let old = nodes
            .get_opt(&self.name)
            .await
            .context("reading the Node")?;
        if old.is_none() {
            self.register().await?;
        }
        let status = self.status(old.as_ref(), runtime);
        nodes
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .context("updating the Node status")?;
        Ok(())
    }

    /// Creates or renews this node's Lease.
    pub async fn renew_lease(&self) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let spec = json!({
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
        });
        match leases
            .get_opt(&self.name)
            .await
            .context("reading the node Lease")?
        {
            Some(_) => {
                leases
                    .patch(
                        &self.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": spec})),
                    )
                    .await
                    .context("renewing the node Lease")?;
            }
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                    "spec": spec,
                }))?;
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .context("creating the node Lease")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taint_flags_parse_with_and_without_a_value() {
        assert_eq!(
            parse_taint("dedicated=db:NoSchedule"),
            Ok(Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into()
            })
        );
        let t = parse_taint("example.com/gpu:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("example.com/gpu", None, "NoExecute")
        );
        for (bad, why) in [
            ("dedicated=db", "no effect"),
            ("k=v:Sometimes", "effect \"Sometimes\" is not one of"),
            (":NoSchedule", "not a valid taint key"),
            ("a b=v:NoSchedule", "not a valid taint key"),
            ("k=v v:NoSchedule", "not a valid label value"),
        ] {
            let e = parse_taint(bad).unwrap_err();
            assert!(
                e.starts_with("--node-taint") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn our_taints_merge_without_dropping_others() {
        let lifecycle = json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-11-26T00:00:00Z"});
        let old_ours = json!({"key": "dedicated", "value": "web", "effect": "NoSchedule"});
        let ours = vec![
            parse_taint("dedicated=db:NoSchedule").unwrap(),
            parse_taint("gpu:PreferNoSchedule").unwrap(),
        ];
        let merged = merge_taints(&[lifecycle.clone(), old_ours], &ours, &[]).unwrap();
        assert_eq!(
            merged,
            vec![
                lifecycle.clone(),
                json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"}),
                json!({"key": "gpu", "effect": "PreferNoSchedule"}),
            ]
        );
        assert_eq!(merge_taints(&merged, &ours, &[]), None);
        assert_eq!(merge_taints(&[lifecycle], &[], &[]), None);
    }

    #[test]
    fn an_owned_taint_is_removed_when_not_ours_any_more() {
        let cp = json!({"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"});
        let other = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let ours = vec![parse_taint(&format!("{CONTROL_PLANE_LABEL}:NoSchedule")).unwrap()];
        // Scheduling allowed: the control-plane taint goes, an admin's stays.
        assert_eq!(
            merge_taints(&[cp.clone(), other.clone()], &[], &[CONTROL_PLANE_LABEL]),
            Some(vec![other.clone()])
        );
        // Not allowed: it is added once and then left alone.
        let added =
            merge_taints(std::slice::from_ref(&other), &ours, &[CONTROL_PLANE_LABEL]).unwrap();
        assert_eq!(added, vec![other, cp]);
        assert_eq!(merge_taints(&added, &ours, &[CONTROL_PLANE_LABEL]), None);
    }

    #[test]
    fn our_labels_merge_and_others_stay() {
        let existing = json!({"kubernetes.io/hostname": "cp-1", "tier": "old", "admin": "x"});
        let existing = existing.as_object().unwrap();
        let ours: BTreeMap<String, String> = [
            (CONTROL_PLANE_LABEL.to_string(), String::new()),
            ("tier".to_string(), "edge".to_string()),
        ]
        .into();
        let merged = merge_labels(existing, &ours).unwrap();
        assert_eq!(
            Value::Object(merged.clone()),
            json!({"kubernetes.io/hostname": "cp-1", "tier": "edge", "admin": "x", CONTROL_PLANE_LABEL: ""})
        );
        assert_eq!(merge_labels(&merged, &ours), None);
    }

    #[test]
    fn parses_meminfo_and_os_release() {
        assert_eq!(
            mem_total_kib("MemTotal:       24684092 kB\nMemFree: 1 kB\n"),
            Some(24684092)
        );
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(
            pretty_name("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n").as_deref(),
            Some("Debian GNU/Linux 12")
        );
    }
}
