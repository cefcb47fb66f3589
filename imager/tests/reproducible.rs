//! Building twice from the same inputs gives the same bytes; the contents follow the image
//! contract (contracts.md section 3).

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use imager::config::ImageConfig;
use imager::image::{BuildInputs, BuildOutput, build_kernel_initramfs};
use imager::progress::Progress;
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

fn inputs(init: &Path, epoch: u64) -> BuildInputs {
    let config = ImageConfig {
        binaries: vec![],
        compression_level: 3,
        ..ImageConfig::default()
    };
    BuildInputs {
        kernel: support::kernel(),
        init: init.to_path_buf(),
        // Any dynamically linked program exercises the library closure (coreutils' env).
        machined: "/usr/bin/env".into(),
        cluster: None,
        config,
        embedded_config: None,
        ca_bundle: imager::rootfs::CA_BUNDLE.into(),
        epoch,
    }
}

fn build(inputs: &BuildInputs, out: &Path) -> BuildOutput {
    build_kernel_initramfs(inputs, out, &Progress::new()).unwrap()
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let init = support::tiny_static_elf(dir.path());
    let first = build(&inputs(&init, 1_700_000_000), &dir.path().join("a"));
    let second = build(&inputs(&init, 1_700_000_000), &dir.path().join("b"));
    assert_eq!(
        sha256(&first.rootfs),
        sha256(&second.rootfs),
        "rootfs.sqsh differs"
    );
    assert_eq!(
        sha256(&first.initramfs),
        sha256(&second.initramfs),
        "initramfs differs"
    );
    assert_eq!(sha256(&first.kernel), sha256(&second.kernel));

    // The epoch is an input: changing it must change the output.
    let third = build(&inputs(&init, 1_700_000_001), &dir.path().join("c"));
    assert_ne!(sha256(&first.initramfs), sha256(&third.initramfs));
}

fn list_initramfs(path: &Path) -> Vec<String> {
    let compressed = std::fs::read(path).unwrap();
    let archive = zstd::decode_all(&compressed[..]).expect("initramfs is zstd");
    let mut child = Command::new("cpio")
        .args(["-it", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test needs `cpio` (Debian package cpio)");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &archive));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn list_squashfs(path: &Path) -> Vec<String> {
    let out = Command::new("unsquashfs")
        .args(["-lc", "-d", ""])
        .arg(path)
        .output()
        .expect("this test needs `unsquashfs` (Debian package squashfs-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('/').to_string())
        .collect()
}

#[test]
fn the_image_follows_the_layout_contract() {
    let dir = tempfile::tempdir().unwrap();
    let init = support::tiny_static_elf(dir.path());
    let inputs = inputs(&init, 1_700_000_000);
    let out = build(&inputs, &dir.path().join("img"));
    let kver = &inputs.kernel.version;

    let files = list_initramfs(&out.initramfs);
    for expected in ["init", "dev/console", "etc/ros/modules", "rootfs.sqsh"] {
        assert!(
            files.iter().any(|f| f == expected),
            "initramfs lacks {expected}: {files:?}"
        );
    }
    let dep_path = format!("lib/modules/{kver}/modules.dep");
    assert!(files.contains(&dep_path), "{files:?}");

    // Every file modules.dep names is in the archive, uncompressed.
    let modules = imager::modules::resolve(&inputs.kernel, &inputs.config.modules).unwrap();
    for line in modules.modules_dep().lines() {
        for path in line.replace(':', " ").split_whitespace() {
            assert!(path.ends_with(".ko"), "{path}");
            assert!(
                files.contains(&format!("lib/modules/{kver}/{path}")),
                "{path} missing"
            );
        }
    }
    assert!(modules.load_list.iter().any(|m| m == "virtio_blk"));
    assert!(modules.load_list.iter().any(|m| m == "squashfs"));

    let root = list_squashfs(&out.rootfs);
    for expected in [
        "sbin/init",
        "sbin/machined",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/os-release",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "system/state",
        "etc/ros",
    ] {
        assert!(
            root.iter().any(|f| f == expected),
            "root lacks {expected}: {root:?}"
        );
    }
    for shell in ["bin/sh", "bin/bash", "usr/bin/busybox"] {
        assert!(!root.iter().any(|f| f == shell), "root has {shell}");
    }
    assert!(out.report.get("initramfs").unwrap() > 0);
}

#[test]
fn modules_close_over_their_dependencies() {
    let kernel = support::kernel();
    let wanted: Vec<String> = imager::modules::DEFAULT_MODULES
        .iter()
        .map(|m| m.to_string())
        .collect();
    let set = imager::modules::resolve(&kernel, &wanted).unwrap();
    let names: Vec<&str> = set.modules.iter().map(|m| m.name.as_str()).collect();
    for module in &set.modules {
        for dep in &module.depends {
            assert!(
                names.contains(&dep.as_str()),
                "{} needs {dep}, which is missing",
                module.name
            );
        }
    }
    // Each request is either loaded or built in.
    for name in &wanted {
        assert!(
            set.load_list.contains(name) || set.builtin_requested.contains(name),
            "{name} dropped"
        );
    }
    assert!(
        set.modules.len() > set.load_list.len(),
        "some dependencies were added"
    );
    let err = imager::modules::resolve(&kernel, &["no_such_module_xyz".to_string()]).unwrap_err();
    assert!(err.to_string().contains("no_such_module_xyz"), "{err}");
}
