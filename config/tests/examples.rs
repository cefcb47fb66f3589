//! The example configs in `configs/` are valid, and every file in `configs/invalid/` gives
//! exactly the errors written in its `.expected` file.

use std::fs;
use std::path::{Path, PathBuf};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_is_valid_even_strictly() {
    let files = yaml_files(&configs_dir());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "single-node.yaml",
        "ha-controlplane.yaml",
        "ha-worker.yaml",
        "static-network.yaml",
        "dhcp.yaml",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "configs/{want} is missing"
        );
    }
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let checked =
            ros_config::check_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            checked.report.errors.is_empty() && checked.report.warnings.is_empty(),
            "{} should be valid, got:\n{:?}",
            f.display(),
            checked.report
        );
        // And it round-trips: what we write reads back the same.
        let cfg = checked.config.unwrap();
        assert_eq!(ros_config::parse(&cfg.to_yaml()).unwrap(), cfg);
    }
}

#[test]
fn every_invalid_example_gives_its_expected_errors() {
    let dir = configs_dir().join("invalid");
    let files = yaml_files(&dir);
    assert!(
        files.len() >= 10,
        "expected the invalid examples in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for f in &files {
        let expected_path = f.with_extension("expected");
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let text = fs::read_to_string(f).unwrap();
        match ros_config::parse(&text) {
            Ok(_) => failures.push(format!("{}: accepted, but must fail", f.display())),
            Err(e) => {
                let got = e.to_string();
                if got.trim_end() != expected.trim_end() {
                    failures.push(format!(
                        "{}:\n--- expected\n{}\n--- got\n{}",
                        f.display(),
                        expected.trim_end(),
                        got
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn example_patches_are_strategic_merge_patches() {
    let files = yaml_files(&configs_dir().join("patches"));
    assert!(!files.is_empty());
    for f in files {
        let arg = format!("@{}", f.display());
        let p = ros_config::patch::Patch::load(&arg, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            p.kind,
            ros_config::patch::PatchKind::StrategicMerge(_)
        ));
    }
}
