//! nocloud: a filesystem labelled `cidata` (vfat or iso9660) holding `user-data`.

use nix::mount::{MsFlags, mount, umount};
use std::path::Path;

const BY_LABEL: &str = "/dev/disk/by-label";
const MOUNT_POINT: &str = "/run/ros/cidata";

/// Finds the cidata device, mounts it read-only, reads `user-data`, unmounts.
pub fn read() -> Result<Option<String>, String> {
    let device = ["cidata", "CIDATA"]
        .iter()
        .map(|l| Path::new(BY_LABEL).join(l))
        .find(|p| p.exists());
    let Some(device) = device else {
        return Ok(None);
    };
    std::fs::create_dir_all(MOUNT_POINT).map_err(|e| format!("{MOUNT_POINT}: {e}"))?;
    let mut last = String::new();
    for fstype in ["iso9660", "vfat"] {
        match mount(
            Some(&device),
            MOUNT_POINT,
            Some(fstype),
            MsFlags::MS_RDONLY,
            None::<&str>,
        ) {
            Ok(()) => {
                let text = std::fs::read_to_string(Path::new(MOUNT_POINT).join("user-data"));
                let _ = umount(MOUNT_POINT);
                return text.map(Some).map_err(|e| format!("cidata user-data: {e}"));
            }
            Err(e) => last = format!("mount {} ({fstype}): {e}", device.display()),
        }
    }
    Err(last)
}
