//! Read-only system information from /proc and /sys (safe on any host, so dev mode serves the
//! host's real figures).

use ros_api::machine as pb;
use std::path::Path;

fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

pub fn memory(proc: &Path) -> std::io::Result<pb::MemoryReply> {
    let text = read(proc.join("meminfo"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    Ok(pb::MemoryReply {
        node: String::new(),
        total_bytes: field("MemTotal"),
        free_bytes: field("MemFree"),
        available_bytes: field("MemAvailable"),
        buffers_bytes: field("Buffers"),
        cached_bytes: field("Cached"),
        swap_total_bytes: field("SwapTotal"),
        swap_free_bytes: field("SwapFree"),
    })
}

pub fn loadavg(proc: &Path) -> std::io::Result<pb::LoadAvgReply> {
    let text = read(proc.join("loadavg"))?;
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    Ok(pb::LoadAvgReply {
        node: String::new(),
        load1: f.next().unwrap_or(0.0),
        load5: f.next().unwrap_or(0.0),
        load15: f.next().unwrap_or(0.0),
    })
}

pub fn processes(proc: &Path) -> std::io::Result<Vec<pb::Process>> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes may exit while we read; skip those.
        let Ok(stat) = read(entry.path().join("stat")) else {
            continue;
        };
        let Some(p) = parse_stat(pid, &stat, ticks, page) else {
            continue;
        };
        let args = read(entry.path().join("cmdline"))
            .map(|c| {
                c.split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push(pb::Process { args, ..p });
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

/// Parses `/proc/<pid>/stat` (the command is in parentheses and may contain spaces).
fn parse_stat(pid: i32, stat: &str, ticks: f64, page: u64) -> Option<pb::Process> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields after the command, numbered from 3 in proc(5): state=3 ppid=4 utime=14 stime=15
    // num_threads=20 vsize=23 rss=24.
    let at = |n: usize| rest.get(n - 3).copied().unwrap_or("0");
    let num = |n: usize| at(n).parse::<u64>().unwrap_or(0);
    Some(pb::Process {
        pid,
        ppid: at(4).parse().unwrap_or(0),
        state: at(3).to_string(),
        threads: num(20) as u32,
        command,
        args: String::new(),
        resident_bytes: num(24) * page,
        virtual_bytes: num(23),
        cpu_seconds: (num(14) + num(15)) as f64 / ticks,
    })
}

pub fn mounts(proc: &Path) -> std::io::Result<Vec<pb::Mount>> {
    let text = read(proc.join("self/mounts"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            let (size, avail) = nix::sys::statvfs::statvfs(f[1])
                .map(|s| {
                    let frag = s.fragment_size();
                    (s.blocks() * frag, s.blocks_available() * frag)
                })
                .unwrap_or((0, 0));
            Some(pb::Mount {
                source: f[0].to_string(),
                target: f[1].to_string(),
                fstype: f[2].to_string(),
                options: f[3].to_string(),
                size_bytes: size,
                available_bytes: avail,
            })
        })
        .collect())
}

pub fn disks(sys: &Path) -> std::io::Result<Vec<pb::Disk>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys.join("block"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let dir = entry.path();
        let get = |f: &str| {
            read(dir.join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        out.push(pb::Disk {
            size_bytes: get("size").parse::<u64>().unwrap_or(0) * 512,
            model: get("device/model"),
            serial: get("device/serial"),
            rotational: get("queue/rotational") == "1",
            read_only: get("ro") == "1",
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn netdev(proc: &Path) -> std::io::Result<Vec<pb::NetDev>> {
    let text = read(proc.join("net/dev"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if n.len() < 12 {
                return None;
            }
            Some(pb::NetDev {
                name: name.trim().to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_command() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 100 1048576 25 18446744073709551615";
        let p = parse_stat(42, stat, 100.0, 4096).unwrap();
        assert_eq!(p.command, "my (odd) cmd");
        assert_eq!(p.state, "S");
        assert_eq!(p.ppid, 1);
        assert_eq!(p.threads, 3);
        assert_eq!(p.virtual_bytes, 1048576);
        assert_eq!(p.resident_bytes, 25 * 4096);
        assert!((p.cpu_seconds - 2.0).abs() < 1e-9);
    }

    #[test]
    fn meminfo_fields_are_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal:       2048 kB\nMemFree:  1024 kB\nMemAvailable: 1500 kB\n",
        )
        .unwrap();
        let m = memory(dir.path()).unwrap();
        assert_eq!(m.total_bytes, 2048 * 1024);
        assert_eq!(m.available_bytes, 1500 * 1024);
    }

    #[test]
    fn netdev_parses_counters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(
            dir.path().join("net/dev"),
            "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: 100 2 0 0 0 0 0 0 300 4 0 0 0 0 0 0\n",
        )
        .unwrap();
        let d = netdev(dir.path()).unwrap();
        assert_eq!(d[0].name, "eth0");
        assert_eq!(d[0].rx_bytes, 100);
        assert_eq!(d[0].tx_packets, 4);
    }
}
