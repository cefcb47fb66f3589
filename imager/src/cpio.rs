//! A cpio "newc" archive writer for initramfs images.
//!
//! Written here rather than taken from a crate because the initramfs needs device nodes
//! (`/dev/console`, char 5:1) that a builder running without `mknod` rights can only express
//! by writing the header itself, and because reproducibility needs full control of inode
//! numbers, owners and times.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// Read at write time, so large files (the root image) are not held twice in memory.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Content),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// Permission bits only (e.g. 0o755).
    perm: u32,
}

/// An archive under construction. Entries are written sorted by path, parents first, with
/// owner 0:0, one fixed mtime and inode numbers given in that order, so the output depends
/// only on the entries.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Turns "/a/b/" or "a/b" into "a/b"; rejects empty, "." and ".." components.
fn normalise(path: &str) -> io::Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpio path {path:?} is empty or contains . or .."),
        ));
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` with its missing parent directories (0755). A later add of the same path
    /// replaces the earlier one, except that an explicit directory is never replaced by the
    /// implicit parent of something else.
    pub fn add(&mut self, path: &str, perm: u32, node: Node) -> io::Result<()> {
        let path = normalise(path)?;
        let mut parent = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cpio path {path:?}: parent {parent:?} is not a directory"),
                    ));
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            node: Node::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
        }
        self.entries.insert(
            path,
            Entry {
                node,
                perm: perm & 0o7777,
            },
        );
        Ok(())
    }

    pub fn add_dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.add(path, perm, Node::Dir)
    }

    pub fn add_bytes(&mut self, path: &str, perm: u32, data: Vec<u8>) -> io::Result<()> {
        self.add(path, perm, Node::File(Content::Bytes(data)))
    }

    pub fn add_file(&mut self, path: &str, perm: u32, source: PathBuf) -> io::Result<()> {
        self.add(path, perm, Node::File(Content::File(source)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the regular files' sizes (what the archive costs before compression).
    pub fn payload_size(&self) -> io::Result<u64> {
        let mut total = 0;
        for entry in self.entries.values() {
            if let Node::File(content) = &entry.node {
                total += content_len(content)?;
            }
        }
        Ok(total)
    }

    /// Writes the archive, trailer included, and returns the bytes written.
    pub fn write_to<W: Write>(&self, out: W, mtime: u64) -> io::Result<u64> {
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        let mtime = u32::try_from(mtime).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpio mtime does not fit in 32 bits",
            )
        })?;
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            let ino = index as u32 + 1;
            write_entry(&mut out, path, entry, ino, mtime)?;
        }
        write_header(
            &mut out,
            TRAILER,
            &Header {
                nlink: 1,
                ..Header::default()
            },
        )?;
        out.inner.flush()?;
        Ok(out.written)
    }
}

fn content_len(content: &Content) -> io::Result<u64> {
    match content {
        Content::Bytes(bytes) => Ok(bytes.len() as u64),
        Content::File(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

#[derive(Default)]
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

fn write_entry<W: Write>(
    out: &mut Counting<W>,
    path: &str,
    entry: &Entry,
    ino: u32,
    mtime: u32,
) -> io::Result<()> {
    let mut header = Header {
        ino,
        mtime,
        nlink: 1,
        ..Header::default()
    };
    match &entry.node {
        Node::Dir => {
            header.mode = S_IFDIR | entry.perm;
            header.nlink = 2;
            write_header(out, path, &header)
        }
        Node::Symlink(target) => {
            header.mode = S_IFLNK | 0o777;
            header.filesize = size32(target.len() as u64, path)?;
            write_header(out, path, &header)?;
            write_padded(out, target.as_bytes())
        }
        Node::CharDevice { major, minor } | Node::BlockDevice { major, minor } => {
            let kind = if matches!(entry.node, Node::CharDevice { .. }) {
                S_IFCHR
            } else {
                S_IFBLK
            };
            header.mode = kind | entry.perm;
            header.rdevmajor = *major;
            header.rdevminor = *minor;
            write_header(out, path, &header)
        }
        Node::File(content) => {
            header.mode = S_IFREG | entry.perm;
            match content {
                Content::Bytes(bytes) => {
                    header.filesize = size32(bytes.len() as u64, path)?;
                    write_header(out, path, &header)?;
                    write_padded(out, bytes)
                }
                Content::File(source) => {
                    let mut file = std::fs::File::open(source).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", source.display()))
                    })?;
                    let len = file.metadata()?.len();
                    header.filesize = size32(len, path)?;
                    write_header(out, path, &header)?;
                    let copied = io::copy(&mut io::Read::take(&mut file, len), out)?;
                    if copied != len {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} shrank while being archived", source.display()),
                        ));
                    }
                    pad(out, len)
                }
            }
        }
    }
}

fn size32(len: u64, path: &str) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path}: too large for cpio newc (4 GiB)"),
        )
    })
}

fn write_header<W: Write>(out: &mut Counting<W>, name: &str, h: &Header) -> io::Result<()> {
    let namesize = name.len() as u32 + 1;
    let fields = [
        h.ino,
        h.mode,
        0,
        0,
        h.nlink,
        h.mtime,
        h.filesize,
        0,
        0,
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0,
    ];
    out.write_all(MAGIC)?;
    for field in fields {
        write!(out, "{field:08x}")?;
    }
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    // The 110-byte header plus the name is padded to a multiple of four.
    pad(out, 110 + u64::from(namesize))
}

fn write_padded<W: Write>(out: &mut Counting<W>, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

fn pad<W: Write>(out: &mut Counting<W>, len: u64) -> io::Result<()> {
    let padding = (4 - (len % 4)) % 4;
    out.write_all(&[0u8; 3][..padding as usize])
}

struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_bytes("/etc/ros/modules", 0o644, b"virtio_pci\n".to_vec())
            .unwrap();
        a.add(
            "/dev/console",
            0o600,
            Node::CharDevice { major: 5, minor: 1 },
        )
        .unwrap();
        a.add("bin/sh-link", 0o777, Node::Symlink("../init".into()))
            .unwrap();
        a.add_bytes("init", 0o755, vec![1, 2, 3, 4, 5]).unwrap();
        a
    }

    #[test]
    fn parents_are_created_and_entries_sorted() {
        let a = sample();
        let names: Vec<&String> = a.entries.keys().collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh-link",
                "dev",
                "dev/console",
                "etc",
                "etc/ros",
                "etc/ros/modules",
                "init"
            ]
        );
    }

    #[test]
    fn header_layout_for_a_device_node() {
        let mut a = Archive::new();
        a.add(
            "dev/console",
            0o600,
            Node::CharDevice { major: 5, minor: 1 },
        )
        .unwrap();
        let mut buf = Vec::new();
        a.write_to(&mut buf, 1_700_000_000).unwrap();
        // Entry 2 (after the implicit "dev" directory) starts after a 4-byte-aligned header.
        let dev_len = 116; // 110-byte header + "dev\0", padded to 4
        let console = &buf[dev_len..dev_len + 110];
        let text = std::str::from_utf8(console).unwrap();
        assert_eq!(&text[0..6], "070701");
        assert_eq!(&text[14..22], "00002180", "mode is char device 0600");
        assert_eq!(&text[46..54], format!("{:08x}", 1_700_000_000u32));
        assert_eq!(&text[78..86], "00000005", "rdevmajor");
        assert_eq!(&text[86..94], "00000001", "rdevminor");
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn same_entries_give_same_bytes_regardless_of_insertion_order() {
        let mut b = Archive::new();
        b.add_bytes("init", 0o755, vec![1, 2, 3, 4, 5]).unwrap();
        b.add("bin/sh-link", 0o777, Node::Symlink("../init".into()))
            .unwrap();
        b.add(
            "/dev/console",
            0o600,
            Node::CharDevice { major: 5, minor: 1 },
        )
        .unwrap();
        b.add_bytes("/etc/ros/modules", 0o644, b"virtio_pci\n".to_vec())
            .unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        sample().write_to(&mut x, 7).unwrap();
        b.write_to(&mut y, 7).unwrap();
        assert_eq!(x, y);
        let mut z = Vec::new();
        sample().write_to(&mut z, 8).unwrap();
        assert_ne!(x, z, "mtime is part of the output");
    }

    #[test]
    fn rejects_dot_dot_and_files_as_parents() {
        let mut a = Archive::new();
        assert!(a.add_dir("a/../b", 0o755).is_err());
        a.add_bytes("f", 0o644, vec![]).unwrap();
        assert!(a.add_bytes("f/g", 0o644, vec![]).is_err());
    }

    /// The host's GNU cpio reads what we write: names, types, device numbers and contents.
    #[test]
    fn gnu_cpio_lists_the_archive() {
        let mut buf = Vec::new();
        sample().write_to(&mut buf, 1_700_000_000).unwrap();
        let mut child = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the test needs `cpio` (Debian package cpio)");
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(
            listing.lines().any(|l| l.starts_with("crw-------")
                && l.contains("5,")
                && l.ends_with("dev/console")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{listing}"
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh-link -> ../init")),
            "{listing}"
        );
        assert_eq!(listing.lines().count(), 8, "{listing}");
    }
}
