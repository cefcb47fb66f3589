//! configs/schema.json is generated from the types; this fails when it is stale.

use std::path::Path;

const REGENERATE: &str = "ROS_UPDATE_SCHEMA=1 cargo test -p ros-config --test schema";

#[test]
fn checked_in_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/schema.json");
    let want = ros_config::schema::json_schema();
    if std::env::var_os("ROS_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        ros_config::atomic_write(&path, want.as_bytes()).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "configs/schema.json is out of date with the config types in config/src/types/; \
         regenerate it with:\n    {REGENERATE}"
    );
}

#[test]
fn schema_is_strict_and_names_the_sections() {
    let schema: serde_json::Value =
        serde_json::from_str(&ros_config::schema::json_schema()).unwrap();
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["version", "machine", "cluster"]);
    let machine = &schema["$defs"]["MachineSection"];
    assert_eq!(machine["additionalProperties"], serde_json::json!(false));
    assert!(machine["properties"]["certSANs"].is_object());
    assert!(machine["properties"]["nodeTaints"].is_object());
}

/// A small structural check of documents against the schema: every key must be a declared
/// property (objects are closed), and value kinds must match. Enough to show the schema really
/// describes the configs the parser accepts (and rejects what it rejects).
fn conforms(schema: &serde_json::Value, root: &serde_json::Value, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return conforms(&root["$defs"][name], root, v);
    }
    if let Some(any) = schema
        .get("anyOf")
        .or(schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        return any.iter().any(|s| conforms(s, root, v));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.contains(v);
    }
    if let Some(c) = schema.get("const") {
        return c == v;
    }
    let kinds: Vec<&str> = match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    let kind_ok = kinds.iter().any(|k| match (*k, v) {
        ("object", Value::Object(_)) | ("array", Value::Array(_)) => true,
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) | ("null", Value::Null) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        _ => false,
    });
    if !kind_ok {
        return false;
    }
    match v {
        Value::Object(m) => {
            m.iter().all(
                |(k, val)| match schema.get("properties").and_then(|p| p.get(k)) {
                    Some(s) => conforms(s, root, val),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => false,
                        Some(s @ Value::Object(_)) => conforms(s, root, val),
                        _ => true,
                    },
                },
            )
        }
        Value::Array(a) => match schema.get("items") {
            Some(s) => a.iter().all(|e| conforms(s, root, e)),
            None => true,
        },
        _ => true,
    }
}

#[test]
fn examples_conform_to_the_schema_and_unknown_fields_do_not() {
    let schema: serde_json::Value =
        serde_json::from_str(&ros_config::schema::json_schema()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let doc = ros_config::parse_yaml_value(&std::fs::read_to_string(&p).unwrap()).unwrap();
            assert!(
                conforms(&schema, &schema, &doc),
                "{} does not match the schema",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 5);
    for bad in [
        "unknown-field.yaml",
        "wrong-type.yaml",
        "unknown-machine-type.yaml",
    ] {
        let p = dir.join("invalid").join(bad);
        let doc = ros_config::parse_yaml_value(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert!(
            !conforms(&schema, &schema, &doc),
            "{bad} must not match the schema"
        );
    }
}
