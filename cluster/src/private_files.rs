//! The server's data directory holds the store (every Secret), the CA key and the admin
//! kubeconfig: only the server's user may read it. New files are private through the umask;
//! files from an earlier, laxer version get their modes fixed at start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// The store's files: the database and SQLite's write-ahead log and shared-memory index.
const STORE_FILES: &[&str] = &["state.db", "state.db-wal", "state.db-shm"];

/// Sets a 077 umask for the process, makes `dir` 0700 and the store files in it 0600.
pub fn secure_data_dir(dir: &Path) -> Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    set_mode(dir, 0o700)?;
    for name in STORE_FILES {
        let path = dir.join(name);
        if path.exists() {
            set_mode(&path, 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    let current = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if current != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} mode {mode:o}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laxer_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        for name in STORE_FILES {
            fs::write(data.join(name), b"x").unwrap();
            fs::set_permissions(data.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure_data_dir(&data).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        for name in STORE_FILES {
            assert_eq!(mode(&data.join(name)), 0o600, "{name}");
        }
    }
}
