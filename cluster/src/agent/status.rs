//! Pod status from what containerd reports: container states, phase and conditions.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::{Value, json};

use super::runtime::TaskState;

/// What the agent knows about one container of a pod after a sync.
#[derive(Clone, Debug)]
pub enum Observed {
    /// Not created yet, or waiting to be (re)started: `reason` as in Kubernetes
    /// (ContainerCreating, CrashLoopBackOff, ErrImageNeverPull, CreateContainerError...).
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Option<jiff::Timestamp>,
    },
    Terminated {
        exit_code: i32,
        started_at: Option<jiff::Timestamp>,
        finished_at: Option<jiff::Timestamp>,
    },
}

#[derive(Clone, Debug)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub restart_count: u32,
    pub state: Observed,
    /// The previous attempt's end, when there was one.
    pub last: Option<Observed>,
    /// Passed its startup probe (or has none) while running.
    pub started: bool,
    /// Passes its readiness probe (or has none) while running and started.
    pub ready: bool,
}

impl ContainerView {
    /// A container not started yet, waiting for `reason`.
    pub fn waiting(name: &str, image: &str, reason: &str) -> ContainerView {
        ContainerView {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            restart_count: 0,
            state: Observed::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last: None,
            started: false,
            ready: false,
        }
    }
}

/// How far the pod's init containers got.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every init container exited 0 (or there are none).
    Done,
    Running,
    /// An init container failed and will not be restarted (restartPolicy Never).
    Failed,
}

fn time(t: &Option<jiff::Timestamp>) -> Value {
    t.map(|t| json!(t.to_string())).unwrap_or(Value::Null)
}

pub fn from_task(state: &TaskState, started_at: Option<jiff::Timestamp>) -> Option<Observed> {
    match state {
        TaskState::Running => Some(Observed::Running { started_at }),
        TaskState::Stopped {
            exit_code,
            finished_at,
        } => Some(Observed::Terminated {
            exit_code: *exit_code,
            started_at,
            finished_at: *finished_at,
        }),
        TaskState::Missing | TaskState::Created => None,
    }
}

fn state_json(o: &Observed, container_id: &Option<String>) -> Value {
    match o {
        Observed::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        Observed::Running { started_at } => json!({"running": {"startedAt": time(started_at)}}),
        Observed::Terminated {
            exit_code,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code,
            "reason": if *exit_code == 0 { "Completed" } else { "Error" },
            "startedAt": time(started_at),
            "finishedAt": time(finished_at),
            "containerID": container_id,
        }}),
    }
}

/// The pod phase from its containers and restart policy.
pub fn phase(views: &[ContainerView], restart_policy: &str) -> &'static str {
    let running = views
        .iter()
        .any(|v| matches!(v.state, Observed::Running { .. }));
    let all_terminated = views
        .iter()
        .all(|v| matches!(v.state, Observed::Terminated { .. }));
    let ever_started = views
        .iter()
        .any(|v| v.restart_count > 0 || !matches!(v.state, Observed::Waiting { .. }));
    if running {
        return "Running";
    }
    if all_terminated && !views.is_empty() {
        let all_ok = views
            .iter()
            .all(|v| matches!(v.state, Observed::Terminated { exit_code: 0, .. }));
        return match (restart_policy, all_ok) {
            ("Always", _) => "Running",
            (_, true) => "Succeeded",
            ("Never", false) => "Failed",
            _ => "Running",
        };
    }
    if ever_started { "Running" } else { "Pending" }
}

/// The status the agent wants on `pod`; transition times of unchanged conditions are kept.
pub fn pod_status(
    pod: &Pod,
    init_views: &[ContainerView],
    init: Init,
    views: &[ContainerView],
    host_ip: &str,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".to_string());
    let phase = match init {
        Init::Done => phase(views, &restart_policy),
        Init::Running => "Pending",
        Init::Failed => "Failed",
    };
    let all_ready = init == Init::Done
        && !views.is_empty()
        && views
            .iter()
            .all(|v| v.ready && matches!(v.state, Observed::Running { .. }));
    let done = matches!(phase, "Succeeded" | "Failed");
    let now = jiff::Timestamp::now().to_string();
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": type_, "status": status, "lastTransitionTime": since});
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = json!(r);
        }
        c
    };
    let to_json = |v: &ContainerView| {
        let mut s = json!({
            "name": v.name,
            "image": v.image,
            "imageID": v.image_id,
            "ready": v.ready && matches!(v.state, Observed::Running { .. }),
            "started": v.started && matches!(v.state, Observed::Running { .. }),
            "restartCount": v.restart_count,
            "state": state_json(&v.state, &v.container_id),
        });
        if let Some(id) = &v.container_id {
            s["containerID"] = json!(id);
        }
        if let Some(last) = &v.last {
            s["lastState"] = state_json(last, &None);
        }
        s
    };
    let statuses: Vec<Value> = views.iter().map(to_json).collect();
    let init_statuses: Vec<Value> = init_views.iter().map(to_json).collect();
    let start_time = old
        .start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let not_ready = if done {
        "PodCompleted"
    } else if init != Init::Done {
        "ContainersNotInitialized"
    } else {
        "ContainersNotReady"
    };
    let mut v = json!({
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "qosClass": old.qos_class,
        "conditions": [
            condition("PodReadyToStartContainers", true, None),
            condition("Initialized", init == Init::Done, Some("ContainersNotInitialized")),
            condition("Ready", all_ready, Some(not_ready)),
            condition("ContainersReady", all_ready, Some(not_ready)),
            condition("PodScheduled", true, None),
        ],
        "containerStatuses": statuses,
    });
    if !init_views.is_empty() {
        v["initContainerStatuses"] = json!(init_statuses);
    }
    serde_json::from_value(v).unwrap_or(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: Observed, restarts: u32) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            restart_count: restarts,
            state,
            last: None,
            started: true,
            ready: true,
        }
    }

    fn term(code: i32) -> Observed {
        Observed::Terminated {
            exit_code: code,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn phases() {
        let waiting = Observed::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        assert_eq!(phase(&[view(waiting.clone(), 0)], "Always"), "Pending");
        assert_eq!(
            phase(&[view(Observed::Running { started_at: None }, 0)], "Always"),
            "Running"
        );
        assert_eq!(phase(&[view(term(0), 0)], "Never"), "Succeeded");
        assert_eq!(phase(&[view(term(1), 0)], "Never"), "Failed");
        assert_eq!(phase(&[view(term(1), 0)], "Always"), "Running");
        let backoff = Observed::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        assert_eq!(phase(&[view(backoff, 2)], "Always"), "Running");
    }
}
