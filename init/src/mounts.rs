//! The mount plan: the pseudo filesystems PID 1 mounts first, and the writable places of the
//! read-only root. Plans are data (tested on the host); `mount_all` carries them out.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::console::{debug, error, warning};
use crate::system::{MountCall, System, errno};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub call: MountCall,
    /// Mode of the mount point if it has to be created.
    pub dir_mode: u32,
}

fn spec(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> MountSpec {
    MountSpec {
        call: MountCall {
            source: Some(fstype.to_string()),
            target: PathBuf::from(target),
            fstype: Some(fstype.to_string()),
            flags,
            data: data.map(str::to_string),
        },
        dir_mode: 0o755,
    }
}

/// The first mounts, parents before children (mount-setup order of systemd).
pub fn early_mounts() -> Vec<MountSpec> {
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let scratch = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    vec![
        spec("proc", "/proc", hidden, None),
        spec("sysfs", "/sys", hidden, None),
        spec("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        spec(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,gid=5,ptmxmode=0666"),
        ),
        spec("tmpfs", "/dev/shm", scratch, Some("mode=1777")),
        spec("tmpfs", "/run", scratch, Some("mode=0755")),
        spec("tmpfs", "/tmp", scratch, Some("mode=1777")),
        spec(
            "cgroup2",
            "/sys/fs/cgroup",
            hidden,
            Some("nsdelegate,memory_recursiveprot"),
        ),
    ]
}

/// The links programs expect in /dev.
pub fn dev_links() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ]
}

/// Mounts carried from the initramfs into the new root (each moves with its submounts).
pub const MOVED: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/tmp"];

/// Writable tmpfs mounts inside the new root (its mount points must exist in the image).
/// /run and /tmp are not here: they move over from the initramfs.
pub fn writable_mounts(new_root: &Path) -> Vec<MountSpec> {
    let scratch = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    [
        ("/var", "mode=0755"),
        ("/system/state", "mode=0700"),
        ("/etc/ros", "mode=0755"),
    ]
    .into_iter()
    .map(|(path, data)| {
        let target = new_root.join(path.trim_start_matches('/'));
        spec("tmpfs", &target.display().to_string(), scratch, Some(data))
    })
    .collect()
}

/// Make every mount under / shared (as systemd does), so container runtimes and the kubelet
/// can use mount propagation. Done after the root switch: MS_MOVE refuses shared parents.
pub fn shared_root() -> MountCall {
    MountCall {
        source: None,
        target: PathBuf::from("/"),
        fstype: None,
        flags: MsFlags::MS_REC | MsFlags::MS_SHARED,
        data: None,
    }
}

/// The root image mounted read-only at `new_root`.
pub fn root_mount(device: &Path, new_root: &Path, fstype: &str) -> MountCall {
    MountCall {
        source: Some(device.display().to_string()),
        target: new_root.to_path_buf(),
        fstype: Some(fstype.to_string()),
        flags: MsFlags::MS_RDONLY,
        data: None,
    }
}

/// Mounts each spec, creating the mount point when `create_dirs`; a mount rejected for its
/// options (EINVAL, e.g. an older kernel without memory_recursiveprot) is retried without them.
/// Returns the targets that could not be mounted; failures are logged, never fatal.
pub fn mount_all(sys: &mut impl System, specs: &[MountSpec], create_dirs: bool) -> Vec<PathBuf> {
    let mut failed = Vec::new();
    for spec in specs {
        let target = &spec.call.target;
        if create_dirs {
            if let Err(e) = sys.create_dir_all(target, spec.dir_mode) {
                error!("mount point {}: {e}", target.display());
                failed.push(target.clone());
                continue;
            }
        } else if !sys.exists(target) {
            error!("mount point {} is missing; not mounted", target.display());
            failed.push(target.clone());
            continue;
        }
        let mut result = sys.mount(&spec.call);
        if let Err(e) = &result
            && errno(e) == libc::EINVAL
            && spec.call.data.is_some()
        {
            warning!(
                "mount {} with {:?} rejected ({e}); retrying without options",
                target.display(),
                spec.call.data.as_deref().unwrap_or_default()
            );
            let plain = MountCall {
                data: None,
                ..spec.call.clone()
            };
            result = sys.mount(&plain);
        }
        match result {
            Ok(()) => debug!(
                "mounted {} on {}",
                spec.call.fstype.as_deref().unwrap_or("?"),
                target.display()
            ),
            Err(e) => {
                error!(
                    "mount {} on {}: {e}",
                    spec.call.fstype.as_deref().unwrap_or("?"),
                    target.display()
                );
                failed.push(target.clone());
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeSystem, Op};

    fn targets(specs: &[MountSpec]) -> Vec<String> {
        specs
            .iter()
            .map(|s| s.call.target.display().to_string())
            .collect()
    }

    #[test]
    fn early_mounts_cover_the_pseudo_filesystems_parents_first() {
        let plan = early_mounts();
        assert_eq!(
            targets(&plan),
            vec![
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/tmp",
                "/sys/fs/cgroup"
            ]
        );
        for (i, spec) in plan.iter().enumerate() {
            for later in &plan[i + 1..] {
                assert!(
                    !spec.call.target.starts_with(&later.call.target),
                    "{} is mounted before its parent {}",
                    spec.call.target.display(),
                    later.call.target.display()
                );
            }
        }
        let cgroup = &plan[7].call;
        assert_eq!(cgroup.fstype.as_deref(), Some("cgroup2"));
        let proc_ = &plan[0].call;
        assert!(
            proc_
                .flags
                .contains(MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        );
        assert_eq!(plan[2].call.fstype.as_deref(), Some("devtmpfs"));
    }

    #[test]
    fn writable_paths_live_under_the_new_root() {
        let plan = writable_mounts(Path::new("/newroot"));
        assert_eq!(
            targets(&plan),
            vec!["/newroot/var", "/newroot/system/state", "/newroot/etc/ros"]
        );
        assert!(
            plan.iter()
                .all(|s| s.call.fstype.as_deref() == Some("tmpfs"))
        );
        assert!(
            !plan
                .iter()
                .any(|s| s.call.flags.contains(MsFlags::MS_RDONLY))
        );
    }

    #[test]
    fn the_root_is_read_only() {
        let call = root_mount(Path::new("/dev/loop0"), Path::new("/newroot"), "squashfs");
        assert!(call.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(call.source.as_deref(), Some("/dev/loop0"));
    }

    #[test]
    fn mount_all_creates_points_retries_without_options_and_goes_on() {
        let mut sys = FakeSystem::new();
        sys.fail_mount_with_data("/sys/fs/cgroup", libc::EINVAL);
        sys.fail_mount("/dev/shm", libc::ENODEV);
        let failed = mount_all(&mut sys, &early_mounts(), true);
        assert_eq!(failed, vec![PathBuf::from("/dev/shm")]);
        let cgroup_tries: Vec<_> = sys
            .ops()
            .iter()
            .filter_map(|op| match op {
                Op::Mount(c) if c.target == Path::new("/sys/fs/cgroup") => Some(c.data.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            cgroup_tries,
            vec![Some("nsdelegate,memory_recursiveprot".to_string()), None]
        );
        assert_eq!(sys.ops()[0], Op::Mkdir("/proc".into()));
        // /tmp was still mounted after /dev/shm failed.
        assert!(
            sys.ops()
                .iter()
                .any(|op| matches!(op, Op::Mount(c) if c.target == Path::new("/tmp")))
        );
    }

    #[test]
    fn missing_mount_points_in_a_read_only_root_are_reported() {
        let mut sys = FakeSystem::new();
        sys.add_dir("/newroot/var");
        let failed = mount_all(&mut sys, &writable_mounts(Path::new("/newroot")), false);
        assert_eq!(
            failed,
            vec![
                PathBuf::from("/newroot/system/state"),
                PathBuf::from("/newroot/etc/ros")
            ]
        );
        assert!(!sys.ops().iter().any(|op| matches!(op, Op::Mkdir(_))));
    }
}
