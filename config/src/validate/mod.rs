//! Validation of a decoded config: every value and the cross-field rules, all reported at once.

mod cluster;
mod machine;
mod network;
pub mod syntax;

use crate::error::{FieldError, FieldPath, ValidationErrors};
use crate::types::{CONFIG_VERSION, MachineConfig, PemKind, PemPair, decode_pem};

/// Errors (the config is rejected) and warnings (accepted; `--strict` rejects them too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldError>,
}

/// Collects problems while walking the config.
#[derive(Default)]
pub(crate) struct Checker {
    report: Report,
}

impl Checker {
    pub fn err(&mut self, path: FieldPath, reason: impl Into<String>) {
        self.report.errors.push(FieldError::new(path, reason));
    }

    pub fn warn(&mut self, path: FieldPath, reason: impl Into<String>) {
        self.report.warnings.push(FieldError::new(path, reason));
    }

    /// A base64-PEM field that must be present and hold `kind`.
    pub fn pem(&mut self, path: FieldPath, value: &str, kind: PemKind) {
        if let Err(e) = decode_pem(value, kind) {
            self.err(path, e.to_string());
        }
    }

    /// A CA: its certificate always; its key when `need_key`, else a key is a warning.
    pub fn ca(&mut self, path: &FieldPath, ca: &PemPair, need_key: bool, who: &str) {
        self.pem(path.key("crt"), &ca.crt, PemKind::Certificate);
        if need_key {
            if ca.key.is_empty() {
                self.err(path.key("key"), format!("is required on {who}"));
            } else {
                self.pem(path.key("key"), &ca.key, PemKind::PrivateKey);
            }
        } else if ca.has_key() {
            self.warn(
                path.key("key"),
                format!("{who} does not need this CA's private key; leave it out"),
            );
        }
    }
}

impl MachineConfig {
    /// Every error in the config, or `Ok(())`. Warnings are not errors; see [`Self::check`].
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let report = self.check();
        if report.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                errors: report.errors,
            })
        }
    }

    /// Errors and warnings.
    pub fn check(&self) -> Report {
        let mut c = Checker::default();
        let root = FieldPath::root();
        if self.version != CONFIG_VERSION {
            c.err(
                root.key("version"),
                format!(
                    "{:?} is not supported (expected {CONFIG_VERSION:?})",
                    self.version
                ),
            );
        }
        machine::check(&mut c, &root.key("machine"), self);
        cluster::check(&mut c, &root.key("cluster"), self);
        c.report
    }
}
