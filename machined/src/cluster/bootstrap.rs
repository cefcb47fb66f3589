//! The bootstrap record: a control plane that was bootstrapped once starts its cluster server
//! on every boot, without a new `rosctl bootstrap`. Kept on STATE, written atomically.

use std::io;
use std::path::Path;

/// Whether the record exists.
pub fn is_bootstrapped(path: &Path) -> bool {
    path.exists()
}

/// Writes the record (atomically: a crash leaves it absent or whole).
pub fn record(path: &Path, node: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = serde_json::json!({
        "bootstrapped": true,
        "node": node,
        "time": crate::clock::now_rfc3339(),
    });
    ros_config::atomic_write_private(path, format!("{doc}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_once_then_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/bootstrapped.json");
        assert!(!super::is_bootstrapped(&path));
        super::record(&path, "cp-1").unwrap();
        assert!(super::is_bootstrapped(&path));
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["node"], "cp-1");
    }
}
