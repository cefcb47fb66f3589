//! `rosctl cluster create`: plan, configs and PKI, the namespace and bridge, detached VMs,
//! apply-config over each node's forwarded machine API, bootstrap, kubeconfig.

use super::node_api::{self, Phase};
use super::patches::NodePatches;
use super::plan::{self, Plan, Request, Role};
use super::state::{self, ClusterState};
use super::{configs, image};
use anyhow::{Context as _, Result, bail};
use clap::Args;
use imager::progress::Progress;
use imager::qemu::{Accel, BootSource, Forward, TapNic, VmSpec, accel, netns};
use ros_config::secrets::Secrets;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Cluster name (a lowercase DNS label); also names the network namespace `ros-NAME`
    #[arg(long, default_value = "ros")]
    pub name: String,
    /// Number of control-plane nodes
    #[arg(long, default_value_t = 1)]
    pub controlplanes: u32,
    /// Number of worker nodes (with none, the control plane also runs pods)
    #[arg(long, default_value_t = 0)]
    pub workers: u32,
    /// Memory of each VM, in MiB
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// vCPUs of each VM
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Image directory with `kernel` and `initramfs` (from `imager initramfs --out DIR`)
    /// [default: ./_out/image, built with imager when missing]
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// Where the cluster's files go [default: ~/.ros/clusters/NAME]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The nodes' network on the bridge (inside the namespace; the bridge takes the first
    /// address, nodes the following ones)
    #[arg(long, default_value = "10.5.0.0/24")]
    pub cidr: String,
    /// Stop after the nodes are configured: no bootstrap, no kubeconfig (for images without
    /// the cluster role, and for machine-API-only tests)
    #[arg(long)]
    pub skip_bootstrap: bool,
    /// Patch for every node's config: @file.yaml or inline YAML/JSON, a map (strategic
    /// merge) or a list (RFC 6902 operations); repeatable, applied in order
    #[arg(long = "config-patch", value_name = "PATCH")]
    pub config_patch: Vec<String>,
    /// Patch for the control-plane nodes' configs (after --config-patch)
    #[arg(
        long = "config-patch-control-plane",
        visible_alias = "config-patch-controlplane",
        value_name = "PATCH"
    )]
    pub config_patch_control_plane: Vec<String>,
    /// Patch for the workers' configs (after --config-patch)
    #[arg(long = "config-patch-worker", value_name = "PATCH")]
    pub config_patch_worker: Vec<String>,
    /// Seconds each phase (boot, apply, bootstrap) may take per node
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

pub fn run(args: CreateArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => plan::default_state_dir(&args.name)?,
    };
    if args.memory < 512 {
        bail!("--memory {}: at least 512 MiB", args.memory);
    }
    if args.cpus == 0 {
        bail!("--cpus: at least 1");
    }
    if ClusterState::exists(&state_dir) {
        bail!(
            "a cluster exists in {} already: remove it with `rosctl cluster destroy {}`",
            state_dir.display(),
            super::select_flag(&args.name, &state_dir)
        );
    }
    let patches = NodePatches::load(
        &args.config_patch,
        &args.config_patch_control_plane,
        &args.config_patch_worker,
    )?;
    let plan = plan::plan(
        &Request {
            name: args.name.clone(),
            controlplanes: args.controlplanes,
            workers: args.workers,
            cidr: args.cidr.clone(),
            state_dir: state_dir.clone(),
        },
        imager::qemu::free_port,
    )?;
    if netns::exists(&plan.netns) {
        bail!(
            "network namespace {} exists already: another cluster named {:?} runs (see `rosctl cluster show --name {}`), or remove it with `ip netns delete {}`",
            plan.netns,
            plan.name,
            plan.name,
            plan.netns
        );
    }

    // Configs (with the user's patches) before the image, which may take minutes to build.
    let built = configs::build(&plan, Secrets::generate()?, &patches)?;
    let progress = Progress::new();
    let image = image::resolve(args.image.as_deref(), &progress)?;
    let accel = accel::detect(
        &image.kernel,
        state_dir.parent().map(|p| p.join(".accel")).as_deref(),
    );

    let step = progress.step("writing configs and PKI");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("--state-dir {}", state_dir.display()))?;
    for (node, cfg) in plan.nodes.iter().zip(&built.nodes) {
        std::fs::create_dir_all(&node.dir)?;
        let path = node.dir.join(state::NODE_CONFIG);
        ros_config::atomic_write_private(&path, cfg.to_yaml().as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    let rosconfig_path = state_dir.join(state::ROSCONFIG);
    built
        .rosconfig
        .save(&rosconfig_path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", rosconfig_path.display()))?;
    // Saved before anything runs, so `destroy` can clean up a create that fails half-way.
    let cluster = ClusterState::new(&plan, &image.dir, accel.as_str(), args.memory, args.cpus);
    cluster.save(&state_dir)?;
    progress.done(&step, format!("configs and PKI in {}", state_dir.display()));

    let bootstrapped = match boot_and_configure(&plan, &cluster, &built, accel, &progress, &args) {
        Ok(b) => b,
        Err(e) => {
            for node in &plan.nodes {
                progress.note(format!(
                    "--- {} console tail ({}) ---\n{}",
                    node.name,
                    state::console_log(node).display(),
                    imager::qemu::console::tail(
                        &imager::qemu::console::read(&state::console_log(node)),
                        25
                    )
                ));
            }
            return Err(e.context(format!(
            "the cluster is left running for inspection; remove it with `rosctl cluster destroy {}`",
            super::select_flag(&plan.name, &state_dir)
        )));
        }
    };
    progress.note(format!(
        "cluster {} is up after {:.0} s ({})",
        plan.name,
        started.elapsed().as_secs_f64(),
        accel.as_str()
    ));
    print_usage(&plan, &state_dir, bootstrapped);
    Ok(ExitCode::SUCCESS)
}

/// Boots every node, configures them, bootstraps. Returns whether Kubernetes is up.
fn boot_and_configure(
    plan: &Plan,
    cluster: &ClusterState,
    built: &configs::ClusterConfigs,
    accel: Accel,
    progress: &Progress,
    args: &CreateArgs,
) -> Result<bool> {
    let step = progress.step(format!(
        "network namespace {} with bridge {}",
        plan.netns,
        plan.network.bridge_cidr()
    ));
    netns::create(&plan.netns, &plan.network.bridge_cidr())?;
    progress.done(&step, format!("network namespace {} ready", plan.netns));

    let image = &cluster.image;
    for node in &plan.nodes {
        let step = progress.step(format!("starting {} under {}", node.name, accel.as_str()));
        let mut forwards = vec![Forward {
            host: node.api_port,
            guest: plan::MACHINE_API_PORT,
        }];
        if let Some(port) = node.kubernetes_port {
            forwards.push(Forward {
                host: port,
                guest: plan::KUBERNETES_API_PORT,
            });
        }
        let spec = VmSpec {
            name: node.hostname.clone(),
            boot: BootSource::Direct {
                kernel: image.join("kernel"),
                initramfs: image.join("initramfs"),
            },
            accel,
            memory_mib: args.memory,
            cpus: args.cpus,
            cmdline_extra: Vec::new(),
            machine_config: None,
            forwards,
            taps: vec![TapNic {
                netns: plan.netns.clone(),
                ifname: node.tap.clone(),
                mac: node.mac.clone(),
            }],
            disks: Vec::new(),
            state_dir: node.dir.clone(),
        };
        debug_assert_eq!(spec.qmp_path(), state::qmp_socket(node));
        let pid = imager::qemu::start_detached(&spec)?;
        progress.done(
            &step,
            format!(
                "{} started (QEMU PID {pid}, machine API on {})",
                node.name,
                node.api_target()
            ),
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.wait_timeout);
    runtime.block_on(async {
        // Control planes first: workers get their API certificate signed by one.
        for role in [Role::Controlplane, Role::Worker] {
            let mut tasks = Vec::new();
            for (node, cfg) in plan.nodes.iter().zip(&built.nodes) {
                if node.role != role {
                    continue;
                }
                let bar = progress.step(format!("{}: booting", node.name));
                let node = node.clone();
                let yaml = cfg.to_yaml();
                let rosconfig = built.rosconfig.clone();
                let name = plan.name.clone();
                let progress = progress.clone();
                tasks.push(tokio::spawn(async move {
                    let report = |phase: Phase| bar.set_message(format!("{}: {phase}", node.name));
                    let t0 = Instant::now();
                    node_api::configure(&node, &yaml, &rosconfig, &name, timeout, report).await?;
                    progress.done(
                        &bar,
                        format!(
                            "{} configured ({} on the bridge) after {:.0} s",
                            node.name,
                            node.address,
                            t0.elapsed().as_secs_f64()
                        ),
                    );
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await.context("a node task panicked")??;
            }
        }

        let first = &plan.nodes[0];
        if args.skip_bootstrap {
            progress.note("--skip-bootstrap: Kubernetes is not started");
            return Ok(false);
        }
        let step = progress.step(format!("{}: bootstrap", first.name));
        let conn = node_api::Conn::new(&built.rosconfig, &plan.name, &first.api_target())?;
        match node_api::bootstrap(&conn).await? {
            node_api::Bootstrap::Done(message) => {
                progress.done(&step, format!("{}: bootstrap: {message}", first.name))
            }
            node_api::Bootstrap::Unavailable(message) => {
                progress.done(
                    &step,
                    format!(
                        "{}: bootstrap is not available in this image ({message}); the machine API works, Kubernetes is not started",
                        first.name
                    ),
                );
                return Ok(false);
            }
        }
        let step = progress.step(format!("{}: waiting for the kubeconfig", first.name));
        let kubeconfig = node_api::wait_kubeconfig(&conn, first, timeout).await?;
        let port = first
            .kubernetes_port
            .context("the first node is a control plane with a forwarded Kubernetes port")?;
        let rewritten = node_api::point_kubeconfig_at(&kubeconfig, &format!("https://127.0.0.1:{port}"))?;
        let path = plan.state_dir.join(state::KUBECONFIG);
        ros_config::atomic_write_private(&path, rewritten.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        progress.done(&step, format!("kubeconfig written to {}", path.display()));
        let step = progress.step("waiting for the Kubernetes API");
        node_api::wait_kubernetes(first, port, &rewritten, timeout).await?;
        progress.done(&step, format!("Kubernetes API answers on 127.0.0.1:{port}"));
        Ok(true)
    })
}

fn print_usage(plan: &Plan, state_dir: &std::path::Path, kubernetes: bool) {
    let rosconfig = state_dir.join(state::ROSCONFIG);
    let first = &plan.nodes[0];
    let rosctl = format!("rosctl --rosconfig {}", rosconfig.display());
    let count = plan.nodes.len();
    let plural = if count == 1 { "" } else { "s" };
    println!("Cluster {} ({count} node{plural}):", plan.name);
    for n in &plan.nodes {
        println!(
            "  {:<16} {:<12} {:<12} machine API 127.0.0.1:{}{}",
            n.name,
            n.role.as_str(),
            n.address,
            n.api_port,
            n.kubernetes_port
                .map(|p| format!(", Kubernetes API 127.0.0.1:{p}"))
                .unwrap_or_default()
        );
    }
    println!();
    println!("  {rosctl} -n {} version", first.api_target());
    if let Some(other) = plan.nodes.get(1) {
        println!(
            "  {rosctl} -e {} -n {} version     # through the first node, over the bridge",
            first.api_target(),
            other.address
        );
    }
    if kubernetes {
        println!(
            "  KUBECONFIG={} kubectl get nodes",
            state_dir.join(state::KUBECONFIG).display()
        );
        println!(
            "  {rosctl} -n {} health --kubeconfig {}",
            first.api_target(),
            state_dir.join(state::KUBECONFIG).display()
        );
    }
    let select = super::select_flag(&plan.name, state_dir);
    println!("  rosctl cluster show {select}");
    println!("  rosctl cluster destroy {select}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        create: CreateArgs,
    }

    #[test]
    fn patch_flags_repeat_and_take_the_talos_spellings() {
        let cli = Cli::try_parse_from([
            "create",
            "--config-patch",
            "@a.yaml",
            "--config-patch",
            "machine: {}",
            "--config-patch-controlplane",
            "@cp.yaml",
            "--config-patch-control-plane",
            "[]",
            "--config-patch-worker",
            "@w.yaml",
        ])
        .unwrap();
        let a = cli.create;
        assert_eq!(a.config_patch, ["@a.yaml", "machine: {}"]);
        assert_eq!(a.config_patch_control_plane, ["@cp.yaml", "[]"]);
        assert_eq!(a.config_patch_worker, ["@w.yaml"]);
    }

    #[test]
    fn a_bad_patch_stops_create_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from([
            "create",
            "--name",
            "unit-patch",
            "--state-dir",
            &dir.path().join("c").to_string_lossy(),
            "--config-patch-worker",
            "machine:\n  noSuchField: 1\n",
            "--workers",
            "1",
        ])
        .unwrap();
        let e = format!("{:#}", run(cli.create).unwrap_err());
        assert!(e.starts_with("--config-patch-worker: "), "{e}");
        assert!(e.contains("noSuchField"), "{e}");
        // Nothing was written: no cluster to destroy.
        assert!(!dir.path().join("c").exists());
    }
}
