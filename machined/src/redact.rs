//! Secret redaction for callers that may not read secrets (readers and operators).

use serde_json::Value;

pub const REDACTED: &str = "******";

/// Whether a field with this name holds a secret.
fn is_secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "key"
        || lower == "auth"
        || lower.ends_with("key") && lower != "publickey"
        || lower.contains("secret")
        || lower.contains("token")
        || lower.contains("password")
}

/// Replaces every non-empty secret string value in `doc` with `******`.
pub fn redact(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            for (name, value) in map.iter_mut() {
                match value {
                    Value::String(s) if is_secret_field(name) && !s.is_empty() => {
                        *s = REDACTED.to_string();
                    }
                    other => redact(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_tokens_are_hidden_certificates_are_not() {
        let mut doc = json!({
            "machine": {"token": "abc.def", "ca": {"crt": "CERT", "key": "KEY"}},
            "cluster": {"serviceAccount": {"key": "SA"}, "secretboxEncryptionSecret": "S",
                        "network": {"podSubnets": ["10.0.0.0/8"]}}
        });
        redact(&mut doc);
        assert_eq!(doc["machine"]["token"], REDACTED);
        assert_eq!(doc["machine"]["ca"]["crt"], "CERT");
        assert_eq!(doc["machine"]["ca"]["key"], REDACTED);
        assert_eq!(doc["cluster"]["serviceAccount"]["key"], REDACTED);
        assert_eq!(doc["cluster"]["secretboxEncryptionSecret"], REDACTED);
        assert_eq!(doc["cluster"]["network"]["podSubnets"][0], "10.0.0.0/8");
    }
}
