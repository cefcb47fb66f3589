//! GUID partition tables, written directly: a protective MBR, the primary header and entry
//! array, and their backup at the end of the disk. Written here (about 150 lines) rather than
//! with the `gpt` crate because every GUID must come from the build's inputs, not from a
//! random generator, for the image to be reproducible.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = 1024 * 1024;

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From the textual form, e.g. `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub fn parse(text: &str) -> Result<Self> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("{text:?} is not a GUID");
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16)?;
        }
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Ok(Self(b))
    }

    /// A version-4-shaped GUID derived from `seed`, so the same inputs give the same GUID.
    pub fn derived(seed: &str) -> Self {
        let digest = Sha256::digest(seed.as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[7] = (b[7] & 0x0f) | 0x40; // version 4 (byte 7: high byte of the LE third field)
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        Self(b)
    }
}

pub const TYPE_EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const TYPE_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
pub const TYPE_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub name: String,
    pub type_guid: &'static str,
    /// None: the rest of the disk (only the last partition).
    pub size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub disk_guid: Guid,
    pub sectors: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    pub fn get(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Places the partitions in order on a disk of `disk_size` bytes; GUIDs derive from `seed`.
pub fn plan(specs: &[PartitionSpec], disk_size: u64, seed: &str) -> Result<Layout> {
    if !disk_size.is_multiple_of(ALIGN) {
        bail!("disk size {disk_size} is not a multiple of 1 MiB");
    }
    let sectors = disk_size / SECTOR;
    let last_usable = sectors - 1 - ENTRY_SECTORS - 1;
    let mut next = ALIGN / SECTOR;
    let mut partitions = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        if spec.name.encode_utf16().count() > 36 {
            bail!(
                "partition name {:?} is longer than 36 characters",
                spec.name
            );
        }
        let last_lba = match spec.size {
            Some(size) => next + size.div_ceil(ALIGN) * ALIGN / SECTOR - 1,
            None if index + 1 == specs.len() => last_usable,
            None => bail!("only the last partition may take the rest of the disk"),
        };
        if last_lba > last_usable || last_lba < next {
            bail!(
                "partition {} does not fit on a {} MiB disk",
                spec.name,
                disk_size / ALIGN
            );
        }
        partitions.push(Partition {
            name: spec.name.clone(),
            type_guid: Guid::parse(spec.type_guid)?,
            guid: Guid::derived(&format!("{seed}/partition/{}", spec.name)),
            first_lba: next,
            last_lba,
        });
        next = (last_lba + 1).div_ceil(ALIGN / SECTOR) * (ALIGN / SECTOR);
    }
    Ok(Layout {
        disk_guid: Guid::derived(&format!("{seed}/disk")),
        sectors,
        partitions,
    })
}

/// Writes the protective MBR and both GPT copies.
pub fn write(file: &File, layout: &Layout) -> Result<()> {
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in layout.partitions.iter().enumerate() {
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().enumerate() {
            e[56 + j * 2..58 + j * 2].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let last = layout.sectors - 1;

    let mut mbr = [0u8; SECTOR as usize];
    let protective = &mut mbr[446..462];
    protective[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    protective[4] = 0xee;
    protective[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    protective[8..12].copy_from_slice(&1u32.to_le_bytes());
    protective[12..16].copy_from_slice(&(u32::try_from(last).unwrap_or(u32::MAX)).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    file.write_all_at(&mbr, 0)?;

    let primary = header(layout, 1, last, 2, entries_crc);
    let backup_entries = last - ENTRY_SECTORS;
    let backup = header(layout, last, 1, backup_entries, entries_crc);
    file.write_all_at(&primary, SECTOR)?;
    file.write_all_at(&entries, 2 * SECTOR)?;
    file.write_all_at(&entries, backup_entries * SECTOR)?;
    file.write_all_at(&backup, last * SECTOR)?;
    Ok(())
}

fn header(
    layout: &Layout,
    current: u64,
    other: u64,
    entries_lba: u64,
    entries_crc: u32,
) -> [u8; SECTOR as usize] {
    let mut h = [0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&current.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(layout.sectors - 2 - ENTRY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&layout.disk_guid.0);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn guid_text_maps_to_mixed_endian_bytes() {
        let g = Guid::parse(TYPE_EFI_SYSTEM).unwrap();
        assert_eq!(&g.0[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&g.0[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert!(Guid::parse("nope").is_err());
        assert_eq!(Guid::derived("a"), Guid::derived("a"));
        assert_ne!(Guid::derived("a"), Guid::derived("b"));
    }

    fn specs() -> Vec<PartitionSpec> {
        vec![
            PartitionSpec {
                name: "EFI".into(),
                type_guid: TYPE_EFI_SYSTEM,
                size: Some(10 * ALIGN),
            },
            PartitionSpec {
                name: "STATE".into(),
                type_guid: TYPE_LINUX_FS,
                size: Some(3 * ALIGN / 2),
            },
            PartitionSpec {
                name: "EPHEMERAL".into(),
                type_guid: TYPE_LINUX_FS,
                size: None,
            },
        ]
    }

    #[test]
    fn partitions_are_aligned_and_the_last_takes_the_rest() {
        let layout = plan(&specs(), 64 * ALIGN, "seed").unwrap();
        let p = &layout.partitions;
        assert_eq!(p[0].first_lba, 2048);
        assert_eq!(p[0].len(), 10 * ALIGN);
        assert_eq!(p[1].first_lba * SECTOR % ALIGN, 0);
        assert_eq!(p[1].len(), 2 * ALIGN, "sizes round up to 1 MiB");
        assert_eq!(p[2].last_lba, 64 * ALIGN / SECTOR - 34);
        assert!(plan(&specs(), 8 * ALIGN, "seed").is_err());
    }

    /// util-linux's sfdisk reads the table back (it checks both CRCs).
    #[test]
    fn sfdisk_reads_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let file = File::create(&path).unwrap();
        file.set_len(64 * ALIGN).unwrap();
        let layout = plan(&specs(), 64 * ALIGN, "seed").unwrap();
        write(&file, &layout).unwrap();
        drop(file);
        let out = Command::new("sfdisk")
            .arg("--dump")
            .arg(&path)
            .output()
            .expect("this test needs sfdisk (Debian package fdisk)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("label: gpt"), "{text}");
        assert!(
            text.contains("name=\"EFI\"") && text.contains("name=\"EPHEMERAL\""),
            "{text}"
        );
        assert!(
            text.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{text}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("corrupt"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
