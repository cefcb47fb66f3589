//! Shared libraries an executable needs, found from its ELF `PT_INTERP` and `DT_NEEDED`
//! entries (and `DT_RUNPATH`/`DT_RPATH`), the way the dynamic loader would find them, without
//! running `ldd` (which executes the binary's loader).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

/// Where Debian's loader looks when no cache entry or runpath matches.
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
}

impl ElfInfo {
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Reads the loader-relevant parts of a 64-bit ELF file.
pub fn inspect(data: &[u8]) -> Result<ElfInfo> {
    let header =
        elf::FileHeader64::<object::Endianness>::parse(data).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("bad ELF endianness")?;
    let mut info = ElfInfo::default();
    for segment in header
        .program_headers(endian, data)
        .context("bad ELF program headers")?
    {
        if let Some(interp) = segment.interpreter(endian, data).context("bad PT_INTERP")? {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header
        .sections(endian, data)
        .context("bad ELF section headers")?;
    let dynamic = sections
        .dynamic_table(endian, data)
        .context("bad ELF dynamic section")?;
    for entry in &dynamic {
        let value = || -> Result<String> {
            Ok(
                String::from_utf8_lossy(dynamic.string(entry).context("bad dynamic string")?)
                    .into_owned(),
            )
        };
        if entry.tag == elf::DT_NEEDED {
            info.needed.push(value()?);
        } else if entry.tag == elf::DT_RUNPATH || entry.tag == elf::DT_RPATH {
            info.runpath.extend(
                value()?
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
        }
    }
    Ok(info)
}

/// One file to put in the image: `dest` is the absolute path inside the image (where the
/// loader will look), `source` the host file to copy (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageFile {
    pub dest: PathBuf,
    pub source: PathBuf,
}

/// The loader and every library the `executables` need, transitively. Library search looks in
/// each object's runpath (with `$ORIGIN`) then in `search_dirs`, all under `sysroot` (`/` for
/// the host). Returns the files sorted by destination.
pub fn library_closure(
    executables: &[PathBuf],
    sysroot: &Path,
    search_dirs: &[&str],
) -> Result<Vec<ImageFile>> {
    let mut out: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    // Objects still to read: host path, and for libraries the path inside the image.
    let mut queue: Vec<(PathBuf, Option<PathBuf>)> =
        executables.iter().map(|e| (e.clone(), None)).collect();
    while let Some((host_path, image_path)) = queue.pop() {
        let data = std::fs::read(&host_path)
            .with_context(|| format!("reading {}", host_path.display()))?;
        let info = inspect(&data).with_context(|| format!("inspecting {}", host_path.display()))?;
        if let Some(interp) = &info.interpreter {
            let dest = PathBuf::from(interp);
            if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(dest) {
                let source = under(sysroot, interp);
                if !source.exists() {
                    bail!(
                        "{}: its loader {interp} is missing on the host",
                        host_path.display()
                    );
                }
                slot.insert(source);
            }
        }
        // $ORIGIN is the directory the object was loaded from.
        let origin = match &image_path {
            None => host_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Some(p) => p
                .parent()
                .map(|p| under(sysroot, &p.to_string_lossy()))
                .unwrap_or_default(),
        };
        for lib in &info.needed {
            if done.contains(lib) {
                continue;
            }
            let (dest, source) = find_library(lib, &info.runpath, &origin, sysroot, search_dirs)
                .with_context(|| {
                    format!("{}: needed library {lib} not found", host_path.display())
                })?;
            done.insert(lib.clone());
            if !out.contains_key(&dest) {
                out.insert(dest.clone(), source.clone());
                queue.push((source, Some(dest)));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(dest, source)| ImageFile { dest, source })
        .collect())
}

fn under(sysroot: &Path, absolute: &str) -> PathBuf {
    sysroot.join(absolute.trim_start_matches('/'))
}

fn find_library(
    name: &str,
    runpath: &[String],
    origin: &Path,
    sysroot: &Path,
    search_dirs: &[&str],
) -> Result<(PathBuf, PathBuf)> {
    if name.contains('/') {
        bail!("library names with a path ({name}) are not supported");
    }
    for dir in runpath {
        if dir.contains("$ORIGIN") || dir.contains("${ORIGIN}") {
            let host_dir = dir
                .replace("${ORIGIN}", &origin.to_string_lossy())
                .replace("$ORIGIN", &origin.to_string_lossy());
            let candidate = Path::new(&host_dir).join(name);
            if is_elf(&candidate) {
                // Keep it beside the binary in the image: /usr/lib/ros is on no default path,
                // so place it where the loader finds it anyway.
                return Ok((Path::new("/usr/lib/x86_64-linux-gnu").join(name), candidate));
            }
        } else {
            let candidate = under(sysroot, dir).join(name);
            if is_elf(&candidate) {
                return Ok((Path::new(dir).join(name), candidate));
            }
        }
    }
    for dir in search_dirs {
        let candidate = under(sysroot, dir).join(name);
        if is_elf(&candidate) {
            return Ok((Path::new(dir).join(name), candidate));
        }
    }
    bail!("searched runpath {runpath:?} and {search_dirs:?}")
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself is a dynamically linked Rust program: it needs libc and the
    /// loader, found from the host's real files.
    #[test]
    fn resolves_the_test_binary_against_the_host() {
        let exe = std::env::current_exe().unwrap();
        let info = inspect(&std::fs::read(&exe).unwrap()).unwrap();
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
        let interp = info.interpreter.clone().expect("dynamically linked");

        let files = library_closure(
            std::slice::from_ref(&exe),
            Path::new("/"),
            DEFAULT_LIBRARY_DIRS,
        )
        .unwrap();
        let dests: Vec<String> = files
            .iter()
            .map(|f| f.dest.to_string_lossy().into_owned())
            .collect();
        assert!(dests.contains(&interp), "{dests:?}");
        assert!(dests.iter().any(|d| d.ends_with("/libc.so.6")), "{dests:?}");
        // Closed: every library's own DT_NEEDED is in the set too.
        for file in &files {
            let info = inspect(&std::fs::read(&file.source).unwrap()).unwrap();
            for needed in info.needed {
                assert!(
                    dests.iter().any(|d| d.ends_with(&format!("/{needed}"))),
                    "{needed} of {:?} missing",
                    file.dest
                );
            }
        }
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        // A fake sysroot with the loader but no libc.
        let exe = std::env::current_exe().unwrap();
        let info = inspect(&std::fs::read(&exe).unwrap()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let interp = info.interpreter.unwrap();
        let loader = under(root.path(), &interp);
        std::fs::create_dir_all(loader.parent().unwrap()).unwrap();
        std::fs::copy(&interp, &loader).unwrap();
        let err = library_closure(&[exe], root.path(), DEFAULT_LIBRARY_DIRS).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("needed library") && text.contains(".so"),
            "{text}"
        );
    }

    #[test]
    fn not_elf_is_an_error() {
        assert!(inspect(b"#!/bin/sh\necho hi\n").is_err());
    }
}
