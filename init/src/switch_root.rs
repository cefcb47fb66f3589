//! From the initramfs to the read-only root: attach /rootfs.sqsh to a loop device, mount it at
//! /newroot, add the writable tmpfs mounts, move /dev /proc /sys /run /tmp across, then
//! `MS_MOVE` it onto / , chroot and chdir. Any failure before the final move is undone and boot
//! goes on from the initramfs.

use std::path::{Path, PathBuf};

use crate::console::{info, warning};
use crate::mounts;
use crate::system::{MountCall, System};

pub const ROOT_IMAGE: &str = "/rootfs.sqsh";
pub const NEW_ROOT: &str = "/newroot";
/// squashfs magic at offset 0 ("hsqs"), erofs magic (0xE0F5E1E2, little endian) at 1024.
const SQUASHFS_MAGIC: &[u8] = b"hsqs";
const EROFS_MAGIC: [u8; 4] = 0xE0F5_E1E2u32.to_le_bytes();
const EROFS_MAGIC_OFFSET: usize = 1024;

/// The filesystem type of a root image, from its magic number.
pub fn image_fstype(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(SQUASHFS_MAGIC) {
        return Some("squashfs");
    }
    let erofs = head.get(EROFS_MAGIC_OFFSET..EROFS_MAGIC_OFFSET + EROFS_MAGIC.len());
    (erofs == Some(&EROFS_MAGIC[..])).then_some("erofs")
}
/// Where the initramfs's machined is copied when the root image has none.
pub const MACHINED_FALLBACK: &str = "/run/ros/machined";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootOutcome {
    Switched { device: PathBuf },
    StayedInInitramfs { reason: String },
}

pub fn mount_and_switch(sys: &mut impl System) -> RootOutcome {
    let image = Path::new(ROOT_IMAGE);
    let new_root = Path::new(NEW_ROOT);
    if !sys.exists(image) {
        return stay(format!("no root image at {ROOT_IMAGE}"));
    }
    let fstype = match sys.read_prefix(image, EROFS_MAGIC_OFFSET + EROFS_MAGIC.len()) {
        Ok(head) => match image_fstype(&head) {
            Some(fstype) => fstype,
            None => return stay(format!("{ROOT_IMAGE} is neither squashfs nor erofs")),
        },
        Err(e) => return stay(format!("cannot read {ROOT_IMAGE}: {e}")),
    };
    let device = match sys.attach_loop_ro(image) {
        Ok(device) => device,
        Err(e) => return stay(format!("cannot attach {ROOT_IMAGE} to a loop device: {e}")),
    };
    info!(
        "root: {ROOT_IMAGE} ({fstype}) on {} (read-only)",
        device.display()
    );
    if let Err(e) = sys.create_dir_all(new_root, 0o755) {
        return stay(format!("cannot create {NEW_ROOT}: {e}"));
    }
    if let Err(e) = sys.mount(&mounts::root_mount(&device, new_root, fstype)) {
        return stay(format!(
            "cannot mount {} as {fstype}: {e}",
            device.display()
        ));
    }

    // The pseudo filesystems need somewhere to land; without them the new root is unusable.
    let missing: Vec<String> = mounts::MOVED
        .iter()
        .map(|p| inside(new_root, Path::new(p)))
        .filter(|p| !sys.exists(p))
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        undo_root(sys, new_root, &[]);
        return stay(format!(
            "the root image lacks the mount points {}",
            missing.join(", ")
        ));
    }

    let writable = mounts::writable_mounts(new_root);
    let failed = mounts::mount_all(sys, &writable, false);
    let mounted: Vec<PathBuf> = writable
        .iter()
        .map(|s| s.call.target.clone())
        .filter(|t| !failed.contains(t))
        .collect();

    copy_machined_if_missing(sys, new_root);

    let mut moved: Vec<&str> = Vec::new();
    for path in mounts::MOVED {
        let from = Path::new(path);
        if let Err(e) = sys.mount(&MountCall::moving(from, &inside(new_root, from))) {
            let reason = format!("cannot move {path} into {NEW_ROOT}: {e}");
            move_back(sys, new_root, &moved);
            undo_root(sys, new_root, &mounted);
            return stay(reason);
        }
        moved.push(path);
    }

    if let Err(e) = sys.chdir(new_root) {
        move_back(sys, new_root, &moved);
        undo_root(sys, new_root, &mounted);
        return stay(format!("cannot chdir to {NEW_ROOT}: {e}"));
    }
    if let Err(e) = sys.mount(&MountCall::moving(Path::new("."), Path::new("/"))) {
        let _ = sys.chdir(Path::new("/"));
        move_back(sys, new_root, &moved);
        undo_root(sys, new_root, &mounted);
        return stay(format!("cannot move {NEW_ROOT} onto /: {e}"));
    }
    // Past this point there is no way back: the old root is hidden under the new one.
    if let Err(e) = sys.chroot(Path::new(".")) {
        warning!("root: chroot into the new root failed: {e}");
    }
    if let Err(e) = sys.chdir(Path::new("/")) {
        warning!("root: chdir / failed: {e}");
    }
    info!("root: switched to the read-only {fstype} root");
    RootOutcome::Switched { device }
}

/// `/dev` under `/newroot` -> `/newroot/dev`.
fn inside(new_root: &Path, path: &Path) -> PathBuf {
    new_root.join(path.strip_prefix("/").unwrap_or(path))
}

fn stay(reason: String) -> RootOutcome {
    warning!("root: {reason}; continuing from the initramfs");
    RootOutcome::StayedInInitramfs { reason }
}

fn copy_machined_if_missing(sys: &mut impl System, new_root: &Path) {
    let own = Path::new("/sbin/machined");
    if sys.exists(&inside(new_root, own)) || !sys.exists(own) {
        return;
    }
    let fallback = Path::new(MACHINED_FALLBACK);
    let copied = sys
        .create_dir_all(Path::new("/run/ros"), 0o755)
        .and_then(|()| sys.copy_file(own, fallback, 0o755));
    match copied {
        Ok(()) => warning!(
            "root: the image has no /sbin/machined; using the initramfs copy at {MACHINED_FALLBACK}"
        ),
        Err(e) => warning!(
            "root: the image has no /sbin/machined and copying the initramfs one failed: {e}"
        ),
    }
}

fn move_back(sys: &mut impl System, new_root: &Path, moved: &[&str]) {
    for path in moved.iter().rev() {
        let to = Path::new(path);
        if let Err(e) = sys.mount(&MountCall::moving(&inside(new_root, to), to)) {
            warning!("root: cannot move {path} back: {e}");
        }
    }
}

fn undo_root(sys: &mut impl System, new_root: &Path, mounted: &[PathBuf]) {
    for target in mounted.iter().rev() {
        let _ = sys.umount(target);
    }
    if let Err(e) = sys.umount(new_root) {
        warning!("root: cannot unmount {NEW_ROOT}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, Op};
    use nix::mount::MsFlags;

    fn image_system() -> FakeSystem {
        let mut sys = FakeSystem::new();
        sys.add_file(ROOT_IMAGE, "hsqs and the rest");
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "var",
            "system/state",
            "etc/ros",
        ] {
            sys.add_dir(Path::new(NEW_ROOT).join(dir));
        }
        sys.add_file("/newroot/sbin/machined", "elf");
        sys
    }

    fn mount_ops(sys: &FakeSystem) -> Vec<String> {
        sys.ops()
            .iter()
            .filter_map(|op| match op {
                Op::Mount(c) if c.flags.contains(MsFlags::MS_MOVE) => Some(format!(
                    "move {} {}",
                    c.source.as_deref().unwrap_or(""),
                    c.target.display()
                )),
                Op::Mount(c) => Some(format!(
                    "mount {} {}",
                    c.fstype.as_deref().unwrap_or(""),
                    c.target.display()
                )),
                Op::Umount(p) => Some(format!("umount {}", p.display())),
                Op::Chdir(p) => Some(format!("chdir {}", p.display())),
                Op::Chroot(p) => Some(format!("chroot {}", p.display())),
                Op::AttachLoop(p) => Some(format!("loop {}", p.display())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn switches_in_the_documented_order() {
        let mut sys = image_system();
        let outcome = mount_and_switch(&mut sys);
        assert_eq!(
            outcome,
            RootOutcome::Switched {
                device: "/dev/loop0".into()
            }
        );
        assert_eq!(
            mount_ops(&sys),
            vec![
                "loop /rootfs.sqsh",
                "mount squashfs /newroot",
                "mount tmpfs /newroot/var",
                "mount tmpfs /newroot/system/state",
                "mount tmpfs /newroot/etc/ros",
                "move /dev /newroot/dev",
                "move /proc /newroot/proc",
                "move /sys /newroot/sys",
                "move /run /newroot/run",
                "move /tmp /newroot/tmp",
                "chdir /newroot",
                "move . /",
                "chroot .",
                "chdir /",
            ]
        );
        let root = sys.ops().iter().find_map(|op| match op {
            Op::Mount(c) if c.fstype.as_deref() == Some("squashfs") => Some(c.clone()),
            _ => None,
        });
        assert!(root.unwrap().flags.contains(MsFlags::MS_RDONLY));
        assert!(!sys.ops().iter().any(|op| matches!(op, Op::Copy(..))));
    }

    #[test]
    fn the_image_format_comes_from_its_magic() {
        assert_eq!(image_fstype(b"hsqs\x10\x00"), Some("squashfs"));
        let mut erofs = vec![0u8; 2048];
        erofs[1024..1028].copy_from_slice(&[0xE2, 0xE1, 0xF5, 0xE0]);
        assert_eq!(image_fstype(&erofs), Some("erofs"));
        assert_eq!(image_fstype(&erofs[..1027]), None);
        assert_eq!(image_fstype(b""), None);
        assert_eq!(image_fstype(&[0u8; 4096]), None);
    }

    #[test]
    fn an_erofs_image_is_mounted_as_erofs() {
        let mut sys = image_system();
        let mut erofs = vec![0u8; 4096];
        erofs[1024..1028].copy_from_slice(&[0xE2, 0xE1, 0xF5, 0xE0]);
        sys.add_bytes(ROOT_IMAGE, &erofs);
        assert!(matches!(
            mount_and_switch(&mut sys),
            RootOutcome::Switched { .. }
        ));
        assert_eq!(mount_ops(&sys)[1], "mount erofs /newroot");
    }

    #[test]
    fn an_unknown_image_format_is_not_attached() {
        let mut sys = image_system();
        sys.add_file(ROOT_IMAGE, "not a filesystem");
        let outcome = mount_and_switch(&mut sys);
        assert!(
            matches!(outcome, RootOutcome::StayedInInitramfs { reason } if reason.contains("neither squashfs nor erofs"))
        );
        assert!(sys.ops().is_empty());
    }

    #[test]
    fn no_image_means_staying_in_the_initramfs() {
        let mut sys = FakeSystem::new();
        let outcome = mount_and_switch(&mut sys);
        assert!(
            matches!(outcome, RootOutcome::StayedInInitramfs { reason } if reason.contains("no root image"))
        );
        assert!(sys.ops().is_empty());
    }

    #[test]
    fn a_loop_failure_leaves_everything_alone() {
        let mut sys = image_system();
        sys.loop_failure = Some(libc::ENXIO);
        assert!(matches!(
            mount_and_switch(&mut sys),
            RootOutcome::StayedInInitramfs { .. }
        ));
        assert_eq!(mount_ops(&sys), vec!["loop /rootfs.sqsh"]);
    }

    #[test]
    fn a_failed_move_is_rolled_back() {
        let mut sys = image_system();
        sys.fail_mount("/newroot/run", libc::EINVAL);
        let outcome = mount_and_switch(&mut sys);
        assert!(
            matches!(outcome, RootOutcome::StayedInInitramfs { reason } if reason.contains("/run"))
        );
        let ops = mount_ops(&sys);
        let tail: Vec<&str> = ops.iter().skip(8).map(String::as_str).collect();
        assert_eq!(
            tail,
            vec![
                "move /run /newroot/run",
                "move /newroot/sys /sys",
                "move /newroot/proc /proc",
                "move /newroot/dev /dev",
                "umount /newroot/etc/ros",
                "umount /newroot/system/state",
                "umount /newroot/var",
                "umount /newroot",
            ]
        );
        assert!(!ops.iter().any(|o| o.starts_with("chroot")));
    }

    #[test]
    fn an_image_without_mount_points_is_not_used() {
        let mut sys = FakeSystem::new();
        sys.add_file(ROOT_IMAGE, "hsqs");
        sys.add_dir("/newroot/dev");
        let outcome = mount_and_switch(&mut sys);
        let RootOutcome::StayedInInitramfs { reason } = outcome else {
            panic!("switched without /proc in the image");
        };
        assert!(reason.contains("/newroot/proc"), "{reason}");
        assert_eq!(
            mount_ops(&sys),
            vec![
                "loop /rootfs.sqsh",
                "mount squashfs /newroot",
                "umount /newroot"
            ]
        );
    }

    #[test]
    fn the_initramfs_machined_is_copied_when_the_image_has_none() {
        let mut sys = FakeSystem::new();
        sys.add_file(ROOT_IMAGE, "hsqs");
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "var",
            "system/state",
            "etc/ros",
        ] {
            sys.add_dir(Path::new(NEW_ROOT).join(dir));
        }
        sys.add_file("/sbin/machined", "elf");
        assert!(matches!(
            mount_and_switch(&mut sys),
            RootOutcome::Switched { .. }
        ));
        let copy = sys
            .ops()
            .iter()
            .position(|op| matches!(op, Op::Copy(..)))
            .unwrap();
        let run_moved = sys
            .ops()
            .iter()
            .position(|op| matches!(op, Op::Mount(c) if c.target == Path::new("/newroot/run")))
            .unwrap();
        assert!(copy < run_moved, "copy must land in /run before /run moves");
        assert_eq!(sys.file(MACHINED_FALLBACK), Some("elf"));
    }
}
