//! Read-only node information, power and lifecycle commands.

use super::output::{human, mib, print, table};
use super::{Targets, fanout};
use clap::Args;
use ros_api::machine::*;
use std::io::Write;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Only the client version.
    #[arg(long)]
    pub client: bool,
    /// Connect without a client certificate (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,
}

#[derive(Args, Debug)]
pub struct RebootArgs {
    /// Wait until each node is back and answering.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Stop services cleanly before wiping.
    #[arg(long)]
    pub graceful: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Replay the last N events first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub tail: u32,
}

pub async fn version(t: &Targets, a: &VersionArgs) -> anyhow::Result<bool> {
    println!("Client: rosctl {}", env!("CARGO_PKG_VERSION"));
    if a.client {
        return Ok(false);
    }
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.version(VersionRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&["NODE", "VERSION", "ARCH", "MODE", "PLATFORM"]);
    for (_, r) in ok {
        tb.add_row(vec![r.node, r.version, r.arch, r.mode, r.platform]);
    }
    print(tb);
    Ok(failed)
}

pub enum Power {
    Reboot,
    Shutdown,
}

pub async fn power(t: &Targets, p: Power) -> anyhow::Result<bool> {
    let reboot = matches!(p, Power::Reboot);
    let results = fanout::each(&t.nodes, &t.creds, move |mut c| async move {
        let r = if reboot {
            c.reboot(RebootRequest {}).await
        } else {
            c.shutdown(ShutdownRequest {}).await
        };
        r.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    for (_, r) in ok {
        println!("{}: {}", r.node, r.message);
    }
    Ok(failed)
}

pub async fn reboot(t: &Targets, a: &RebootArgs) -> anyhow::Result<bool> {
    let mut failed = power(t, Power::Reboot).await?;
    if !a.wait {
        return Ok(failed);
    }
    for node in &t.nodes {
        match wait_until_up(node, &t.creds).await {
            Ok(mode) => println!("{node}: back ({mode})"),
            Err(e) => {
                failed = true;
                eprintln!("node {node}: {e:#}");
            }
        }
    }
    Ok(failed)
}

/// Polls the node until it answers with a settled stage (10 minutes at most).
async fn wait_until_up(node: &str, creds: &super::Dialer) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    // Give the node time to start going down before polling.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut last = String::from("no answer");
    while std::time::Instant::now() < deadline {
        match creds.connect(node).await {
            Ok(mut c) => match c
                .get_resource(GetResourceRequest {
                    r#type: "MachineStatus".into(),
                    id: "machine".into(),
                })
                .await
            {
                Ok(r) => {
                    let spec = r
                        .into_inner()
                        .resource
                        .map(|r| r.spec_json)
                        .unwrap_or_default();
                    let v: serde_json::Value = serde_json::from_str(&spec).unwrap_or_default();
                    let stage = v["stage"].as_str().unwrap_or_default().to_string();
                    if stage == "configured" || stage == "maintenance" {
                        return Ok(stage);
                    }
                    last = format!("stage {stage}");
                }
                Err(s) => last = fanout::status_error(s).to_string(),
            },
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    anyhow::bail!("did not come back within 10 minutes (last: {last})")
}

pub async fn reset(t: &Targets, a: &ResetArgs) -> anyhow::Result<bool> {
    let graceful = a.graceful;
    let results = fanout::each(&t.nodes, &t.creds, move |mut c| async move {
        c.reset(ResetRequest { graceful })
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    for (_, r) in ok {
        println!("{}: {}", r.node, r.message);
    }
    Ok(failed)
}

pub async fn hostname(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.hostname(HostnameRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&["NODE", "HOSTNAME"]);
    for (_, r) in ok {
        tb.add_row(vec![r.node, r.hostname]);
    }
    print(tb);
    Ok(failed)
}

pub async fn memory(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.memory(MemoryRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE",
        "TOTAL MiB",
        "USED MiB",
        "FREE MiB",
        "AVAILABLE MiB",
        "BUFFERS MiB",
        "CACHE MiB",
    ]);
    for (_, r) in ok {
        let used = r
            .total_bytes
            .saturating_sub(r.free_bytes + r.buffers_bytes + r.cached_bytes);
        tb.add_row(vec![
            r.node,
            mib(r.total_bytes),
            mib(used),
            mib(r.free_bytes),
            mib(r.available_bytes),
            mib(r.buffers_bytes),
            mib(r.cached_bytes),
        ]);
    }
    print(tb);
    Ok(failed)
}

pub async fn loadavg(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.load_avg(LoadAvgRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&["NODE", "LOAD1", "LOAD5", "LOAD15"]);
    for (_, r) in ok {
        tb.add_row(vec![
            r.node,
            format!("{:.2}", r.load1),
            format!("{:.2}", r.load5),
            format!("{:.2}", r.load15),
        ]);
    }
    print(tb);
    Ok(failed)
}

pub async fn processes(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.processes(ProcessesRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE", "PID", "PPID", "STATE", "THREADS", "CPU-TIME", "RES", "COMMAND",
    ]);
    for (_, r) in ok {
        for p in r.processes {
            let cmd = if p.args.is_empty() { p.command } else { p.args };
            tb.add_row(vec![
                r.node.clone(),
                p.pid.to_string(),
                p.ppid.to_string(),
                p.state,
                p.threads.to_string(),
                format!("{:.2}", p.cpu_seconds),
                human(p.resident_bytes),
                super::output::ellipsize(&cmd, 60),
            ]);
        }
    }
    print(tb);
    Ok(failed)
}

pub async fn mounts(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.mounts(MountsRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE",
        "FILESYSTEM",
        "SIZE",
        "AVAILABLE",
        "TYPE",
        "MOUNTED ON",
    ]);
    for (_, r) in ok {
        for m in r.mounts {
            tb.add_row(vec![
                r.node.clone(),
                m.source,
                human(m.size_bytes),
                human(m.available_bytes),
                m.fstype,
                m.target,
            ]);
        }
    }
    print(tb);
    Ok(failed)
}

pub async fn disks(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.disks(DisksRequest {}).await.map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&["NODE", "DEV", "SIZE", "MODEL", "SERIAL", "ROTATIONAL", "RO"]);
    for (_, r) in ok {
        for d in r.disks {
            tb.add_row(vec![
                r.node.clone(),
                format!("/dev/{}", d.name),
                human(d.size_bytes),
                d.model,
                d.serial,
                d.rotational.to_string(),
                d.read_only.to_string(),
            ]);
        }
    }
    print(tb);
    Ok(failed)
}

pub async fn netdev(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        c.network_device_stats(NetworkDeviceStatsRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE",
        "NAME",
        "RX BYTES",
        "RX PACKETS",
        "RX ERRORS",
        "TX BYTES",
        "TX PACKETS",
        "TX ERRORS",
    ]);
    for (_, r) in ok {
        for d in r.devices {
            tb.add_row(vec![
                r.node.clone(),
                d.name,
                d.rx_bytes.to_string(),
                d.rx_packets.to_string(),
                d.rx_errors.to_string(),
                d.tx_bytes.to_string(),
                d.tx_packets.to_string(),
                d.tx_errors.to_string(),
            ]);
        }
    }
    print(tb);
    Ok(failed)
}

pub async fn time(t: &Targets) -> anyhow::Result<bool> {
    let results = fanout::each(&t.nodes, &t.creds, |mut c| async move {
        Ok(c.time(TimeRequest {}).await?.into_inner())
    })
    .await;
    let (ok, failed) = fanout::split(results);
    let mut tb = table(&[
        "NODE",
        "NODE TIME",
        "SERVERS",
        "SYNCED",
        "SERVER",
        "OFFSET",
        "LAST SYNC",
        "ERROR",
    ]);
    // Empty detail fields mean "not known (yet)".
    let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    for (_, r) in ok {
        tb.add_row(vec![
            r.node,
            r.local_time,
            r.servers.join(","),
            r.synced.to_string(),
            or_dash(r.server),
            or_dash(r.offset),
            or_dash(r.last_sync),
            or_dash(r.error),
        ]);
    }
    print(tb);
    Ok(failed)
}

pub async fn events(t: &Targets, a: &EventsArgs) -> anyhow::Result<bool> {
    let mut set = tokio::task::JoinSet::new();
    println!("{:<16} {:<26} {:<8} MESSAGE", "NODE", "TIME", "KIND");
    for target in t.nodes.clone() {
        let (creds, tail) = (t.creds.clone(), a.tail);
        set.spawn(async move {
            let mut c = creds
                .connect(&target)
                .await
                .map_err(|e| (target.clone(), e))?;
            let mut s = c
                .events(EventsRequest { tail })
                .await
                .map_err(|e| (target.clone(), fanout::status_error(e)))?
                .into_inner();
            loop {
                match s.message().await {
                    Ok(Some(e)) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(
                            out,
                            "{:<16} {:<26} {:<8} {}",
                            e.node,
                            e.time,
                            e.kind,
                            e.message.replace('\n', " | ")
                        );
                        let _ = out.flush();
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err((target.clone(), fanout::status_error(e))),
                }
            }
        });
    }
    let mut failed = false;
    while let Some(done) = set.join_next().await {
        if let Ok(Err((target, e))) = done {
            failed = true;
            eprintln!("node {target}: {e:#}");
        }
    }
    Ok(failed)
}
