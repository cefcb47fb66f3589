//! Service definitions. The cluster roles add theirs in code (`crate::cluster`); in dev mode
//! extra ones come from a YAML file (`machined --services FILE`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whenever the process exits.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub id: String,
    /// Absolute path of the program (run directly, no shell).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u64,
    /// Checked while the process runs; dependants wait until it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::HealthCheck>,
    /// The config values this service consumes (`crate::consumers`), including those that
    /// reach it through generated files: a change makes the spec differ, so its owner
    /// restarts it.
    #[serde(skip)]
    pub config_inputs: serde_json::Value,
}

fn default_stop_timeout() -> u64 {
    10
}

/// Reads a YAML list of service definitions, checking each.
pub fn load_specs(yaml: &str) -> Result<Vec<ServiceSpec>, String> {
    let specs: Vec<ServiceSpec> =
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("services: {e}"))?;
    let mut errors = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        if s.id.is_empty()
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(format!(
                "services[{i}].id: must be non-empty and use [A-Za-z0-9_-]"
            ));
        }
        if !s.command.starts_with('/') {
            errors.push(format!(
                "services[{i}].command: must be an absolute path, got {:?}",
                s.command
            ));
        }
        if specs.iter().filter(|o| o.id == s.id).count() > 1 {
            errors.push(format!("services[{i}].id: {:?} is defined twice", s.id));
        }
        for d in &s.depends_on {
            if !specs.iter().any(|o| &o.id == d) {
                errors.push(format!("services[{i}].dependsOn: unknown service {d:?}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        let err = load_specs("- id: a\n  command: sleep\n  dependsOn: [b]\n").unwrap_err();
        assert!(err.contains("services[0].command"), "{err}");
        assert!(err.contains("services[0].dependsOn"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let specs = load_specs("- id: a\n  command: /bin/true\n").unwrap();
        assert_eq!(specs[0].restart, RestartPolicy::Always);
        assert_eq!(specs[0].stop_timeout_seconds, 10);
    }
}
