//! Builds the e2e images once — the release binaries, then the image and the image with the
//! cluster role — and prints them as shell `export` lines:
//!
//! ```sh
//! eval "$(target/debug/e2e-images)"   # sets ROS_E2E_IMAGE and ROS_E2E_CLUSTER_IMAGE
//! ```
//!
//! `scripts/test` and `scripts/e2e` do this before running the QEMU tests, so each test
//! process boots the same images and none of them runs cargo. Images given in those
//! variables already are printed back unchanged.

use std::path::Path;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let image = e2e::image().context("building the e2e image")?;
    let cluster = e2e::cluster_image().context("building the e2e cluster image")?;
    for (var, image) in [(e2e::ENV_IMAGE, &image), (e2e::ENV_CLUSTER_IMAGE, &cluster)] {
        let dir = image.kernel.parent().unwrap_or(Path::new("."));
        println!("export {var}={}", shell_quote(&dir.to_string_lossy()));
    }
    Ok(())
}

/// Single quotes, with any `'` inside written as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
