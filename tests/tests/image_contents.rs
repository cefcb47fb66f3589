//! Checks on the built image itself.

use std::process::Command;

/// The root has no shell or interpreter: the only way in is the API.
#[test]
fn root_has_no_shell_or_interpreter() {
    let image = e2e::image().expect("building the e2e image");
    let out = Command::new("unsquashfs")
        .args(["-lc", "-d", ""])
        .arg(&image.rootfs)
        .output()
        .expect("this test needs `unsquashfs` (Debian package squashfs-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .collect();
    assert!(names.contains(&"machined"), "{listing}");
    for forbidden in [
        "sh", "bash", "dash", "ash", "busybox", "python", "python3", "perl",
    ] {
        assert!(
            !names.contains(&forbidden),
            "the root has {forbidden}:\n{listing}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("python") || n.starts_with("perl5")),
        "{listing}"
    );
}

/// /etc is read-only, so the resolvers machined writes under /run reach libc, containerd and
/// the cluster DNS forwarder through a link (without it, no name outside the cluster resolved
/// on a booted node).
#[test]
fn resolv_conf_links_to_the_resolvers_machined_writes() {
    let image = e2e::image().expect("building the e2e image");
    let out = Command::new("unsquashfs")
        .args(["-lln", "-d", ""])
        .arg(&image.rootfs)
        .arg("/etc/resolv.conf")
        .output()
        .expect("this test needs `unsquashfs` (Debian package squashfs-tools)");
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| {
            l.ends_with(&format!(
                "/etc/resolv.conf -> {}",
                imager::rootfs::RESOLV_CONF
            ))
        })
        .unwrap_or_else(|| panic!("no /etc/resolv.conf link in the image:\n{listing}"));
    assert!(line.starts_with('l'), "{line}");
}
