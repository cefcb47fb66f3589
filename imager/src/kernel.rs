//! A kernel tree as Debian's package unpacks it: `boot/vmlinuz-<kver>` and
//! `lib/modules/<kver>/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub struct KernelTree {
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<kver>`.
    pub modules_dir: PathBuf,
}

impl KernelTree {
    /// Finds the one kernel in `root` (a `dpkg-deb -x` of a linux-image package).
    pub fn open(root: &Path) -> Result<Self> {
        let modules = root.join("lib/modules");
        let mut versions: Vec<String> = std::fs::read_dir(&modules)
            .with_context(|| {
                format!(
                    "--kernel-dir {}: no lib/modules in it (run `imager fetch-kernel`)",
                    root.display()
                )
            })?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("modules.builtin").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        let version = match versions.as_slice() {
            [one] => one.clone(),
            [] => bail!(
                "--kernel-dir {}: lib/modules holds no kernel (no modules.builtin)",
                root.display()
            ),
            many => bail!(
                "--kernel-dir {}: several kernels in lib/modules: {}",
                root.display(),
                many.join(", ")
            ),
        };
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
        if !vmlinuz.is_file() {
            bail!(
                "--kernel-dir {}: missing {}",
                root.display(),
                vmlinuz.display()
            );
        }
        Ok(Self {
            modules_dir: modules.join(&version),
            version,
            vmlinuz,
        })
    }

    /// From explicit paths (`--kernel PATH --modules DIR`); the version is the modules
    /// directory's name.
    pub fn from_parts(vmlinuz: &Path, modules_dir: &Path) -> Result<Self> {
        if !vmlinuz.is_file() {
            bail!("--kernel {}: not a file", vmlinuz.display());
        }
        if !modules_dir.join("modules.builtin").is_file() {
            bail!(
                "--modules {}: no modules.builtin in it",
                modules_dir.display()
            );
        }
        let version = modules_dir
            .file_name()
            .with_context(|| format!("--modules {}: has no directory name", modules_dir.display()))?
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            version,
            vmlinuz: vmlinuz.to_path_buf(),
            modules_dir: modules_dir.to_path_buf(),
        })
    }
}
