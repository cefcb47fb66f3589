//! STATE and EPHEMERAL on a disk. The raw image's GPT names two partitions `STATE` and
//! `EPHEMERAL` and leaves them unformatted; on a node machined finds them by partition name
//! (the kernel's `PARTNAME=` in sysfs, so no udev is needed), formats each as ext4 on first
//! use (`mkfs.ext4`, which the imager ships in the root), and mounts STATE at /system/state
//! and EPHEMERAL at /var, over the tmpfs init put there. Without such partitions (a direct
//! kernel + initramfs boot with no disk) the tmpfs stays and nothing survives a reboot.
//!
//! ext4 rather than our own FAT writer: it keeps modes and owners, journals the config
//! writes, and the kernel and the tool are both in the image already.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The partitions machined mounts, by GPT name, and where.
pub const PERSISTENT: &[(&str, &str)] = &[("STATE", "/system/state"), ("EPHEMERAL", "/var")];

/// The formatter the imager copies into the root (Debian's e2fsprogs).
pub const MKFS_EXT4: &str = "/usr/sbin/mkfs.ext4";

/// A block device partition the kernel knows by GPT name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (`PARTNAME=`).
    pub label: String,
    /// Kernel device name, e.g. `vda4`.
    pub kernel_name: String,
}

impl Partition {
    pub fn dev_path(&self) -> PathBuf {
        Path::new("/dev").join(&self.kernel_name)
    }
}

/// What happened to one persistent partition at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No partition with this name: the tmpfs stays.
    Absent,
    /// Already mounted there (machined was restarted by init).
    AlreadyMounted { device: String },
    /// Mounted; `formatted` says whether this boot made the file system.
    Mounted { device: String, formatted: bool },
}

/// Partitions named in `<sys_class_block>/*/uevent` (`PARTNAME=`), sorted by device name so
/// the first disk wins when two carry the same name.
pub fn find_partitions(sys_class_block: &Path) -> Vec<Partition> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(uevent) = std::fs::read_to_string(entry.path().join("uevent")) else {
            continue;
        };
        if let Some(p) = parse_uevent(&uevent) {
            found.push(p);
        }
    }
    found.sort_by(|a, b| a.kernel_name.cmp(&b.kernel_name));
    found
}

fn parse_uevent(text: &str) -> Option<Partition> {
    let mut label = None;
    let mut name = None;
    let mut is_partition = false;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("PARTNAME", v)) => label = Some(v.to_string()),
            Some(("DEVNAME", v)) => name = Some(v.to_string()),
            Some(("DEVTYPE", "partition")) => is_partition = true,
            _ => {}
        }
    }
    (is_partition && !label.as_deref().unwrap_or("").is_empty()).then(|| Partition {
        label: label.unwrap_or_default(),
        kernel_name: name.unwrap_or_default(),
    })
}

/// The ext4 (ext2/3) superblock magic 0xEF53 at byte 1024 + 56.
pub fn has_ext_fs(device: &mut (impl Read + Seek)) -> std::io::Result<bool> {
    let mut magic = [0u8; 2];
    device.seek(SeekFrom::Start(1024 + 56))?;
    match device.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x53, 0xEF]),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The source device of the mount at `target` in mountinfo text (the last one wins, as it
/// is the one visible), if its file system is ext4.
pub fn ext4_mount_source(mountinfo: &str, target: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut fs = right.split_whitespace();
            let fstype = fs.next()?;
            let source = fs.next()?;
            Some((mount_point, fstype, source))
        })
        .rfind(|(mp, _, _)| *mp == target)
        .filter(|(_, fstype, _)| *fstype == "ext4")
        .map(|(_, _, source)| source.to_string())
}

/// The arguments for formatting `device` as ext4 named `label`. Lazy inode-table and journal
/// init keep first boot short (under TCG too); no discard, as a fresh image is already zero.
pub fn mkfs_args(device: &Path, label: &str) -> Vec<String> {
    vec![
        "-F".into(),
        "-q".into(),
        "-L".into(),
        label.into(),
        "-E".into(),
        "nodiscard,lazy_itable_init=1,lazy_journal_init=1".into(),
        device.display().to_string(),
    ]
}

/// Finds, formats when needed, and mounts STATE and EPHEMERAL. Each partition is handled on
/// its own: a failure on one is reported and the other is still tried.
pub fn mount_persistent() -> Vec<(&'static str, Result<Outcome, String>)> {
    let partitions = find_partitions(Path::new("/sys/class/block"));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    PERSISTENT
        .iter()
        .map(|(label, target)| {
            let outcome = match partitions.iter().find(|p| p.label == *label) {
                None => Ok(Outcome::Absent),
                Some(p) => match ext4_mount_source(&mountinfo, target) {
                    Some(device) => Ok(Outcome::AlreadyMounted { device }),
                    None => format_and_mount(p, Path::new(target)),
                },
            };
            (*label, outcome)
        })
        .collect()
}

fn format_and_mount(p: &Partition, target: &Path) -> Result<Outcome, String> {
    let dev = p.dev_path();
    let mut file =
        std::fs::File::open(&dev).map_err(|e| format!("opening {}: {e}", dev.display()))?;
    let formatted =
        !has_ext_fs(&mut file).map_err(|e| format!("reading {}: {e}", dev.display()))?;
    drop(file);
    if formatted {
        let out = Command::new(MKFS_EXT4)
            .args(mkfs_args(&dev, &p.label))
            .output()
            .map_err(|e| format!("running {MKFS_EXT4}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{MKFS_EXT4} {}: {}: {}",
                dev.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    use nix::mount::{MsFlags, mount};
    mount(
        Some(&dev),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        // No background zeroing of inode tables: mkfs left them lazy, and the writes would
        // compete with the boot for the disk.
        Some("noinit_itable"),
    )
    .map_err(|e| format!("mount {} on {}: {e}", dev.display(), target.display()))?;
    Ok(Outcome::Mounted {
        device: dev.display().to_string(),
        formatted,
    })
}

/// Mounts the persistent partitions and logs each outcome (machined's log goes to the
/// console too).
pub fn mount_and_log() {
    for (label, outcome) in mount_persistent() {
        let target = PERSISTENT
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, t)| *t)
            .unwrap_or("?");
        match outcome {
            Ok(Outcome::Absent) => {
                tracing::info!("disks: {label}: no partition of that name; {target} stays tmpfs")
            }
            Ok(Outcome::AlreadyMounted { device }) => {
                tracing::info!("disks: {label}: {device} already mounted on {target}")
            }
            Ok(Outcome::Mounted { device, formatted }) => tracing::info!(
                "disks: {label}: {device} mounted on {target} (ext4{})",
                if formatted { ", formatted now" } else { "" }
            ),
            Err(e) => tracing::error!("disks: {label}: {e}; {target} stays tmpfs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn partitions_by_name_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let add = |name: &str, text: &str| {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("uevent"), text).unwrap();
        };
        add("vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n");
        add(
            "vda4",
            "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=STATE\n",
        );
        add(
            "vda5",
            "DEVNAME=vda5\nDEVTYPE=partition\nPARTN=5\nPARTNAME=EPHEMERAL\n",
        );
        add(
            "vdb1",
            "DEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=STATE\n",
        );
        add("vda1", "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\n");
        let found = find_partitions(dir.path());
        assert_eq!(
            found
                .iter()
                .map(|p| (p.kernel_name.as_str(), p.label.as_str()))
                .collect::<Vec<_>>(),
            [("vda4", "STATE"), ("vda5", "EPHEMERAL"), ("vdb1", "STATE")]
        );
        assert_eq!(found[0].dev_path(), Path::new("/dev/vda4"));
        assert!(find_partitions(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn ext_superblock_magic() {
        let mut blank = Cursor::new(vec![0u8; 4096]);
        assert!(!has_ext_fs(&mut blank).unwrap());
        let mut data = vec![0u8; 4096];
        data[1080] = 0x53;
        data[1081] = 0xEF;
        assert!(has_ext_fs(&mut Cursor::new(data)).unwrap());
        // A device shorter than a superblock is not formatted.
        assert!(!has_ext_fs(&mut Cursor::new(vec![0u8; 100])).unwrap());
    }

    #[test]
    fn mount_source_only_for_the_visible_ext4_mount() {
        let info = "\
22 1 0:20 / / ro,relatime - squashfs /dev/loop0 ro
30 22 0:28 / /system/state rw,nosuid,nodev - tmpfs tmpfs rw,mode=700
31 22 0:29 / /var rw,nosuid,nodev - tmpfs tmpfs rw
40 30 254:4 / /system/state rw,nosuid,nodev,noatime - ext4 /dev/vda4 rw
";
        assert_eq!(
            ext4_mount_source(info, "/system/state").as_deref(),
            Some("/dev/vda4")
        );
        assert_eq!(ext4_mount_source(info, "/var"), None);
        assert_eq!(ext4_mount_source(info, "/nowhere"), None);
    }

    #[test]
    fn mkfs_names_the_label_and_the_device() {
        let args = mkfs_args(Path::new("/dev/vda4"), "STATE");
        assert_eq!(args.last().unwrap(), "/dev/vda4");
        let l = args.iter().position(|a| a == "-L").unwrap();
        assert_eq!(args[l + 1], "STATE");
        assert!(args.contains(&"-F".to_string()));
    }
}
