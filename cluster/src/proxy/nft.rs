//! Loading nftables rulesets. We run the `nft` tool (Debian package `nftables`) with the
//! ruleset on stdin rather than speaking nf_tables netlink ourselves: no maintained pure-Rust
//! crate covers what the proxy needs (numgen, verdict maps with concatenated keys, dynamic
//! sets with timeouts) and hand-encoding that netlink protocol was not workable in the time
//! given. `nft -f -` applies a whole file as one kernel transaction, which gives the atomic
//! replacement the proxy relies on.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub const NFT: &str = "nft";

/// Applies `ruleset` in one transaction (in the caller's network namespace).
pub fn apply(ruleset: &str) -> Result<()> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install the Debian package nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())
        .context("writing the ruleset to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft rejected the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A script that replaces table `ip <name>` by `body` atomically (creating it first so the
/// delete never fails).
pub fn replace_table(name: &str, body: &str) -> String {
    format!("table ip {name} {{}}\ndelete table ip {name}\ntable ip {name} {{\n{body}}}\n")
}

/// Deletes table `ip <name>` if it exists.
pub fn delete_table(name: &str) -> Result<()> {
    apply(&format!("table ip {name} {{}}\ndelete table ip {name}\n"))
}

/// The ruleset of table `ip <name>` as nft prints it (None when there is no such table).
pub fn list_table(name: &str) -> Result<Option<String>> {
    let out = Command::new(NFT)
        .args(["list", "table", "ip", name])
        .output()
        .context("running nft (install the Debian package nftables)")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}
