//! Field-level differences between two configs, for apply replies and `--dry-run`.

use serde_json::Value;

/// Lines `+ path: value`, `- path: value`, `~ path: old -> new`, in document order.
pub fn diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// The paths (without the marker) that changed.
pub fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out.into_iter()
        .map(|line| line[2..].split(':').next().unwrap_or_default().to_string())
        .collect()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn show(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => walk(&join(path, k), va, vb, out),
                    None => out.push(format!("- {}: {}", join(path, k), show(va))),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(format!("+ {}: {}", join(path, k), show(vb)));
                }
            }
        }
        (Value::Null, Value::Null) => {}
        (Value::Null, _) if path.is_empty() => {
            if let Value::Object(b) = new {
                for (k, vb) in b {
                    out.push(format!("+ {}: {}", k, show(vb)));
                }
            }
        }
        (a, b) if a != b => out.push(format!("~ {path}: {} -> {}", show(a), show(b))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_added_removed_and_changed_fields() {
        let old = json!({"machine": {"network": {"hostname": "a"}, "sysctls": {"x": "1"}}});
        let new = json!({"machine": {"network": {"hostname": "b", "nameservers": ["1.1.1.1"]}}});
        let lines = diff(&old, &new);
        assert!(lines.contains(&"~ machine.network.hostname: \"a\" -> \"b\"".to_string()));
        assert!(lines.contains(&"+ machine.network.nameservers: [\"1.1.1.1\"]".to_string()));
        assert!(lines.contains(&"- machine.sysctls: {\"x\":\"1\"}".to_string()));
        assert_eq!(
            changed_paths(&old, &new),
            vec![
                "machine.network.hostname",
                "machine.network.nameservers",
                "machine.sysctls"
            ]
        );
    }

    #[test]
    fn identical_configs_have_no_changes() {
        let v = json!({"a": [1, 2]});
        assert!(diff(&v, &v).is_empty());
    }
}
