//! Time sync: polls the configured `machine.time.servers` with SNTP (system/sntp.rs), corrects
//! the clock through the `System` trait (a step for large offsets, a slew for small ones) and
//! publishes the `TimeStatus` resource. The server that answered last is asked first; when it
//! fails the next ones are tried in order. Good samples back the poll interval off from 64 s
//! to 1024 s; when every server fails the next round comes after 2 s doubling to 64 s.

use crate::machine::{Machine, Running};
use crate::system::{ClockAdjustment, sntp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Offsets beyond this are stepped, smaller ones slewed (ntpd's step threshold).
pub const STEP_THRESHOLD_NS: i128 = 128_000_000;
const MIN_POLL: Duration = Duration::from_secs(64);
const MAX_POLL: Duration = Duration::from_secs(1024);
/// How long one server gets to answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many addresses of one server name are tried.
const ADDRESSES_PER_SERVER: usize = 3;

/// The `TimeStatus` resource's spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TimeStatus {
    /// The last poll got a good sample and the clock was corrected by it.
    pub synced: bool,
    /// The configured servers (empty: time sync is off or has no servers).
    pub servers: Vec<String>,
    /// The server of the last good sample.
    pub server: Option<String>,
    /// The last measured offset (how far the clock was behind), e.g. `+1800.004s`.
    pub offset: Option<String>,
    pub offset_seconds: Option<f64>,
    pub delay_seconds: Option<f64>,
    pub stratum: Option<u8>,
    /// `step` or `slew`.
    pub adjustment: Option<String>,
    /// The corrected clock's time at the last good sample (RFC 3339).
    pub last_sync: Option<String>,
    pub next_poll_seconds: Option<u64>,
    /// Why the last poll failed (every server's reason), or why there is no sync.
    pub error: Option<String>,
    /// Servers that failed in the last poll before one answered.
    pub server_errors: Vec<String>,
}

/// The servers the config asks for (none when time sync is disabled or unconfigured).
fn wanted(running: Option<&Running>) -> Vec<String> {
    match running.and_then(|r| r.config.machine.time.as_ref()) {
        Some(time) if !time.disabled => time.servers.clone(),
        _ => vec![],
    }
}

/// Runs time sync, restarting it whenever the configured servers change.
pub fn spawn(machine: Arc<Machine>) {
    tokio::spawn(async move {
        let mut config = machine.watch_config();
        let mut current: Option<(Vec<String>, JoinHandle<()>)> = None;
        loop {
            let servers = wanted(config.borrow_and_update().as_deref());
            if current.as_ref().map(|(s, _)| s) != Some(&servers) {
                if let Some((_, task)) = current.take() {
                    task.abort();
                }
                let task = tokio::spawn(run(machine.clone(), servers.clone()));
                current = Some((servers, task));
            }
            if config.changed().await.is_err() {
                return;
            }
        }
    });
}

fn publish(machine: &Machine, status: &TimeStatus) {
    let spec = serde_json::to_value(status).unwrap_or_default();
    machine.resources.put("TimeStatus", "node", spec);
}

/// A good sample and what was done with it.
struct Synced {
    index: usize,
    server: String,
    sample: sntp::Sample,
    adjustment: ClockAdjustment,
    skipped: Vec<String>,
}

async fn run(machine: Arc<Machine>, servers: Vec<String>) {
    let mut status = TimeStatus {
        servers: servers.clone(),
        ..Default::default()
    };
    if servers.is_empty() {
        status.error = Some("no time servers configured (machine.time.servers)".into());
        publish(&machine, &status);
        return;
    }
    publish(&machine, &status);
    let mut preferred = 0;
    let mut poll = MIN_POLL;
    let mut failures = 0u32;
    loop {
        let wait = match sync_once(&machine, &servers, preferred).await {
            Ok(s) => {
                preferred = s.index;
                failures = 0;
                poll = if s.adjustment.step {
                    MIN_POLL
                } else {
                    (poll * 2).min(MAX_POLL)
                };
                let how = if s.adjustment.step { "step" } else { "slew" };
                if s.adjustment.step || !status.synced {
                    machine.events.publish(
                        "time",
                        format!(
                            "synchronised with {}: clock {how} by {}",
                            s.server,
                            sntp::format_offset(s.sample.offset_ns)
                        ),
                    );
                }
                status = TimeStatus {
                    synced: true,
                    servers: servers.clone(),
                    server: Some(s.server),
                    offset: Some(sntp::format_offset(s.sample.offset_ns)),
                    offset_seconds: Some(s.sample.offset_ns as f64 / 1e9),
                    delay_seconds: Some(s.sample.delay_ns as f64 / 1e9),
                    stratum: Some(s.sample.stratum),
                    adjustment: Some(how.into()),
                    last_sync: Some(crate::clock::rfc3339_from_nanos(machine.system.now_nanos())),
                    next_poll_seconds: Some(poll.as_secs()),
                    error: None,
                    server_errors: s.skipped,
                };
                poll
            }
            Err(errors) => {
                failures += 1;
                let wait = Duration::from_secs((1u64 << failures.min(6)).min(64));
                let error = errors.join("; ");
                if status.error.as_deref() != Some(error.as_str()) {
                    machine
                        .events
                        .publish("time", format!("time sync failed: {error}"));
                }
                tracing::warn!("time sync: {error}");
                status.synced = false;
                status.error = Some(error);
                status.server_errors = errors;
                status.next_poll_seconds = Some(wait.as_secs());
                wait
            }
        };
        publish(&machine, &status);
        tokio::time::sleep(wait).await;
    }
}

/// One round: the servers from `start` on (wrapping) until one gives a good sample, which
/// then corrects the clock. Errs with every server's failure.
async fn sync_once(
    machine: &Arc<Machine>,
    servers: &[String],
    start: usize,
) -> Result<Synced, Vec<String>> {
    let system = machine.system.clone();
    let now = move || system.now_nanos();
    let mut errors = Vec::new();
    for k in 0..servers.len() {
        let index = (start + k) % servers.len();
        let server = &servers[index];
        let sample = match ask(server, &now).await {
            Ok(sample) => sample,
            Err(e) => {
                errors.push(format!("{server}: {e}"));
                continue;
            }
        };
        let adjustment = ClockAdjustment {
            offset_ns: sample.offset_ns,
            step: sample.offset_ns.abs() > STEP_THRESHOLD_NS,
        };
        // A clock that cannot be set is not the server's fault: no point asking the others.
        if let Err(e) = machine.system.adjust_clock(adjustment) {
            errors.push(format!("{server}: correcting the clock: {e}"));
            return Err(errors);
        }
        return Ok(Synced {
            index,
            server: server.clone(),
            sample,
            adjustment,
            skipped: errors,
        });
    }
    Err(errors)
}

/// Resolves `server` (`host`, `host:port`, an IP, `[IPv6]:port`) and queries its addresses
/// until one answers.
async fn ask(server: &str, now: &(dyn Fn() -> i128 + Send + Sync)) -> Result<sntp::Sample, String> {
    let (host, port) = ros_config::syntax::parse_host_port(server, sntp::NTP_PORT)?;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .take(ADDRESSES_PER_SERVER)
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match sntp::query(addr, now, QUERY_TIMEOUT).await {
            Ok(sample) => return Ok(sample),
            Err(e) => {
                last = if addr.to_string() == server {
                    e
                } else {
                    format!("{addr}: {e}")
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_come_from_the_config_unless_disabled() {
        assert!(wanted(None).is_empty());
        let status = TimeStatus {
            servers: vec!["a".into()],
            offset: Some("+1.000s".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["offset"], "+1.000s");
        assert_eq!(json["synced"], false);
        assert!(json["lastSync"].is_null());
    }
}
