//! The JSON schema of the machine config, generated from the types (checked in at
//! `configs/schema.json`; a test fails when it is stale).

use crate::MachineConfig;

/// The schema as pretty JSON with a trailing newline (the checked-in form).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(MachineConfig);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema always serialises");
    s.push('\n');
    s
}
