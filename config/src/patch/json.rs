//! RFC 6902 patches (json-patch crate), with errors turned into field paths.

use super::{PatchError, pointer_to_path};
use crate::document::decode_all;
use crate::error::FieldPath;
use json_patch::PatchOperation;
use serde_json::Value;

pub(super) fn parse_ops(name: &str, value: Value) -> Result<json_patch::Patch, PatchError> {
    let decoded = decode_all::<json_patch::Patch>(value);
    match decoded.value {
        Some(p) if decoded.errors.is_empty() => Ok(p),
        _ => Err(PatchError {
            patch: name.to_string(),
            errors: decoded
                .errors
                .into_iter()
                .map(|mut e| {
                    // Paths here are into the operation list, e.g. `[1]`.
                    e.reason = format!("operation {}: {}", e.path, e.reason);
                    e.path = FieldPath::root();
                    e
                })
                .collect(),
        }),
    }
}

pub(super) fn apply(
    name: &str,
    doc: &mut Value,
    ops: &json_patch::Patch,
) -> Result<(), PatchError> {
    json_patch::patch(doc, ops).map_err(|e| {
        let op = ops.0.get(e.operation).map(op_name).unwrap_or("?");
        PatchError::one(
            name,
            pointer_to_path(&e.path.to_string()),
            format!("operation {} ({op}) failed: {}", e.operation, e.kind),
        )
    })
}

fn op_name(op: &PatchOperation) -> &'static str {
    match op {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}
