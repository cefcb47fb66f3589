//! `imager fetch-kernel`: Debian's cloud kernel, found through the `linux-image-cloud-amd64`
//! metapackage's Depends (so no version is written down here), unpacked into a cache dir.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::kernel::KernelTree;
use crate::tools::{self, APT_GET, DPKG_DEB};

pub const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Downloads and unpacks the kernel into `out` unless the version the metapackage names is
/// already there. Returns the tree.
pub fn fetch_kernel(out: &Path, log: &dyn Fn(&str)) -> Result<KernelTree> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create", out.display()))?;
    // Several builds (parallel tests) may share one cache dir: one fetch at a time.
    let lock = std::fs::File::create(out.join(".lock")).context("creating the fetch lock")?;
    lock.lock().context("locking the kernel cache")?;
    let downloads = out.join(".downloads");
    recreate_dir(&downloads)?;

    log(&format!("apt-get download {METAPACKAGE}"));
    let meta = download(&downloads, METAPACKAGE)?;
    let depends = field(&meta, "Depends")?;
    let package = versioned_package(&depends).with_context(|| {
        format!("{METAPACKAGE} Depends {depends:?} names no linux-image package")
    })?;
    let version = package.trim_start_matches("linux-image-").to_string();

    if out
        .join("lib/modules")
        .join(&version)
        .join("modules.builtin")
        .is_file()
        && out
            .join("boot")
            .join(format!("vmlinuz-{version}"))
            .is_file()
    {
        log(&format!("kernel {version} already in {}", out.display()));
        std::fs::remove_dir_all(&downloads).ok();
        return KernelTree::open(out);
    }

    log(&format!("apt-get download {package}"));
    let deb = download(&downloads, &package)?;
    let staging = out.join(".unpack");
    recreate_dir(&staging)?;
    log(&format!("dpkg-deb -x {}", deb.display()));
    let mut extract = DPKG_DEB.command()?;
    extract.arg("-x").arg(&deb).arg(&staging);
    tools::run(extract)?;

    // Replace what an older fetch left, then move the new tree into place.
    for sub in ["boot", "lib", "usr"] {
        let old = out.join(sub);
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        let new = staging.join(sub);
        if new.exists() {
            std::fs::rename(&new, &old)
                .with_context(|| format!("moving {} into place", new.display()))?;
        }
    }
    std::fs::write(
        out.join("PACKAGE"),
        format!("{package} {}\n", field(&deb, "Version")?),
    )?;
    std::fs::remove_dir_all(&staging).ok();
    std::fs::remove_dir_all(&downloads).ok();
    KernelTree::open(out)
}

/// The kernel already in `out` if there is one, else [`fetch_kernel`]. Tests use this so a
/// warm cache needs no network.
pub fn cached_or_fetch(out: &Path, log: &dyn Fn(&str)) -> Result<KernelTree> {
    if let Ok(tree) = KernelTree::open(out) {
        return Ok(tree);
    }
    fetch_kernel(out, log)
}

fn recreate_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `apt-get download` into `dir`; when apt does not know the package yet, one
/// `apt-get update` and a second try.
fn download(dir: &Path, package: &str) -> Result<PathBuf> {
    let attempt = || {
        let mut cmd = APT_GET.command()?;
        cmd.current_dir(dir).args(["download", "-q", package]);
        tools::run(cmd)
    };
    if let Err(first) = attempt() {
        let mut update = APT_GET.command()?;
        update.args(["update", "-q"]);
        tools::run(update).with_context(|| {
            format!("apt-get download {package} failed ({first:#}); apt-get update also failed")
        })?;
        attempt().with_context(|| format!("apt-get download {package} (after apt-get update)"))?;
    }
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    debs.sort();
    match debs.pop() {
        Some(deb) => Ok(deb),
        None => bail!(
            "apt-get download {package} left no {prefix}*.deb in {}",
            dir.display()
        ),
    }
}

fn field(deb: &Path, name: &str) -> Result<String> {
    let mut cmd = DPKG_DEB.command()?;
    cmd.arg("-f").arg(deb).arg(name);
    let out = tools::run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `linux-image-<kver>` name in a Depends field such as
/// `linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)`.
fn versioned_package(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|alt| alt.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_versioned_package_from_depends() {
        assert_eq!(
            versioned_package("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            versioned_package(
                "initramfs-tools, linux-image-6.12.9-cloud-amd64-unsigned (= 6.12.9-1) | foo"
            )
            .as_deref(),
            Some("linux-image-6.12.9-cloud-amd64-unsigned")
        );
        assert_eq!(versioned_package("linux-base"), None);
    }
}
