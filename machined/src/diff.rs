//! Field-level differences between two configs, for apply replies and `--dry-run`.

use serde_json::Value;

/// Lines `+ path: value`, `- path: value`, `~ path: old -> new`, in document order.
pub fn diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// The paths that changed, as key segments (a map key may itself hold dots or colons, as
/// `net.ipv4.ip_forward` or `registry.local:5000` do). An added or removed object is reported
/// leaf by leaf when added, whole when removed; a list is one value.
pub fn changed_paths(old: &Value, new: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    walk_paths(&mut Vec::new(), old, new, &mut out);
    out
}

fn walk_paths(path: &mut Vec<String>, old: &Value, new: &Value, out: &mut Vec<Vec<String>>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                path.push(k.clone());
                match b.get(k) {
                    Some(vb) => walk_paths(path, va, vb, out),
                    None => out.push(path.clone()),
                }
                path.pop();
            }
            for (k, vb) in b {
                if a.contains_key(k) {
                    continue;
                }
                path.push(k.clone());
                match vb {
                    Value::Object(_) => walk_paths(path, &Value::Null, vb, out),
                    _ => out.push(path.clone()),
                }
                path.pop();
            }
        }
        (Value::Null, Value::Null) => {}
        (Value::Null, Value::Object(_)) => {
            walk_paths(path, &Value::Object(Default::default()), new, out)
        }
        (a, b) if a != b => out.push(path.clone()),
        _ => {}
    }
}

/// A path for people: segments joined by dots, a key holding a dot quoted (`sysctls."a.b"`).
pub fn show_path(path: &[String]) -> String {
    path.iter()
        .map(|s| {
            if s.contains('.') {
                format!("{s:?}")
            } else {
                s.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Compact JSON, long values shortened (certificates would drown the diff).
fn show(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_default();
    if text.chars().count() <= MAX_VALUE {
        return text;
    }
    let head: String = text.chars().take(MAX_VALUE).collect();
    format!("{head}… ({} bytes)", text.len())
}

const MAX_VALUE: usize = 96;

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
                if a.contains_key(k) {
                    continue;
                }
                match vb {
                    Value::Object(_) => walk(&join(path, k), &Value::Null, vb, out),
                    _ => out.push(format!("+ {}: {}", join(path, k), show(vb))),
                }
            }
        }
        (Value::Null, Value::Null) => {}
        // No previous config: list every leaf as added.
        (Value::Null, Value::Object(_)) => walk(path, &Value::Object(Default::default()), new, out),
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
        let shown: Vec<String> = changed_paths(&old, &new)
            .iter()
            .map(|p| show_path(p))
            .collect();
        assert_eq!(
            shown,
            vec![
                "machine.network.hostname",
                "machine.network.nameservers",
                "machine.sysctls"
            ]
        );
        let dotted = changed_paths(
            &json!({"machine": {"registries": {"mirrors": {"registry.x:5000": {"endpoints": ["a"]}}}}}),
            &json!({"machine": {"registries": {"mirrors": {"registry.x:5000": {"endpoints": ["b"]}}}}}),
        );
        assert_eq!(
            dotted,
            vec![vec![
                "machine",
                "registries",
                "mirrors",
                "registry.x:5000",
                "endpoints"
            ]]
        );
        assert_eq!(
            show_path(&dotted[0]),
            "machine.registries.mirrors.\"registry.x:5000\".endpoints"
        );
    }

    #[test]
    fn first_config_lists_leaves_and_shortens_long_values() {
        let new = json!({"machine": {"type": "worker", "ca": {"crt": "x".repeat(500)}}});
        let lines = diff(&Value::Null, &new);
        assert!(
            lines.contains(&"+ machine.type: \"worker\"".to_string()),
            "{lines:?}"
        );
        let crt = lines
            .iter()
            .find(|l| l.starts_with("+ machine.ca.crt"))
            .unwrap();
        assert!(crt.ends_with("(502 bytes)"), "{crt}");
    }

    #[test]
    fn identical_configs_have_no_changes() {
        let v = json!({"a": [1, 2]});
        assert!(diff(&v, &v).is_empty());
    }
}
