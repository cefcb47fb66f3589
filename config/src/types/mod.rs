//! The machine config document: `version`, `machine` and `cluster`.
//!
//! Every struct rejects unknown fields; optional parts default to empty so a short config
//! parses and the validator (not serde) explains what is missing.

mod cluster;
mod machine;
mod network;
mod pem;

pub use cluster::*;
pub use machine::*;
pub use network::*;
pub use pem::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only config version this code reads and writes.
pub const CONFIG_VERSION: &str = "v1alpha1";

/// A complete machine config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineConfig {
    /// Config format version; must be `v1alpha1`.
    pub version: String,
    /// Settings of this machine.
    pub machine: MachineSection,
    /// Settings of the cluster this machine belongs to.
    pub cluster: ClusterSection,
}

impl MachineConfig {
    /// The document as YAML (the form written to disk and sent over the API).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a MachineConfig always serialises")
    }

    /// Whether this machine runs the control plane.
    pub fn is_control_plane(&self) -> bool {
        self.machine.machine_type == MachineType::ControlPlane
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Deserialises a map whose values may be written as YAML scalars of any kind
/// (`net.ipv4.ip_forward: 1` and `"1"` both give the string `"1"`).
pub(crate) mod scalar_map {
    use serde::de::{Deserializer, Error, MapAccess, Visitor};
    use std::collections::BTreeMap;
    use std::fmt;

    /// What the schema allows as a value: a string, or a number or boolean read as its text.
    #[derive(schemars::JsonSchema)]
    #[serde(untagged)]
    #[allow(dead_code)] // only describes the schema
    pub enum Scalar {
        String(String),
        Number(f64),
        Bool(bool),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = BTreeMap<String, String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names to scalar values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    let s = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(A::Error::custom(format!(
                                "value of {k:?} must be a string, number or boolean, not {}",
                                super::super::document::kind_of(&other)
                            )));
                        }
                    };
                    out.insert(k, s);
                }
                Ok(out)
            }
        }
        d.deserialize_map(MapVisitor)
    }
}
