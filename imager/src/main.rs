//! `imager`: builds the ros image and boots it in QEMU.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use imager::cargo_build::{self, OurBinaries};
use imager::config::ImageConfig;
use imager::epoch::source_date_epoch;
use imager::image::{BuildInputs, build_kernel_initramfs};
use imager::kernel::KernelTree;
use imager::progress::Progress;
use imager::rootfs::CA_BUNDLE;

#[derive(Parser)]
#[command(
    name = "imager",
    version,
    about = "Builds the ros image and boots it in QEMU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download Debian's cloud kernel (linux-image-cloud-amd64 and the package it depends on).
    FetchKernel {
        /// Where to unpack it.
        #[arg(long, default_value = "_out/kernel")]
        out: PathBuf,
    },
    /// Build `kernel` + `initramfs` (with the root image inside) for QEMU direct boot.
    Initramfs(BuildArgs),
    /// A raw GPT disk image (EFI, BOOT-A/B, STATE, EPHEMERAL) booting by UEFI.
    Raw(DiskArgs),
    /// The raw disk image converted to qcow2.
    Qcow2(DiskArgs),
    /// A hybrid ISO booting by BIOS and UEFI.
    Iso(DiskArgs),
    /// Boot kernel + initramfs in QEMU and follow the serial console until QEMU exits.
    Boot(BootArgs),
}

#[derive(Args)]
struct DiskArgs {
    /// Directory with `kernel` and `initramfs` (from `imager initramfs`).
    #[arg(long, default_value = "_out/image")]
    image: PathBuf,
    /// Output file (default: ros.raw / ros.qcow2 / ros.iso in the image dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Disk size in MiB (raw and qcow2).
    #[arg(long, default_value_t = 4096)]
    size_mib: u64,
    /// Kernel command line for disk boots.
    #[arg(long, default_value = imager::disk::grub::DISK_CMDLINE)]
    cmdline: String,
}

#[derive(Args)]
struct BootArgs {
    /// Directory with `kernel` and `initramfs` (as `imager initramfs` writes them).
    #[arg(long, default_value = "_out/image")]
    image: PathBuf,
    /// A machine config, given to the guest through fw_cfg.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Host port on 127.0.0.1 forwarded to the machine API (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// kvm or tcg (default: probe).
    #[arg(long, value_parser = ["kvm", "tcg"])]
    accel: Option<String>,
    /// Extra kernel command line words.
    #[arg(long = "append")]
    append: Vec<String>,
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Stop (kill QEMU) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long, default_value = "_out/vm")]
    state_dir: PathBuf,
    /// Boot this raw/qcow2 disk image by UEFI instead (writes are discarded).
    #[arg(long, conflicts_with = "iso")]
    disk: Option<PathBuf>,
    /// Boot this ISO instead (BIOS, or UEFI with --uefi).
    #[arg(long)]
    iso: Option<PathBuf>,
    #[arg(long, requires = "iso")]
    uefi: bool,
}

#[derive(Args)]
struct BuildArgs {
    /// Our init (static). Without --init/--machined, they are built with cargo.
    #[arg(long, requires = "machined")]
    init: Option<PathBuf>,
    #[arg(long, requires = "init")]
    machined: Option<PathBuf>,
    /// The cluster binary (built with the others when they are built).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Leave the cluster binary out of a cargo-built image.
    #[arg(long, conflicts_with = "cluster")]
    no_cluster: bool,
    /// A `dpkg-deb -x` of a kernel package (fetched there first when empty).
    #[arg(long, default_value = "_out/kernel", conflicts_with_all = ["kernel", "modules"])]
    kernel_dir: PathBuf,
    /// A kernel image, with --modules.
    #[arg(long, requires = "modules")]
    kernel: Option<PathBuf>,
    /// The kernel's lib/modules/<kver> directory, with --kernel.
    #[arg(long, requires = "kernel")]
    modules: Option<PathBuf>,
    /// Image config (YAML: modules, binaries, compressionLevel).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A machine config to embed in the image.
    #[arg(long)]
    machine_config: Option<PathBuf>,
    #[arg(long, default_value = "_out/image")]
    out: PathBuf,
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::FetchKernel { out } => {
            let tree = imager::fetch::fetch_kernel(&out, &|line| eprintln!("==> {line}"))?;
            println!("kernel {} in {}", tree.version, out.display());
            println!("  {}", tree.vmlinuz.display());
            println!("  {}", tree.modules_dir.display());
            Ok(())
        }
        Command::Initramfs(args) => initramfs(args),
        Command::Boot(args) => boot(args),
        Command::Raw(args) => disk(args, "raw"),
        Command::Qcow2(args) => disk(args, "qcow2"),
        Command::Iso(args) => disk(args, "iso"),
    }
}

fn disk(args: DiskArgs, format: &str) -> Result<()> {
    use imager::disk::{convert, iso, raw};
    let kernel = args.image.join("kernel");
    let initramfs = args.image.join("initramfs");
    for path in [&kernel, &initramfs] {
        if !path.is_file() {
            bail!(
                "--image {}: no {} (run `imager initramfs` first)",
                args.image.display(),
                path.display()
            );
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.image.join(format!("ros.{format}")));
    let work = args.image.join(".work");
    let epoch = source_date_epoch()?;
    let progress = Progress::new();
    let step = progress.step(format!("writing {}", out.display()));
    let raw_inputs = raw::RawInputs {
        kernel: &kernel,
        initramfs: &initramfs,
        disk_size: args.size_mib * 1024 * 1024,
        slot_size: raw::SLOT_SIZE,
        cmdline: &args.cmdline,
        epoch,
    };
    let report = match format {
        "raw" => raw::build(&raw_inputs, &out, &work)?,
        "qcow2" => {
            let raw_path = work.join("ros.raw");
            let report = raw::build(&raw_inputs, &raw_path, &work)?;
            convert::qcow2(&raw_path, &out)?;
            std::fs::remove_file(&raw_path).ok();
            report
        }
        _ => {
            iso::build(&kernel, &initramfs, &args.cmdline, epoch, &out, &work)?;
            imager::report::SizeReport::default()
        }
    };
    progress.done(&step, format!("{} written", out.display()));
    std::fs::remove_dir_all(&work).ok();
    println!(
        "{} ({})",
        out.display(),
        imager::report::human(std::fs::metadata(&out)?.len())
    );
    print!("{report}");
    Ok(())
}

fn boot(args: BootArgs) -> Result<()> {
    use imager::qemu::{Accel, BootSource, Vm, VmSpec, accel, free_port};
    use std::io::Write;
    use std::time::{Duration, Instant};

    let kernel = args.image.join("kernel");
    let initramfs = args.image.join("initramfs");
    let accel = match args.accel.as_deref() {
        Some("kvm") => Accel::Kvm,
        Some(_) => Accel::Tcg,
        None => accel::detect(&kernel, None),
    };
    let port = match args.port {
        Some(port) => port,
        None => free_port()?,
    };
    let mut spec = VmSpec::single("ros", &kernel, &initramfs, accel, port, &args.state_dir);
    if let Some(image) = &args.disk {
        spec.boot = BootSource::UefiDisk {
            image: image.clone(),
            snapshot: true,
        };
    } else if let Some(iso) = &args.iso {
        spec.boot = BootSource::Cdrom {
            iso: iso.clone(),
            uefi: args.uefi,
        };
    }
    spec.memory_mib = args.memory;
    spec.machine_config = args.config.clone();
    spec.cmdline_extra = args.append.clone();
    eprintln!(
        "==> booting under {} (machine API on 127.0.0.1:{port}, console {})",
        accel.as_str(),
        spec.console_path().display()
    );
    let mut vm = Vm::start(spec)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut shown = 0;
    let mut stdout = std::io::stdout();
    loop {
        let text = vm.console();
        if text.len() > shown {
            stdout.write_all(&text.as_bytes()[shown..])?;
            stdout.flush()?;
            shown = text.len();
        }
        if !vm.is_running() {
            eprintln!("==> QEMU exited");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("QEMU still running after {} s; killed", args.timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn initramfs(args: BuildArgs) -> Result<()> {
    let progress = Progress::new();
    let config = match &args.config {
        Some(path) => ImageConfig::load(path)?,
        None => ImageConfig::default(),
    };
    let kernel = match (&args.kernel, &args.modules) {
        (Some(kernel), Some(modules)) => KernelTree::from_parts(kernel, modules)?,
        _ => kernel_tree(&args.kernel_dir, &progress)?,
    };
    let ours = match (&args.init, &args.machined) {
        (Some(init), Some(machined)) => OurBinaries {
            init: init.clone(),
            machined: machined.clone(),
            cluster: args.cluster.clone(),
        },
        _ => {
            let cwd = std::env::current_dir()?;
            let workspace = cargo_build::workspace_root(&cwd)?;
            let step = progress.step("building our binaries (cargo build --release)");
            let built = cargo_build::build(
                &workspace,
                !args.no_cluster && args.cluster.is_none(),
                &|l| step.set_message(l.to_string()),
            )?;
            progress.done(&step, "our binaries built");
            OurBinaries {
                cluster: args.cluster.clone().or(built.cluster.clone()),
                ..built
            }
        }
    };
    let inputs = BuildInputs {
        kernel,
        init: ours.init,
        machined: ours.machined,
        cluster: ours.cluster,
        config,
        embedded_config: args.machine_config.clone(),
        ca_bundle: PathBuf::from(CA_BUNDLE),
        epoch: source_date_epoch()?,
    };
    let output = build_kernel_initramfs(&inputs, &args.out, &progress)?;
    println!("image in {}:", args.out.display());
    println!("  {}", output.kernel.display());
    println!("  {}", output.initramfs.display());
    println!("sizes:");
    print!("{}", output.report);
    Ok(())
}

/// The kernel in `dir`, fetching it first when the directory holds none.
fn kernel_tree(dir: &Path, progress: &Progress) -> Result<KernelTree> {
    if dir.join("lib/modules").is_dir() {
        return KernelTree::open(dir);
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .context("--kernel-dir")?
            .next()
            .is_some()
    {
        bail!(
            "--kernel-dir {}: holds files but no kernel tree",
            dir.display()
        );
    }
    let step = progress.step("fetching the kernel");
    let tree = imager::fetch::fetch_kernel(dir, &|l| step.set_message(l.to_string()))?;
    progress.done(&step, format!("kernel {}", tree.version));
    Ok(tree)
}
