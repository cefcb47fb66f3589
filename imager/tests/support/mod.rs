//! Fixtures for the imager's integration tests.

use std::path::{Path, PathBuf};

use imager::kernel::KernelTree;

/// The workspace's kernel cache (`_out/kernel`), fetched with apt-get on first use.
pub fn kernel() -> KernelTree {
    let workspace =
        imager::cargo_build::workspace_root(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    imager::fetch::cached_or_fetch(&workspace.join("_out/kernel"), &|line| eprintln!("{line}"))
        .expect("these tests need Debian's cloud kernel: apt-get download must work (imager fetch-kernel)")
}

/// A minimal static x86-64 executable (one PT_LOAD segment running `exit(0)`), written
/// byte by byte so tests have a static "init" without building one.
pub fn tiny_static_elf(dir: &Path) -> PathBuf {
    const BASE: u64 = 0x40_0000;
    let code: [u8; 12] = [
        0xbf, 0, 0, 0, 0, // mov edi, 0
        0xb8, 60, 0, 0, 0, // mov eax, 60 (exit)
        0x0f, 0x05, // syscall
    ];
    let header_len = 64 + 56;
    let total = (header_len + code.len()) as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + header_len as u64).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes()); // ehsize phentsize phnum shentsize shnum shstrndx
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, total, total, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes()); // offset vaddr paddr filesz memsz align
    }
    elf.extend_from_slice(&code);
    let path = dir.join("tiny-init");
    std::fs::write(&path, elf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
