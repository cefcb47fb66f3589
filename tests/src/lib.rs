//! Shared helpers for the end-to-end tests: the image under test (built once per change of
//! its inputs, or taken from `ROS_E2E_IMAGE`), the accelerator, and booting a node.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use imager::cargo_build::OurBinaries;
use imager::config::ImageConfig;
use imager::image::{BuildInputs, build_kernel_initramfs};
use imager::progress::Progress;
use imager::qemu::{Accel, Vm, VmSpec, accel, free_port};
use sha2::{Digest, Sha256};

pub mod node;
pub mod rosctl;

/// A directory with `kernel`, `initramfs` and `rootfs.sqsh`, used instead of building.
pub const ENV_IMAGE: &str = "ROS_E2E_IMAGE";
/// The same for [`cluster_image`] (an image with the cluster role, e.g. `_out/image`).
pub const ENV_CLUSTER_IMAGE: &str = "ROS_E2E_CLUSTER_IMAGE";
/// `test` builds the images from the test build's dev-profile binaries (debug info stripped)
/// instead of a release build: `scripts/test` does, to spare CI the release build;
/// `scripts/e2e` and `scripts/up` boot release binaries.
pub const ENV_BINARIES: &str = "ROS_E2E_BINARIES";

#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Image {
    fn in_dir(dir: &Path) -> Result<Self> {
        let image = Self {
            kernel: dir.join("kernel"),
            initramfs: dir.join("initramfs"),
            rootfs: dir.join("rootfs.sqsh"),
        };
        for path in [&image.kernel, &image.initramfs, &image.rootfs] {
            if !path.is_file() {
                bail!("image dir {}: missing {}", dir.display(), path.display());
            }
        }
        Ok(image)
    }
}

pub fn workspace() -> PathBuf {
    imager::cargo_build::workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("workspace root")
}

/// Scratch space shared by the e2e tests of one checkout.
pub fn scratch() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("ros-e2e")
}

/// The image to boot: `$ROS_E2E_IMAGE`, or one built from this checkout (release binaries,
/// static init, Debian's cloud kernel). Tests running in parallel build it once: the build
/// holds a lock and is skipped when its inputs have not changed.
pub fn image() -> Result<Image> {
    built_image(false)
}

/// [`image`] with the cluster role (`/usr/bin/cluster`): what `rosctl cluster create` boots
/// to run Kubernetes. Built beside it from the same release build (`$ROS_E2E_CLUSTER_IMAGE`
/// instead, when set).
pub fn cluster_image() -> Result<Image> {
    built_image(true)
}

fn built_image(with_cluster: bool) -> Result<Image> {
    let env = if with_cluster {
        ENV_CLUSTER_IMAGE
    } else {
        ENV_IMAGE
    };
    if let Some(dir) = std::env::var_os(env) {
        return Image::in_dir(Path::new(&dir)).with_context(|| format!("${env}"));
    }
    let scratch = scratch();
    std::fs::create_dir_all(&scratch)?;
    let lock = File::create(scratch.join(".image.lock"))?;
    lock.lock().context("locking the e2e image build")?;

    let workspace = workspace();
    let log = |line: &str| eprintln!("e2e: {line}");
    let ours = our_binaries(&workspace, &scratch, &log)?;
    let kernel = imager::fetch::cached_or_fetch(&workspace.join("_out/kernel"), &log)?;
    let config = ImageConfig::default();
    let inputs = BuildInputs {
        kernel,
        init: ours.init,
        machined: ours.machined,
        cluster: if with_cluster { ours.cluster } else { None },
        config,
        embedded_config: None,
        ca_bundle: imager::rootfs::CA_BUNDLE.into(),
        epoch: imager::epoch::source_date_epoch()?,
    };
    let out = scratch.join(if with_cluster {
        "cluster-image"
    } else {
        "image"
    });
    let key = input_key(&inputs)?;
    let stamp = out.join("inputs.sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str())
        && let Ok(image) = Image::in_dir(&out)
    {
        return Ok(image);
    }
    log(&format!("building the image in {}", out.display()));
    let built = build_kernel_initramfs(&inputs, &out, &Progress::new())?;
    std::fs::write(&stamp, &key)?;
    eprint!("{}", built.report);
    Image::in_dir(&out)
}

/// Whether [`ENV_BINARIES`] asks for the test build's binaries.
fn test_binaries() -> Result<bool> {
    match std::env::var(ENV_BINARIES).as_deref() {
        Err(_) | Ok("release") => Ok(false),
        Ok("test") => Ok(true),
        Ok(other) => bail!("${ENV_BINARIES}={other}: expected `test` or `release`"),
    }
}

/// The binaries the images hold. Release: one invocation builds machined, cluster and rosctl
/// together (the tests drive nodes with that rosctl), so shared dependencies are compiled
/// once, with one feature set, whichever image is asked for first. Test build: the
/// dev-profile binaries already built for the integration tests, without debug info, and a
/// dev-profile static init.
fn our_binaries(workspace: &Path, scratch: &Path, log: &dyn Fn(&str)) -> Result<OurBinaries> {
    if !test_binaries()? {
        return imager::cargo_build::build(workspace, true, log);
    }
    let debug = imager::cargo_build::debug_dir(workspace);
    let stripped = scratch.join("test-binaries");
    let ours = |name: &str| -> Result<PathBuf> {
        let bin = debug.join(name);
        if !bin.is_file() {
            bail!(
                "{} is missing (${ENV_BINARIES}=test takes the test build's binaries: run `cargo nextest run --workspace --no-run` first)",
                bin.display()
            );
        }
        imager::cargo_build::strip_debug_copy(&bin, &stripped)
    };
    Ok(OurBinaries {
        init: imager::cargo_build::build_static_init(workspace, false, log)?,
        machined: ours("machined")?,
        cluster: Some(ours("cluster")?),
    })
}

/// The `rosctl` built beside the image's binaries by [`image`] (release, or the test build's
/// with [`ENV_BINARIES`]`=test`).
pub fn rosctl_bin() -> Result<PathBuf> {
    let workspace = workspace();
    let bin = if test_binaries()? {
        imager::cargo_build::debug_dir(&workspace)
    } else {
        imager::cargo_build::release_dir(&workspace)
    }
    .join("rosctl");
    if !bin.is_file() {
        bail!(
            "{} is missing (with ${ENV_IMAGE} set nothing is built: run `cargo build --release -p machined -p rosctl`)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The raw disk image and the ISO made from `image`, rebuilt when the initramfs is newer.
pub struct DiskImages {
    pub raw: PathBuf,
    pub iso: PathBuf,
}

pub fn disk_images(image: &Image) -> Result<DiskImages> {
    use imager::disk::{iso, raw};
    let dir = scratch().join("disks");
    std::fs::create_dir_all(&dir)?;
    let lock = File::create(scratch().join(".disks.lock"))?;
    lock.lock().context("locking the e2e disk build")?;
    let images = DiskImages {
        raw: dir.join("ros.raw"),
        iso: dir.join("ros.iso"),
    };
    let source_time = std::fs::metadata(&image.initramfs)?.modified()?;
    let fresh = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= source_time)
    };
    let epoch = imager::epoch::source_date_epoch()?;
    let work = dir.join("work");
    if !fresh(&images.raw) {
        let inputs = raw::RawInputs {
            kernel: &image.kernel,
            initramfs: &image.initramfs,
            disk_size: raw::DEFAULT_DISK_SIZE,
            slot_size: raw::SLOT_SIZE,
            cmdline: imager::disk::grub::DISK_CMDLINE,
            epoch,
        };
        raw::build(&inputs, &images.raw, &work)?;
    }
    if !fresh(&images.iso) {
        iso::build(
            &image.kernel,
            &image.initramfs,
            imager::disk::grub::DISK_CMDLINE,
            epoch,
            &images.iso,
            &work,
        )?;
    }
    Ok(images)
}

/// A digest of everything the image is made from (binaries by content).
fn input_key(inputs: &BuildInputs) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut files = vec![
        inputs.init.clone(),
        inputs.machined.clone(),
        inputs.kernel.vmlinuz.clone(),
    ];
    files.extend(inputs.cluster.clone());
    for binary in &inputs.config.binaries {
        if binary.path.is_file() {
            files.push(binary.path.clone());
        }
    }
    for path in files {
        hasher.update(path.to_string_lossy().as_bytes());
        let mut file = File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    hasher.update(
        format!(
            "{:?} {} {} {}",
            inputs.config,
            inputs.epoch,
            env!("CARGO_PKG_VERSION"),
            // The code that builds the image (tests/build.rs).
            env!("ROS_IMAGER_SOURCES")
        )
        .as_bytes(),
    );
    Ok(format!("{:x}", hasher.finalize()))
}

/// KVM when a probe boot works here, else TCG; probed once per checkout.
pub fn accel(image: &Image) -> Accel {
    accel::detect(&image.kernel, Some(&scratch().join("accel")))
}

/// How long a boot phase may take: generous under TCG on two cores, bounded either way.
pub fn phase_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(60),
        Accel::Tcg => Duration::from_secs(180),
    }
}

/// Boots one node with user networking; the machine API is forwarded from the returned port.
pub fn boot(image: &Image, name: &str, state_dir: &Path) -> Result<(Vm, u16)> {
    let accel = accel(image);
    let port = free_port()?;
    let spec = VmSpec::single(
        name,
        &image.kernel,
        &image.initramfs,
        accel,
        port,
        state_dir,
    );
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    Ok((Vm::start(spec)?, port))
}

/// Boots `boot` (a disk or ISO) as a node named `name`.
pub fn boot_from(
    image: &Image,
    name: &str,
    boot: imager::qemu::BootSource,
    state_dir: &Path,
) -> Result<Vm> {
    let accel = accel(image);
    let mut spec = VmSpec::single(
        name,
        &image.kernel,
        &image.initramfs,
        accel,
        free_port()?,
        state_dir,
    );
    spec.boot = boot;
    eprintln!(
        "e2e: booting {name} under {} (console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    Vm::start(spec)
}

/// A short state dir under /tmp (QMP socket paths are limited to 107 bytes).
pub fn state_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ros-e2e-{name}-"))
        .tempdir_in("/tmp")
        .expect("temp dir in /tmp")
}
