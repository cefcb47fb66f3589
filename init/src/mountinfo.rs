//! `/proc/self/mountinfo` and the order to unmount it in: the reverse of mount order, with
//! every mount's children before the mount itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo(5) lines; lines that do not fit the format are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let id = left.next()?.parse().ok()?;
    let parent = left.next()?.parse().ok()?;
    let _dev = left.next()?;
    let _root = left.next()?;
    let mount_point = PathBuf::from(unescape(left.next()?));
    let mut right = right.split(' ');
    let fstype = right.next()?.to_string();
    let source = unescape(right.next().unwrap_or(""));
    Some(MountEntry {
        id,
        parent,
        mount_point,
        fstype,
        source,
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts in the order to unmount them: reverse listing order, children before parents.
/// The root mount (`/`) is left out: it cannot be unmounted, only remounted read-only.
pub fn unmount_order(entries: &[MountEntry]) -> Vec<&MountEntry> {
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.parent != e.id {
            children.entry(e.parent).or_default().push(i);
        }
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for i in (0..entries.len()).rev() {
        visit(i, entries, &children, &mut seen, &mut order);
    }
    order
        .into_iter()
        .map(|i| &entries[i])
        .filter(|e| e.mount_point != std::path::Path::new("/"))
        .collect()
}

fn visit(
    i: usize,
    entries: &[MountEntry],
    children: &HashMap<u32, Vec<usize>>,
    seen: &mut HashSet<usize>,
    order: &mut Vec<usize>,
) {
    if !seen.insert(i) {
        return;
    }
    if let Some(kids) = children.get(&entries[i].id) {
        for &kid in kids.iter().rev() {
            visit(kid, entries, children, seen, order);
        }
    }
    order.push(i);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCHED: &str = "\
20 1 7:0 / / ro,relatime - squashfs /dev/loop0 ro,errors=continue
21 20 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,mode=755
22 21 0:20 / /dev/pts rw,nosuid,noexec - devpts devpts rw,gid=5,mode=620,ptmxmode=666
23 21 0:21 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
24 20 0:22 / /proc rw,nosuid,nodev,noexec - proc proc rw
25 20 0:23 / /sys rw,nosuid,nodev,noexec - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
27 20 0:25 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
28 20 0:26 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw
29 20 0:27 / /var rw,nosuid,nodev - tmpfs tmpfs rw
30 20 0:28 / /system/state rw,nosuid,nodev - tmpfs tmpfs rw,mode=700
31 29 0:29 / /var/lib/my\\040data rw shared:5 - tmpfs my\\040src rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let entries = parse(SWITCHED);
        assert_eq!(entries.len(), 12);
        assert_eq!(entries[0].mount_point, PathBuf::from("/"));
        assert_eq!(entries[0].fstype, "squashfs");
        assert_eq!(entries[0].source, "/dev/loop0");
        assert_eq!(entries[6].parent, 25);
        assert_eq!(entries[11].mount_point, PathBuf::from("/var/lib/my data"));
        assert_eq!(entries[11].source, "my src");
        assert!(parse("garbage\n\n12 x\n").is_empty());
    }

    #[test]
    fn reverse_order_children_first_root_excluded() {
        let entries = parse(SWITCHED);
        let order: Vec<String> = unmount_order(&entries)
            .iter()
            .map(|e| e.mount_point.display().to_string())
            .collect();
        assert_eq!(
            order,
            vec![
                "/var/lib/my data",
                "/system/state",
                "/var",
                "/tmp",
                "/run",
                "/sys/fs/cgroup",
                "/sys",
                "/proc",
                "/dev/shm",
                "/dev/pts",
                "/dev"
            ]
        );
    }

    #[test]
    fn a_child_listed_before_its_parent_still_goes_first() {
        // After a move, a child can appear above its parent in the listing.
        let text = "\
1 0 0:1 / / rw - rootfs rootfs rw
5 9 0:5 / /a/b rw - tmpfs t rw
7 1 0:7 / /c rw - tmpfs t rw
9 1 0:9 / /a rw - tmpfs t rw
";
        let entries = parse(text);
        let order: Vec<u32> = unmount_order(&entries).iter().map(|e| e.id).collect();
        assert_eq!(order, vec![5, 9, 7]);
    }
}
