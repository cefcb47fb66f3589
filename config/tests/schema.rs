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
