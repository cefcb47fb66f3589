//! Host tools the imager runs, each with the Debian package that provides it, so a missing
//! tool gives an error a newcomer can act on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    pub command: &'static str,
    pub package: &'static str,
}

pub const MKSQUASHFS: HostTool = HostTool {
    command: "mksquashfs",
    package: "squashfs-tools",
};
pub const APT_GET: HostTool = HostTool {
    command: "apt-get",
    package: "apt",
};
pub const APT_CACHE: HostTool = HostTool {
    command: "apt-cache",
    package: "apt",
};
pub const DPKG_DEB: HostTool = HostTool {
    command: "dpkg-deb",
    package: "dpkg",
};
pub const QEMU_SYSTEM: HostTool = HostTool {
    command: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const QEMU_IMG: HostTool = HostTool {
    command: "qemu-img",
    package: "qemu-utils",
};
pub const OBJCOPY: HostTool = HostTool {
    command: "objcopy",
    package: "binutils",
};
pub const CARGO: HostTool = HostTool {
    command: "cargo",
    package: "cargo (or rustup)",
};

#[derive(Debug, thiserror::Error)]
#[error(
    "host tool `{command}` not found in PATH: install the Debian package `{package}` (apt-get install {package})"
)]
pub struct MissingTool {
    pub command: &'static str,
    pub package: &'static str,
}

impl HostTool {
    /// The tool's path, searching PATH and then the sbin directories (root's tools live
    /// there and are often not in a user's PATH).
    pub fn find(&self) -> Result<PathBuf, MissingTool> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path)
            .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
        for dir in dirs {
            let candidate = dir.join(self.command);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        Err(MissingTool {
            command: self.command,
            package: self.package,
        })
    }

    pub fn command(&self) -> Result<Command, MissingTool> {
        Ok(Command::new(self.find()?))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a command to completion; a failure carries the command line and its stderr.
pub fn run(mut command: Command) -> Result<Output> {
    let line = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("running {line}"))?;
    if !output.status.success() {
        // Build tools print pages of progress; the end holds the error.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        bail!("{line} failed ({}): {tail}", output.status);
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let tool = HostTool {
            command: "ros-no-such-tool-xyz",
            package: "ros-pkg",
        };
        let err = tool.find().unwrap_err().to_string();
        assert!(err.contains("`ros-no-such-tool-xyz`"), "{err}");
        assert!(err.contains("apt-get install ros-pkg"), "{err}");
    }

    #[test]
    fn finds_a_present_tool() {
        let env = HostTool {
            command: "env",
            package: "coreutils",
        };
        assert!(env.find().unwrap().ends_with("env"));
    }
}
