//! The image config (`imager ... --config FILE`, YAML): which kernel modules and which
//! third-party binaries go into the image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::modules::DEFAULT_MODULES;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageConfig {
    /// Kernel modules to load at boot; their dependencies are added.
    #[serde(default = "default_modules")]
    pub modules: Vec<String>,
    /// Third-party executables copied into the root with the libraries they link.
    #[serde(default = "default_binaries")]
    pub binaries: Vec<ExtraBinary>,
    /// zstd level for the initramfs (1..=19).
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraBinary {
    /// Path on the build host.
    pub path: PathBuf,
    /// Path inside the image; default `/usr/bin/<file name>`.
    #[serde(default)]
    pub dest: Option<PathBuf>,
    /// Skip it (with a note) when the host does not have it, instead of failing.
    #[serde(default)]
    pub optional: bool,
}

impl ExtraBinary {
    pub fn dest(&self) -> Result<PathBuf> {
        match &self.dest {
            Some(dest) if dest.is_absolute() => Ok(dest.clone()),
            Some(dest) => bail!(
                "binaries[].dest {}: must be an absolute path",
                dest.display()
            ),
            None => {
                let name = self.path.file_name().with_context(|| {
                    format!("binaries[].path {}: has no file name", self.path.display())
                })?;
                Ok(Path::new("/usr/bin").join(name))
            }
        }
    }
}

fn default_modules() -> Vec<String> {
    DEFAULT_MODULES.iter().map(|m| m.to_string()).collect()
}

fn optional(path: &str, dest: &str) -> ExtraBinary {
    ExtraBinary {
        path: path.into(),
        dest: Some(dest.into()),
        optional: true,
    }
}

/// The container runtime, etcd and filesystem tools, each taken when the host has it.
fn default_binaries() -> Vec<ExtraBinary> {
    vec![
        optional("/usr/bin/containerd", "/usr/bin/containerd"),
        optional(
            "/usr/bin/containerd-shim-runc-v2",
            "/usr/bin/containerd-shim-runc-v2",
        ),
        optional("/usr/sbin/runc", "/usr/bin/runc"),
        optional("/usr/bin/etcd", "/usr/bin/etcd"),
        // the service proxy programs nftables through nft (see cluster/src/proxy/nft.rs)
        optional("/usr/sbin/nft", "/usr/bin/nft"),
        optional("/usr/sbin/mkfs.xfs", "/usr/sbin/mkfs.xfs"),
        optional("/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"),
        optional("/usr/sbin/mkfs.vfat", "/usr/sbin/mkfs.vfat"),
    ]
}

fn default_compression_level() -> i32 {
    9
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            modules: default_modules(),
            binaries: default_binaries(),
            compression_level: default_compression_level(),
        }
    }
}

impl ImageConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("--config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = serde_yaml_ng::from_str(text)?;
        if !(1..=19).contains(&config.compression_level) {
            bail!(
                "compressionLevel: {} is outside 1..=19",
                config.compression_level
            );
        }
        for binary in &config.binaries {
            binary.dest()?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        assert_eq!(ImageConfig::parse("{}").unwrap(), ImageConfig::default());
    }

    #[test]
    fn fields_parse_and_unknown_fields_fail() {
        let c = ImageConfig::parse(
            "modules: [loop]\nbinaries:\n  - path: /usr/bin/etcd\ncompressionLevel: 3\n",
        )
        .unwrap();
        assert_eq!(c.modules, ["loop"]);
        assert_eq!(c.binaries[0].dest().unwrap(), Path::new("/usr/bin/etcd"));
        assert!(!c.binaries[0].optional);
        let err = ImageConfig::parse("module: [loop]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("module"), "{err}");
        assert!(ImageConfig::parse("compressionLevel: 40").is_err());
        assert!(ImageConfig::parse("binaries: [{path: /x, dest: rel}]").is_err());
    }
}
