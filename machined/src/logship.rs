//! Log forwarding (`machine.logging.destinations`): every line a supervised service writes, and
//! machined's own, sent as one JSON object per line
//! (`{"msg":..,"service":..,"time":..,"level":..}`) to each `tcp://host:port` or
//! `udp://host:port` endpoint, as Talos does.
//!
//! Never blocks a service: a log line is handed over with `try_send` into bounded queues, and
//! lines that find a queue full (a slow or unreachable destination) are dropped and counted.
//! Each destination has its own task and queue, reconnects with backoff, and follows the
//! running config (destinations come and go without a restart). Each destination's state is
//! the `LogDestinations` resource.

use crate::machine::Machine;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Lines waiting to be fanned out, and per destination waiting to be sent.
const QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Record {
    service: Arc<str>,
    msg: String,
    time: String,
    level: &'static str,
}

/// The handle log buffers send their lines to (cheap to clone).
#[derive(Clone)]
pub struct LogShipper {
    tx: mpsc::Sender<Record>,
    rx: Arc<Mutex<Option<mpsc::Receiver<Record>>>>,
    /// Off while there is no destination, so lines are not even formatted.
    enabled: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl Default for LogShipper {
    fn default() -> Self {
        Self::new()
    }
}

impl LogShipper {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        LogShipper {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            enabled: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands one line over; returns at once whatever the destinations do.
    pub fn send(&self, service: &Arc<str>, line: &str) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let record = Record {
            service: service.clone(),
            msg: line.to_string(),
            time: crate::clock::now_rfc3339(),
            level: level_of(line),
        };
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The level a line states (`ERROR`, `level=warn`, ...), else `info`.
fn level_of(line: &str) -> &'static str {
    for word in line.split_whitespace().take(6) {
        let word = word
            .strip_prefix("level=")
            .unwrap_or(word)
            .trim_matches(|c: char| !c.is_ascii_alphabetic());
        match word.to_ascii_lowercase().as_str() {
            "error" | "err" | "fatal" | "panic" => return "error",
            "warn" | "warning" => return "warn",
            "info" => return "info",
            "debug" => return "debug",
            "trace" => return "trace",
            _ => {}
        }
    }
    "info"
}

/// One forwarded line, newline-terminated.
fn encode(r: &Record) -> Arc<[u8]> {
    let mut text = json!({
        "msg": r.msg,
        "service": &*r.service,
        "time": r.time,
        "level": r.level,
    })
    .to_string();
    text.push('\n');
    Arc::from(text.into_bytes())
}

/// Where a destination sends: the transport and `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub udp: bool,
    pub authority: String,
}

/// `tcp://host:port` or `udp://host:port` (the validator has checked the form).
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?}: expected tcp://host:port or udp://host:port"))?;
    let udp = match scheme {
        "tcp" => false,
        "udp" => true,
        _ => return Err(format!("{s:?}: expected tcp:// or udp://")),
    };
    let authority = rest.trim_end_matches('/').to_string();
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("{s:?}: expected host:port after {scheme}://"));
    }
    Ok(Endpoint { udp, authority })
}

struct Destination {
    queue: mpsc::Sender<Arc<[u8]>>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// Runs the forwarder until machined exits.
pub fn spawn(machine: Arc<Machine>) {
    let Some(mut lines) = machine.logship.rx.lock().expect("logship lock").take() else {
        return; // already running
    };
    tokio::spawn(async move {
        let mut config = machine.watch_config();
        let mut destinations: BTreeMap<String, Destination> = BTreeMap::new();
        loop {
            let wanted: Vec<String> = config
                .borrow_and_update()
                .as_ref()
                .and_then(|r| r.config.machine.logging.as_ref())
                .map(|l| l.destinations.iter().map(|d| d.endpoint.clone()).collect())
                .unwrap_or_default();
            let added = reconcile(&machine, &mut destinations, &wanted);
            machine
                .logship
                .enabled
                .store(!destinations.is_empty(), Ordering::Relaxed);
            // Logged once enabled, so this line is machined's first at each new destination.
            for endpoint in added {
                tracing::info!("forwarding logs to {endpoint}");
            }
            loop {
                tokio::select! {
                    changed = config.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    record = lines.recv() => {
                        let Some(record) = record else { return };
                        let bytes = encode(&record);
                        for d in destinations.values() {
                            if d.queue.try_send(bytes.clone()).is_err() {
                                d.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Starts and stops destinations to match `wanted`; returns the endpoints started.
fn reconcile(
    machine: &Arc<Machine>,
    current: &mut BTreeMap<String, Destination>,
    wanted: &[String],
) -> Vec<String> {
    let mut added = Vec::new();
    current.retain(|endpoint, d| {
        let keep = wanted.contains(endpoint);
        if !keep {
            d.task.abort();
            machine.resources.delete("LogDestinations", endpoint);
            machine
                .events
                .publish("logging", format!("stopped sending logs to {endpoint}"));
        }
        keep
    });
    for endpoint in wanted {
        if current.contains_key(endpoint) {
            continue;
        }
        let target = match parse_endpoint(endpoint) {
            Ok(t) => t,
            Err(e) => {
                publish(machine, endpoint, false, &Stats::default(), Some(&e));
                continue;
            }
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run_destination(
            machine.clone(),
            endpoint.clone(),
            target,
            rx,
            stats.clone(),
        ));
        machine
            .events
            .publish("logging", format!("forwarding logs to {endpoint}"));
        current.insert(endpoint.clone(), Destination { queue, task, stats });
        added.push(endpoint.clone());
    }
    added
}

fn publish(machine: &Machine, endpoint: &str, connected: bool, stats: &Stats, error: Option<&str>) {
    machine.resources.put(
        "LogDestinations",
        endpoint,
        json!({
            "endpoint": endpoint,
            "connected": connected,
            "sent": stats.sent.load(Ordering::Relaxed),
            "dropped": stats.dropped.load(Ordering::Relaxed),
            "droppedBeforeFanOut": machine.logship.dropped.load(Ordering::Relaxed),
            "error": error,
        }),
    );
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
}

impl Conn {
    async fn open(target: &Endpoint) -> Result<Conn, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target.authority)
            .await
            .map_err(|e| format!("resolving {}: {e}", target.authority))?
            .collect();
        let mut last = format!("{}: no address", target.authority);
        for addr in addrs {
            let result = if target.udp {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("addr")
                } else {
                    "[::]:0".parse().expect("addr")
                };
                match tokio::net::UdpSocket::bind(local).await {
                    Ok(sock) => sock.connect(addr).await.map(|()| Conn::Udp(sock)),
                    Err(e) => Err(e),
                }
            } else {
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(r) => r.map(Conn::Tcp),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )),
                }
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    /// One line: the stream's next bytes, or one datagram.
    async fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(line).await,
            Conn::Udp(s) => s.send(line).await.map(|_| ()),
        }
    }
}

async fn run_destination(
    machine: Arc<Machine>,
    endpoint: String,
    target: Endpoint,
    mut lines: mpsc::Receiver<Arc<[u8]>>,
    stats: Arc<Stats>,
) {
    let mut attempt = 0u32;
    // A line that failed to go out is sent first after reconnecting.
    let mut pending: Option<Arc<[u8]>> = None;
    loop {
        let mut conn = match Conn::open(&target).await {
            Ok(c) => c,
            Err(e) => {
                publish(&machine, &endpoint, false, &stats, Some(&e));
                if attempt == 0 {
                    tracing::warn!("log destination {endpoint}: {e}; retrying");
                }
                tokio::time::sleep(crate::controllers::retry_delay(attempt + 3)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        publish(&machine, &endpoint, true, &stats, None);
        loop {
            let line = match pending.take() {
                Some(l) => l,
                None => match lines.recv().await {
                    Some(l) => l,
                    None => return,
                },
            };
            if let Err(e) = conn.send(&line).await {
                pending = Some(line);
                let e = e.to_string();
                publish(&machine, &endpoint, false, &stats, Some(&e));
                tracing::warn!("log destination {endpoint}: {e}; reconnecting");
                tokio::time::sleep(crate::controllers::retry_delay(3)).await;
                break;
            }
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_the_line() {
        assert_eq!(level_of("2026-01-01T00:00:00Z  WARN machined: x"), "warn");
        assert_eq!(level_of("time=1 level=error msg=boom"), "error");
        assert_eq!(level_of("[ERROR] failed"), "error");
        assert_eq!(level_of("just text"), "info");
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("udp://127.0.0.1:5140").unwrap(),
            Endpoint {
                udp: true,
                authority: "127.0.0.1:5140".into()
            }
        );
        assert_eq!(
            parse_endpoint("tcp://[::1]:5140/").unwrap().authority,
            "[::1]:5140"
        );
        assert!(parse_endpoint("http://x:1").is_err());
    }

    #[test]
    fn records_are_json_lines() {
        let r = Record {
            service: Arc::from("cluster-agent"),
            msg: "said \"hi\"".into(),
            time: "2026-01-01T00:00:00Z".into(),
            level: "info",
        };
        let bytes = encode(&r);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["msg"], "said \"hi\"");
        assert_eq!(v["service"], "cluster-agent");
        assert_eq!(v["level"], "info");
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_blocking() {
        let s = LogShipper::new();
        s.enabled.store(true, Ordering::Relaxed);
        let svc: Arc<str> = Arc::from("x");
        for _ in 0..QUEUE + 10 {
            s.send(&svc, "line");
        }
        assert_eq!(s.dropped.load(Ordering::Relaxed), 10);
    }
}
