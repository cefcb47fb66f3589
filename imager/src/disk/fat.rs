//! FAT file systems inside a partition of a disk image file (for the EFI system partition
//! and the boot slots), with the `fatfs` crate. Every timestamp is the build's epoch (the
//! crate's `chrono` clock is not compiled in), so the bytes depend only on the inputs.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A Read/Write/Seek view of `len` bytes at `start` in a file.
pub struct Window<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Self {
        Self {
            file,
            start,
            len,
            pos: 0,
        }
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let read = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos >= self.len && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let written = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(n) => self.len as i128 + n as i128,
            SeekFrom::Current(n) => self.pos as i128 + n as i128,
        };
        if target < 0 || target > self.len as i128 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            ));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }
}

/// Gives fatfs the epoch's date as "now".
#[derive(Debug)]
struct EpochClock {
    date: fatfs::Date,
    time: fatfs::Time,
}

impl fatfs::TimeProvider for EpochClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.date,
            time: self.time,
        }
    }
}

/// Civil date (UTC) of a Unix time, clamped to FAT's range (1980..=2107).
fn clock(epoch: u64) -> &'static EpochClock {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(1980, 2107) as u16;
    let time = fatfs::Time {
        hour: (secs / 3600) as u16,
        min: (secs / 60 % 60) as u16,
        sec: (secs % 60) as u16,
        millis: 0,
    };
    // fatfs wants a &'static clock; a build makes a handful of volumes.
    Box::leak(Box::new(EpochClock {
        date: fatfs::Date { year, month, day },
        time,
    }))
}

/// A file to put on a FAT volume: path with `/` separators, and its host source or bytes.
pub enum FatFile<'a> {
    Copy(&'a str, &'a Path),
    Bytes(&'a str, &'a [u8]),
}

/// Formats the window as FAT (the crate picks 12/16/32 by size) and writes the files.
pub fn format_and_fill(
    window: Window<'_>,
    label: &str,
    volume_id: u32,
    epoch: u64,
    files: &[FatFile<'_>],
) -> Result<()> {
    if label.len() > 11 || !label.is_ascii() {
        bail!("FAT label {label:?} must be at most 11 ASCII characters");
    }
    let mut label_bytes = [b' '; 11];
    label_bytes[..label.len()].copy_from_slice(label.to_ascii_uppercase().as_bytes());
    let mut window = window;
    fatfs::format_volume(
        &mut window,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label_bytes)
            .volume_id(volume_id),
    )
    .with_context(|| format!("formatting FAT volume {label}"))?;
    window.seek(SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new().time_provider(clock(epoch)))
        .context("opening the new FAT volume")?;
    {
        let root = fs.root_dir();
        for file in files {
            let (path, data) = match file {
                FatFile::Copy(path, source) => (
                    *path,
                    std::fs::read(source)
                        .with_context(|| format!("reading {}", source.display()))?,
                ),
                FatFile::Bytes(path, bytes) => (*path, bytes.to_vec()),
            };
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let mut dir = root.clone();
            for part in &parts[..parts.len() - 1] {
                dir = match dir.open_dir(part) {
                    Ok(existing) => existing,
                    Err(_) => dir
                        .create_dir(part)
                        .with_context(|| format!("FAT {label}: mkdir {part}"))?,
                };
            }
            let name = parts
                .last()
                .with_context(|| format!("FAT path {path:?} is empty"))?;
            let mut out = dir
                .create_file(name)
                .with_context(|| format!("FAT {label}: create {path}"))?;
            out.truncate()?;
            out.write_all(&data)
                .with_context(|| format!("FAT {label}: writing {path} (partition full?)"))?;
        }
    }
    fs.unmount().context("closing the FAT volume")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_to_civil_date() {
        let c = clock(1_704_067_200 + 3_723); // 2024-01-01 01:02:03
        assert_eq!((c.date.year, c.date.month, c.date.day), (2024, 1, 1));
        assert_eq!((c.time.hour, c.time.min, c.time.sec), (1, 2, 3));
        let c = clock(951_782_400); // 2000-02-29
        assert_eq!((c.date.year, c.date.month, c.date.day), (2000, 2, 29));
        assert_eq!(clock(0).date.year, 1980, "clamped to FAT's first year");
    }
}
