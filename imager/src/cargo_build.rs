//! Builds our own binaries for the image: `init` static (it runs before any library is
//! reachable), `machined` and `cluster` in release mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::elf_deps;
use crate::tools::{self, CARGO};

pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, Clone)]
pub struct OurBinaries {
    pub init: PathBuf,
    pub machined: PathBuf,
    pub cluster: Option<PathBuf>,
}

/// The workspace root: the nearest ancestor of `start` whose Cargo.toml has `[workspace]`.
pub fn workspace_root(start: &Path) -> Result<PathBuf> {
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && text.lines().any(|l| l.trim() == "[workspace]")
        {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "no Cargo workspace above {} (pass --init and --machined instead)",
        start.display()
    )
}

fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// The host-target packages built in release, in ONE cargo invocation. Cargo unifies the
/// features of shared dependencies per invocation, so building these in two invocations
/// with different package sets compiles many dependencies twice; one set, built once,
/// serves the image and the tools beside it. A caller that built exactly this set before
/// (`cargo build --release -p machined -p cluster -p rosctl -p imager` with `--bin` for each) makes this build a
/// no-op. Without the cluster role (the e2e image) the set is `machined` and `rosctl`.
pub fn release_packages(with_cluster: bool) -> &'static [&'static str] {
    if with_cluster {
        &["machined", "cluster", "rosctl", "imager"]
    } else {
        &["machined", "rosctl"]
    }
}

/// Where the release binaries of [`release_packages`] land.
pub fn release_dir(workspace: &Path) -> PathBuf {
    target_dir(workspace).join("release")
}

/// Runs the release builds and returns the paths of the binaries: the static init (its own
/// target, so its dependencies never mix with the others'), then [`release_packages`].
pub fn build(workspace: &Path, with_cluster: bool, log: &dyn Fn(&str)) -> Result<OurBinaries> {
    let init = build_static_init(workspace, true, log)?;

    let packages = release_packages(with_cluster);
    log(&format!(
        "cargo build --release -p {}",
        packages.join(" -p ")
    ));
    let mut rest = cargo(workspace)?;
    rest.args(["build", "--release"]);
    // Only each package's own binary: the cluster package's benchmarks would cost minutes of
    // LTO linking that no image needs.
    for p in packages {
        rest.args(["-p", p, "--bin", p]);
    }
    tools::run(rest).with_context(|| format!("building {}", packages.join(", ")))?;

    let target = target_dir(workspace);
    let binaries = OurBinaries {
        init,
        machined: target.join("release/machined"),
        cluster: with_cluster.then(|| target.join("release/cluster")),
    };
    Ok(binaries)
}

/// Builds `init` statically linked, in release or (`release` false) the dev profile, in its
/// own target so its dependencies never mix with the others', and returns its path.
pub fn build_static_init(workspace: &Path, release: bool, log: &dyn Fn(&str)) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    log(&format!("cargo build ({profile}, static init)"));
    let mut init = cargo(workspace)?;
    init.args(["build", "--target", STATIC_TARGET, "-p", "init"]);
    if release {
        init.arg("--release");
    }
    init.env("RUSTFLAGS", "-C target-feature=+crt-static");
    tools::run(init).context("building init")?;
    let path = target_dir(workspace)
        .join(STATIC_TARGET)
        .join(profile)
        .join("init");
    check_static(&path)?;
    Ok(path)
}

/// Where the dev-profile binaries of the test build land (`cargo nextest run --no-run`
/// builds each package's binaries for its integration tests).
pub fn debug_dir(workspace: &Path) -> PathBuf {
    target_dir(workspace).join("debug")
}

/// A copy of `binary` in `dir` without its debug sections: a dev-profile binary is several
/// times larger than the stripped release one, and the image is unpacked into RAM.
pub fn strip_debug_copy(binary: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = binary
        .file_name()
        .with_context(|| format!("{} has no file name", binary.display()))?;
    let out = dir.join(name);
    let mut cmd = tools::OBJCOPY.command()?;
    cmd.arg("--strip-debug").arg(binary).arg(&out);
    tools::run(cmd).with_context(|| format!("stripping {}", binary.display()))?;
    Ok(out)
}

fn cargo(workspace: &Path) -> Result<Command> {
    let mut cmd = CARGO.command()?;
    cmd.current_dir(workspace);
    // A caller running under cargo (tests) must not leak its own flags into this build.
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    Ok(cmd)
}

/// PID 1 starts before any library path exists, so it must need no loader.
pub fn check_static(init: &Path) -> Result<()> {
    let data = std::fs::read(init).with_context(|| format!("--init {}", init.display()))?;
    let info = elf_deps::inspect(&data).with_context(|| format!("--init {}", init.display()))?;
    if !info.is_static() {
        bail!(
            "--init {}: must be statically linked (it needs {:?} and {:?}); build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release --target {STATIC_TARGET} -p init",
            init.display(),
            info.interpreter,
            info.needed
        );
    }
    Ok(())
}
