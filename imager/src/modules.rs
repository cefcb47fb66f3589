//! Kernel modules for the initramfs: the requested list closed over each module's
//! `depends=` (read from its `.modinfo` ELF section, as depmod does, so no depmod is needed on
//! the host), decompressed to plain `.ko`, with a `modules.dep` written for exactly that set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use object::read::elf::{ElfFile64, SectionHeader};

use crate::kernel::KernelTree;

/// The modules ros loads at boot when the image config does not say otherwise. Names that
/// are built into the kernel are accepted and skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    // virtual hardware
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "qemu_fw_cfg",
    // the ACPI power button, which init reads as an evdev device
    "button",
    "evdev",
    // the root and the writable layers
    "loop",
    "squashfs",
    "overlay",
    "erofs",
    // disks and the EFI partition
    "ext4",
    "xfs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    // container networking
    "af_packet",
    "bridge",
    "br_netfilter",
    "veth",
    "vxlan",
    "nf_conntrack",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    // the `dnat`/`snat` expressions of the service proxy's rules
    "nft_nat",
    "nft_ct",
    "nft_numgen",
    "nft_fib_ipv4",
    "nft_masq",
    "nft_reject_ipv4",
    "nft_compat",
    "ip_tables",
    "iptable_nat",
    "iptable_filter",
    "xt_MASQUERADE",
];

#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    /// Relative to `lib/modules/<kver>`, always ending in `.ko` (decompressed).
    pub rel_path: String,
    pub data: Vec<u8>,
    pub depends: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ModuleSet {
    pub kernel_version: String,
    /// Sorted by `rel_path`.
    pub modules: Vec<Module>,
    /// The requested modules that are real modules, in request order (for `/etc/ros/modules`).
    pub load_list: Vec<String>,
    /// The requested names that are built into the kernel.
    pub builtin_requested: Vec<String>,
    /// The kernel's `modules.builtin`, copied so a loader can tell "built in" from "missing".
    pub modules_builtin: Vec<u8>,
}

/// The kernel treats `-` and `_` in module names as the same character.
pub fn normalise_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

fn module_name_of(file_name: &str) -> Option<(String, Compression)> {
    for (suffix, compression) in [
        (".ko", Compression::None),
        (".ko.xz", Compression::Xz),
        (".ko.zst", Compression::Zstd),
    ] {
        if let Some(stem) = file_name.strip_suffix(suffix) {
            return Some((normalise_name(stem), compression));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
}

struct Found {
    rel_path: String,
    compression: Compression,
}

/// Resolves `wanted` against the kernel's modules.
pub fn resolve(tree: &KernelTree, wanted: &[String]) -> Result<ModuleSet> {
    let available = index(&tree.modules_dir)?;
    let builtin_path = tree.modules_dir.join("modules.builtin");
    let modules_builtin = std::fs::read(&builtin_path)
        .with_context(|| format!("reading {}", builtin_path.display()))?;
    let builtin: BTreeSet<String> = String::from_utf8_lossy(&modules_builtin)
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .filter_map(module_name_of)
        .map(|(name, _)| name)
        .collect();

    let mut load_list = Vec::new();
    let mut builtin_requested = Vec::new();
    let mut queue = Vec::new();
    for name in wanted.iter().map(|n| normalise_name(n)) {
        if name.is_empty() || load_list.contains(&name) || builtin_requested.contains(&name) {
            continue;
        }
        if available.contains_key(&name) {
            load_list.push(name.clone());
            queue.push(name);
        } else if builtin.contains(&name) {
            builtin_requested.push(name);
        } else {
            bail!(
                "module `{name}` is neither a module file under {} nor built into kernel {}",
                tree.modules_dir.display(),
                tree.version
            );
        }
    }

    let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
    while let Some(name) = queue.pop() {
        if loaded.contains_key(&name) {
            continue;
        }
        let found = available.get(&name).with_context(|| {
            format!(
                "module `{name}` is needed but has no file in {}",
                tree.modules_dir.display()
            )
        })?;
        let source = tree.modules_dir.join(&found.rel_path);
        let raw =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let data = decompress(&raw, found.compression)
            .with_context(|| format!("decompressing {}", source.display()))?;
        let depends = modinfo_depends(&data)
            .with_context(|| format!("reading .modinfo of {}", source.display()))?;
        for dep in &depends {
            if !loaded.contains_key(dep) {
                queue.push(dep.clone());
            }
        }
        let rel_path = match found.compression {
            Compression::None => found.rel_path.clone(),
            Compression::Xz => found.rel_path.trim_end_matches(".xz").to_string(),
            Compression::Zstd => found.rel_path.trim_end_matches(".zst").to_string(),
        };
        loaded.insert(
            name.clone(),
            Module {
                name,
                rel_path,
                data,
                depends,
            },
        );
    }

    let mut modules: Vec<Module> = loaded.into_values().collect();
    modules.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(ModuleSet {
        kernel_version: tree.version.clone(),
        modules,
        load_list,
        builtin_requested,
        modules_builtin,
    })
}

/// Every module file under the modules directory, by normalised name. When two files have
/// the same name the first in path order wins, which keeps the choice stable.
fn index(modules_dir: &Path) -> Result<BTreeMap<String, Found>> {
    let mut files = Vec::new();
    walk(modules_dir, modules_dir, &mut files)?;
    files.sort();
    let mut found = BTreeMap::new();
    for rel_path in files {
        let file_name = rel_path.rsplit('/').next().unwrap_or(&rel_path);
        if let Some((name, compression)) = module_name_of(file_name) {
            found.entry(name).or_insert(Found {
                rel_path,
                compression,
            });
        }
    }
    if found.is_empty() {
        bail!("no kernel modules found under {}", modules_dir.display());
    }
    Ok(found)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).expect("walk stays under root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn decompress(raw: &[u8], compression: Compression) -> Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(raw.to_vec()),
        Compression::Zstd => Ok(zstd::decode_all(raw)?),
        Compression::Xz => {
            let mut out = Vec::new();
            lzma_rs::xz_decompress(&mut &raw[..], &mut out)
                .map_err(|e| anyhow::anyhow!("xz: {e}"))?;
            Ok(out)
        }
    }
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>> {
    let file = ElfFile64::<object::Endianness>::parse(elf).context("not a 64-bit ELF object")?;
    let endian = file.endian();
    let sections = file.elf_section_table();
    let (_, section) = sections
        .section_by_name(endian, b".modinfo")
        .context("no .modinfo section (not a kernel module?)")?;
    let data = section
        .data(endian, elf)
        .context(".modinfo data out of bounds")?;
    let mut depends = Vec::new();
    for entry in data.split(|b| *b == 0) {
        if let Some(list) = entry.strip_prefix(b"depends=") {
            for name in String::from_utf8_lossy(list).split(',') {
                let name = normalise_name(name);
                if !name.is_empty() {
                    depends.push(name);
                }
            }
        }
    }
    depends.sort();
    depends.dedup();
    Ok(depends)
}

impl ModuleSet {
    /// `modules.dep` in depmod's format: each module, then all its dependencies in the order
    /// a loader reads backwards (the last one needs nothing else).
    pub fn modules_dep(&self) -> String {
        let by_name: BTreeMap<&str, &Module> =
            self.modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut text = String::new();
        for module in &self.modules {
            let mut order = Vec::new();
            let mut seen = BTreeSet::new();
            seen.insert(module.name.as_str());
            for dep in &module.depends {
                post_order(dep, &by_name, &mut seen, &mut order);
            }
            order.reverse();
            text.push_str(&module.rel_path);
            text.push(':');
            for dep in order {
                text.push(' ');
                text.push_str(&by_name[dep].rel_path);
            }
            text.push('\n');
        }
        text
    }

    /// `/etc/ros/modules`: one name per line.
    pub fn load_list_file(&self) -> String {
        self.load_list.iter().map(|n| format!("{n}\n")).collect()
    }

    pub fn total_size(&self) -> u64 {
        self.modules.iter().map(|m| m.data.len() as u64).sum()
    }
}

fn post_order<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a Module>,
    seen: &mut BTreeSet<&'a str>,
    order: &mut Vec<&'a str>,
) {
    if !seen.insert(name) {
        return;
    }
    if let Some(module) = by_name.get(name) {
        for dep in &module.depends {
            post_order(dep, by_name, seen, order);
        }
        order.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, path: &str, depends: &[&str]) -> Module {
        Module {
            name: name.into(),
            rel_path: path.into(),
            data: vec![],
            depends: depends.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn modules_dep_lists_transitive_dependencies_deepest_last() {
        let set = ModuleSet {
            kernel_version: "k".into(),
            modules: vec![
                module("virtio", "kernel/virtio.ko", &[]),
                module(
                    "virtio_blk",
                    "kernel/virtio_blk.ko",
                    &["virtio", "virtio_ring"],
                ),
                module("virtio_ring", "kernel/virtio_ring.ko", &["virtio"]),
            ],
            load_list: vec!["virtio_blk".into()],
            builtin_requested: vec![],
            modules_builtin: vec![],
        };
        let dep = set.modules_dep();
        assert_eq!(
            dep,
            "kernel/virtio.ko:\n\
             kernel/virtio_blk.ko: kernel/virtio_ring.ko kernel/virtio.ko\n\
             kernel/virtio_ring.ko: kernel/virtio.ko\n"
        );
        assert_eq!(set.load_list_file(), "virtio_blk\n");
    }

    #[test]
    fn names_are_normalised_and_compression_recognised() {
        assert_eq!(
            module_name_of("nf-nat.ko.xz"),
            Some(("nf_nat".into(), Compression::Xz))
        );
        assert_eq!(
            module_name_of("a.ko.zst"),
            Some(("a".into(), Compression::Zstd))
        );
        assert_eq!(module_name_of("modules.dep"), None);
    }

    #[test]
    fn xz_and_zstd_modules_decompress() {
        let payload = b"\x7fELF pretend module".to_vec();
        let zst = zstd::encode_all(&payload[..], 3).unwrap();
        assert_eq!(decompress(&zst, Compression::Zstd).unwrap(), payload);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &payload[..], &mut xz).unwrap();
        assert_eq!(decompress(&xz, Compression::Xz).unwrap(), payload);
    }
}
