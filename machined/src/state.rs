//! The config stored on STATE: written atomically, read at boot, wiped by reset.

use crate::paths::Paths;
use std::io;

/// Reads the stored config, if any.
pub fn load(paths: &Paths) -> io::Result<Option<String>> {
    match std::fs::read_to_string(paths.config_file()) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores an accepted config (write to a temp file, fsync, rename, fsync the directory).
pub fn save(paths: &Paths, yaml: &str) -> io::Result<()> {
    std::fs::create_dir_all(&paths.state)?;
    ros_config::atomic_write_private(paths.config_file(), yaml.as_bytes())
}

/// Removes everything on STATE and EPHEMERAL (the directories themselves stay).
pub fn wipe(paths: &Paths) -> io::Result<()> {
    for dir in [&paths.state, &paths.ephemeral] {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    paths.create()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::dev(dir.path());
        paths.create().unwrap();
        assert_eq!(load(&paths).unwrap(), None);
        save(&paths, "a: 1\n").unwrap();
        assert_eq!(load(&paths).unwrap().as_deref(), Some("a: 1\n"));
        std::fs::write(paths.logs.join("x.log"), "x").unwrap();
        wipe(&paths).unwrap();
        assert_eq!(load(&paths).unwrap(), None);
        assert!(!paths.logs.join("x.log").exists());
        assert!(paths.logs.is_dir());
    }
}
