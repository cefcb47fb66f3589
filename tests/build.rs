//! A fingerprint of the imager's sources, so the e2e harness rebuilds a cached image when the
//! code that builds images changes (its other inputs are the files the image holds).

use std::path::{Path, PathBuf};

fn main() {
    let imager = Path::new(env!("CARGO_MANIFEST_DIR")).join("../imager/src");
    println!("cargo::rerun-if-changed={}", imager.display());
    let mut files = Vec::new();
    collect(&imager, &mut files);
    files.sort();
    // FNV-1a over each file's relative path and bytes: no build dependency needed, and a
    // change anywhere gives another value.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let rel = file.strip_prefix(&imager).unwrap_or(file);
        let bytes = std::fs::read(file).unwrap_or_default();
        for b in rel.to_string_lossy().bytes().chain(bytes) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo::rustc-env=ROS_IMAGER_SOURCES={hash:016x}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
