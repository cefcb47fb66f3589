//! Other formats made from the raw image with standard tools.

use std::path::Path;

use anyhow::Result;

use crate::tools::{self, QEMU_IMG};

/// `qemu-img convert -f raw -O qcow2` (zero clusters stay unallocated).
pub fn qcow2(raw: &Path, out: &Path) -> Result<()> {
    let mut cmd = QEMU_IMG.command()?;
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    tools::run(cmd)?;
    Ok(())
}
