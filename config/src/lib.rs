//! Machine config types, strict parsing, validation, patches, PKI and `gen config` logic.
//!
//! - [`parse`] reads a YAML document strictly (unknown fields are errors) and validates it,
//!   reporting every problem at once as `path: reason` lines.
//! - [`patch`] applies RFC 6902 and strategic-merge patches.
//! - [`pki`], [`secrets`] and [`generate`] make the cluster PKI and the configs from it.
//! - [`rosconfig`] is the client config file `rosctl` uses.

mod atomic;
mod document;
mod error;
pub mod generate;
pub mod patch;
pub mod pki;
pub mod rosconfig;
pub mod schema;
pub mod secrets;
mod types;
mod validate;
pub mod yaml_depth;

pub use atomic::{atomic_write, atomic_write_mode, atomic_write_private};
pub use document::{kind_of, parse_yaml_value};
pub use error::{ConfigError, FieldError, FieldPath, ValidationErrors};
pub use types::*;
pub use validate::Report;
pub use validate::syntax;

/// A document checked as far as possible: the typed config when it decoded, and every problem.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Option<MachineConfig>,
    pub report: Report,
}

/// Strictly parses and validates a machine config. The error lists every problem.
pub fn parse(yaml: &str) -> Result<MachineConfig, ConfigError> {
    let doc = parse_yaml_value(yaml).map_err(ConfigError::Syntax)?;
    from_value(doc)
}

/// Like [`parse`] for a document tree (e.g. the result of patching).
pub fn from_value(doc: serde_json::Value) -> Result<MachineConfig, ConfigError> {
    let checked = check_value(doc);
    match checked.config {
        Some(cfg) if checked.report.errors.is_empty() => Ok(cfg),
        _ => Err(ConfigError::Invalid(ValidationErrors {
            errors: checked.report.errors,
        })),
    }
}

/// Parses and checks a YAML document, keeping warnings; only a YAML syntax error is an `Err`.
pub fn check_yaml(yaml: &str) -> Result<Checked, ConfigError> {
    let doc = parse_yaml_value(yaml).map_err(ConfigError::Syntax)?;
    Ok(check_value(doc))
}

/// Decodes (collecting unknown fields and type errors) and validates a document tree.
pub fn check_value(doc: serde_json::Value) -> Checked {
    if !doc.is_object() {
        let reason = if doc.is_null() {
            "is empty; a machine config is a map with version, machine and cluster".to_string()
        } else {
            format!(
                "is {}; a machine config is a map with version, machine and cluster",
                kind_of(&doc)
            )
        };
        return Checked {
            config: None,
            report: Report {
                errors: vec![FieldError::new(FieldPath::root(), reason)],
                warnings: Vec::new(),
            },
        };
    }
    let decoded = document::decode_config(doc);
    let mut report = Report {
        errors: decoded.errors,
        warnings: Vec::new(),
    };
    if let Some(cfg) = &decoded.value {
        // After list elements were dropped, indices no longer match what the user wrote.
        if !decoded.dropped_elements {
            let checks = cfg.check();
            // A value removed for a decode error must not be reported again (as missing, or as
            // its parent lacking it); an unknown field's removal changes nothing else.
            let fresh = |e: &FieldError| {
                !report.errors.iter().any(|d| {
                    e.path.is_within(&d.path)
                        || (!d.reason.starts_with("unknown field") && d.path.is_within(&e.path))
                })
            };
            let extra: Vec<FieldError> = checks.errors.into_iter().filter(fresh).collect();
            report.errors.extend(extra);
            report.warnings = checks.warnings;
        }
    }
    let config = if report.errors.is_empty() {
        decoded.value
    } else {
        None
    };
    Checked { config, report }
}
