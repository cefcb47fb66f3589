//! QEMU fw_cfg: `-fw_cfg name=opt/ros/config,file=controlplane.yaml` shows up in sysfs.

use std::io::Read;
use std::path::Path;

pub const FW_CFG_CONFIG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/ros/config/raw";

/// Reads the entry in large chunks (fw_cfg reads are slow per call).
pub fn read(path: &Path) -> Result<Option<String>, String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut chunk)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(data)
        .map(Some)
        .map_err(|_| format!("{}: config is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_entry_is_no_config() {
        assert_eq!(read(Path::new("/nonexistent/raw")).unwrap(), None);
    }

    #[test]
    fn reads_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let text = "x".repeat(3 << 20);
        std::fs::write(&raw, &text).unwrap();
        assert_eq!(read(&raw).unwrap().unwrap().len(), text.len());
    }
}
