//! Applying a new machine config: validate, diff against the running config, then act by mode
//! (auto, no-reboot, reboot, staged, try) or, for a dry run, only report.

use crate::machine::{Machine, Mode, Running};
use ros_api::machine::{ApplyConfigurationReply, ApplyMode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Config paths the controllers apply on a running node; a change anywhere else needs a reboot.
const LIVE_PATHS: &[&str] = &[
    "machine.network",
    "machine.time",
    "machine.sysctls",
    "machine.files",
    "machine.env",
    "machine.certSANs",
    "machine.nodeLabels",
    "machine.nodeTaints",
    "machine.logging",
    "machine.registries",
    // The cluster role restarts the control plane's agent, which drops or adds the taint.
    "cluster.allowSchedulingOnControlPlanes",
];

pub const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);

fn needs_reboot(path: &str) -> bool {
    !LIVE_PATHS
        .iter()
        .any(|live| path == *live || path.starts_with(&format!("{live}.")))
}

pub struct ApplyRequest {
    pub yaml: String,
    pub mode: ApplyMode,
    pub dry_run: bool,
    pub try_timeout: Duration,
}

/// Validates and applies a config. A rejected config is an `Ok` reply with `accepted = false`
/// and every validation error; nothing changes on the node.
pub async fn apply(
    machine: &Arc<Machine>,
    req: ApplyRequest,
) -> Result<ApplyConfigurationReply, Status> {
    let mut reply = ApplyConfigurationReply {
        node: machine.node_name(),
        mode: req.mode as i32,
        dry_run: req.dry_run,
        ..Default::default()
    };
    let new = match Running::parse(&req.yaml) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            reply.validation_errors = e
                .to_string()
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect();
            reply.mode_details = "config rejected: nothing changed".into();
            return Ok(reply);
        }
    };
    reply.accepted = true;

    let guard = machine.lifecycle.lock().await;
    let running = machine.running();
    let mode_now = machine.mode();
    let old_json = running
        .as_ref()
        .map(|r| r.json.clone())
        .unwrap_or(Value::Null);
    let (mut old_view, mut new_view) = (old_json.clone(), new.json.clone());
    crate::redact::redact(&mut old_view);
    crate::redact::redact(&mut new_view);
    reply.changes = crate::diff::diff(&old_view, &new_view);
    let reboot_paths: Vec<String> = crate::diff::changed_paths(&old_json, &new.json)
        .into_iter()
        .filter(|p| needs_reboot(p))
        .collect();
    // The first config of a maintenance-mode node is applied live.
    reply.reboot_required = mode_now == Mode::Configured && !reboot_paths.is_empty();

    let mode = req.mode;
    let reboot = match mode {
        ApplyMode::Reboot => true,
        ApplyMode::Auto => reply.reboot_required,
        _ => false,
    };
    if matches!(mode, ApplyMode::NoReboot | ApplyMode::Try) && reply.reboot_required {
        return Err(Status::failed_precondition(format!(
            "mode {}: these changes need a reboot: {}",
            mode_name(mode),
            reboot_paths.join(", ")
        )));
    }
    if mode == ApplyMode::Try && mode_now == Mode::Maintenance {
        return Err(Status::failed_precondition(
            "mode try: the node has no running config to roll back to (use auto)",
        ));
    }

    let details = match mode {
        ApplyMode::Staged => "staged: stored on STATE, takes effect at the next boot".to_string(),
        ApplyMode::Try => format!(
            "try: applied without storing; the stored config returns in {}s unless confirmed by another apply",
            req.try_timeout.as_secs()
        ),
        _ if reboot => "stored on STATE; rebooting to apply".to_string(),
        _ if reply.changes.is_empty() => "no changes".to_string(),
        _ => "stored on STATE and applied without a reboot".to_string(),
    };
    if req.dry_run {
        reply.mode_details = format!("dry run, nothing changed; would be {details}");
        return Ok(reply);
    }
    reply.mode_details = details;

    if mode != ApplyMode::Try {
        crate::state::save(&machine.paths, &req.yaml)
            .map_err(|e| Status::internal(format!("writing the config to STATE failed: {e}")))?;
        // Any stored apply confirms (or replaces) a config being tried.
        if machine.cancel_try() {
            machine
                .events
                .publish("config", "tried config confirmed by a new apply");
        }
    }
    match mode {
        ApplyMode::Staged => machine
            .events
            .publish("config", "config staged for the next boot"),
        ApplyMode::Try => {
            machine.set_running(Some(new));
            machine.schedule_try_rollback(req.try_timeout);
            machine
                .events
                .publish("config", "config applied in try mode");
        }
        _ if reboot => {
            machine
                .events
                .publish("config", "config stored; reboot to apply");
            let m = machine.clone();
            // Reboot after this reply is sent and the lifecycle lock is released.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = m.reboot().await {
                    m.events.publish("power", format!("reboot failed: {e}"));
                }
            });
        }
        _ => {
            machine.set_running(Some(new));
            machine.events.publish("config", "config applied");
        }
    }
    drop(guard);
    reply.node = machine.node_name();
    Ok(reply)
}

pub fn mode_name(mode: ApplyMode) -> &'static str {
    match mode {
        ApplyMode::Auto => "auto",
        ApplyMode::NoReboot => "no-reboot",
        ApplyMode::Reboot => "reboot",
        ApplyMode::Staged => "staged",
        ApplyMode::Try => "try",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_reboot_paths() {
        assert!(!needs_reboot("machine.network.hostname"));
        assert!(!needs_reboot("machine.sysctls"));
        assert!(needs_reboot("machine.type"));
        assert!(needs_reboot("cluster.network.podSubnets"));
        assert!(needs_reboot("machine.networkX"));
    }
}
