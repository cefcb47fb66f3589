//! Volume contents that change while containers read them (ConfigMap, Secret, projected),
//! swapped in all at once the way the kubelet's atomic writer does it:
//!
//! ```text
//! <dir>/..2026_11_26_01_02_03.123456789_x/   the files of one version
//! <dir>/..data -> ..2026_11_26_01_02_03.123456789_x
//! <dir>/token  -> ..data/token                one link per top-level name
//! ```
//!
//! A new version is written beside the old one, then `..data` is replaced by a rename, so a
//! reader sees either the old files or the new ones, never a mix. Links are relative, so
//! they resolve inside the container's bind mount too.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// A file of a volume: its content and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Checks a volume-relative path: relative, no `..` part, not starting with `..`.
pub fn check_path(rel: &str) -> Result<()> {
    if rel.is_empty() || rel.starts_with('/') {
        bail!("volume item path {rel:?} must be a non-empty relative path");
    }
    if rel.starts_with("..") || rel.split('/').any(|p| p == "..") {
        bail!("volume item path {rel:?} may not contain '..' or start with '..'");
    }
    Ok(())
}

/// The files the current version of `dir` holds, when it was written by [`write`].
fn current(dir: &Path) -> Option<BTreeMap<String, File>> {
    let data = dir.join(DATA);
    std::fs::read_link(&data).ok()?;
    let mut out = BTreeMap::new();
    let mut stack = vec![(data.clone(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                stack.push((e.path(), rel));
            } else {
                let content = std::fs::read(e.path()).ok()?;
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel, File { content, mode });
            }
        }
    }
    Some(out)
}

/// Makes `dir` hold exactly `files` (volume-relative path → file), atomically. Nothing is
/// written when `dir` already holds them.
pub fn write(dir: &Path, files: &BTreeMap<String, File>) -> Result<()> {
    for rel in files.keys() {
        check_path(rel)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if current(dir).as_ref() == Some(files) {
        return Ok(());
    }
    let old_version = std::fs::read_link(dir.join(DATA)).ok();
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
    let version = format!(
        "..{}_{:04x}",
        now.strftime("%Y_%m_%d_%H_%M_%S.%f"),
        rand::random::<u16>()
    );
    let vdir = dir.join(&version);
    std::fs::create_dir(&vdir).with_context(|| format!("creating {}", vdir.display()))?;
    std::fs::set_permissions(&vdir, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in files {
        let path = vdir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &f.content).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    // Swap the version in: a new link, renamed over the old one.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)
        .with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(DATA))
        .with_context(|| format!("switching {} to {version}", dir.display()))?;
    // User-visible names: one link per top-level name, stale ones (and anything a former
    // non-atomic writer left) removed.
    let top: BTreeSet<&str> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k))
        .collect();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("..") {
            continue;
        }
        let wanted = top.contains(name.as_str())
            && std::fs::read_link(e.path()).ok().as_deref()
                == Some(Path::new(&format!("{DATA}/{name}")));
        if wanted {
            continue;
        }
        let p = e.path();
        let removed = if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.with_context(|| format!("removing {}", p.display()))?;
    }
    for name in top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("{DATA}/{name}"), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    if let Some(old) = old_version.filter(|o| o.as_os_str() != version.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> File {
        File {
            content: s.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn versions_swap_and_stale_names_go() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        // A file left by an older, non-atomic writer is replaced.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("old"), "x").unwrap();
        let v1: BTreeMap<String, File> = [
            ("token".to_string(), file("t1", 0o644)),
            ("etc/app.conf".to_string(), file("a=1", 0o600)),
        ]
        .into();
        write(&dir, &v1).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "t1");
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/app.conf")).unwrap(),
            "a=1"
        );
        assert_eq!(
            std::fs::read_link(dir.join("token")).unwrap(),
            Path::new("..data/token")
        );
        let mode = std::fs::metadata(dir.join("etc/app.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("old").exists());
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        // The same content: nothing rewritten.
        write(&dir, &v1).unwrap();
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);
        // A new version: new content, the dropped name and the old version dir gone.
        let v2: BTreeMap<String, File> = [("token".to_string(), file("t2", 0o644))].into();
        write(&dir, &v2).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "t2");
        assert!(std::fs::symlink_metadata(dir.join("etc")).is_err());
        assert!(!dir.join(&first).exists());
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(entries.len(), 3, "{entries:?}");
    }

    #[test]
    fn paths_may_not_leave_the_volume() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "..data/x", ""] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        check_path("a/b.txt").unwrap();
    }
}
