//! Store benchmark: the SQLite backend and a real etcd side by side in one run, with ratios.
//! `cargo run --release -p cluster --bin store-bench [-- --quick] [-o json]`. Needs `etcd` on PATH
//! (Debian `etcd-server`) or in `$ETCD_BIN`. Prints figures; asserts nothing about time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::bench::report::{Comparison, Format};
use cluster::bench::stats::{ms, percentile};
use ros_store::etcd::EtcdStore;
use ros_store::etcd_process::EtcdProcess;
use ros_store::sqlite::SqliteStore;
use ros_store::{Revision, Store};

struct Scale {
    /// (writers, total writes) for the write benchmark.
    writes: Vec<(usize, usize)>,
    range_keys: usize,
    watchers: usize,
    watch_writes: usize,
}

/// Concurrent creates of unique keys: (writes per second, p50, p99).
async fn bench_writes(
    store: &Arc<dyn Store>,
    writers: usize,
    total: usize,
) -> (f64, Duration, Duration) {
    let per_writer = total / writers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let key = format!("/bench/write/{writers}/{w}/{i}");
                    let t = Instant::now();
                    store
                        .create(&key, vec![b'v'; 512], None)
                        .await
                        .expect("create");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.expect("writer task"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    (
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    )
}

/// Fills `keys` keys, then times a full range and a paged (500 per page) range:
/// (median full range, median paged range).
async fn bench_range(store: &Arc<dyn Store>, keys: usize) -> (Duration, Duration) {
    let writers = 64;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..keys).step_by(writers) {
                    let key = format!("/bench/range/{i:06}");
                    store
                        .create(&key, vec![b'p'; 2048], None)
                        .await
                        .expect("fill");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fill task");
    }
    let mut full = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let all = store
            .range("/bench/range/", None, 0, None)
            .await
            .expect("range");
        full.push(t.elapsed());
        assert_eq!(all.kvs.len(), keys, "range returned every key");

        let t = Instant::now();
        let (mut seen, mut after, mut at): (usize, Option<String>, Option<Revision>) =
            (0, None, None);
        loop {
            let page = store
                .range("/bench/range/", after.as_deref(), 500, at)
                .await
                .expect("paged range");
            seen += page.kvs.len();
            at = Some(page.revision);
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        paged.push(t.elapsed());
        assert_eq!(seen, keys, "pages covered every key");
    }
    full.sort();
    paged.sort();
    (full[2], paged[2])
}

/// `watchers` watches on one prefix, `writes` paced writes carrying their send time:
/// (p50, p99) of the delay from the write call to delivery, over every watcher and write.
async fn bench_watch(
    store: &Arc<dyn Store>,
    watchers: usize,
    writes: usize,
) -> (Duration, Duration) {
    let base = Instant::now();
    let from = store.current_revision().await.expect("revision");
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut w = store.watch("/bench/watch/", from).await.expect("watch");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(writes);
            while lat.len() < writes {
                let e = w.next().await.expect("watch open").expect("watch event");
                let sent = u64::from_le_bytes(e.kv.value[..8].try_into().unwrap());
                lat.push(base.elapsed().saturating_sub(Duration::from_nanos(sent)));
            }
            lat
        }));
    }
    for i in 0..writes {
        let sent = base.elapsed().as_nanos() as u64;
        store
            .create(
                &format!("/bench/watch/{i}"),
                sent.to_le_bytes().to_vec(),
                None,
            )
            .await
            .expect("watched write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut lat = Vec::with_capacity(watchers * writes);
    for t in tasks {
        lat.extend(t.await.expect("watcher task"));
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

/// Runs step `step` (each write level, then the range, then the watch) on one backend.
/// The backends take turns step by step, so background noise hits both alike.
async fn run_step(
    store: &Arc<dyn Store>,
    scale: &Scale,
    step: usize,
    label: &str,
) -> Vec<(String, f64, &'static str)> {
    let mut out = Vec::new();
    if let Some(&(writers, total)) = scale.writes.get(step) {
        eprintln!("{label}: {total} creates from {writers} writers...");
        let (rate, p50, p99) = bench_writes(store, writers, total).await;
        out.push((format!("creates/s, {writers} writers"), rate, "/s"));
        out.push((format!("create p50, {writers} writers"), ms(p50), "ms"));
        out.push((format!("create p99, {writers} writers"), ms(p99), "ms"));
    } else if step == scale.writes.len() {
        eprintln!("{label}: range of {} keys...", scale.range_keys);
        let (full, paged) = bench_range(store, scale.range_keys).await;
        let keys = scale.range_keys;
        out.push((format!("range {keys} keys, one read"), ms(full), "ms"));
        out.push((format!("range {keys} keys, pages of 500"), ms(paged), "ms"));
    } else {
        eprintln!("{label}: watch delivery to {} watchers...", scale.watchers);
        let (p50, p99) = bench_watch(store, scale.watchers, scale.watch_writes).await;
        let n = scale.watchers;
        out.push((format!("watch delivery p50, {n} watchers"), ms(p50), "ms"));
        out.push((format!("watch delivery p99, {n} watchers"), ms(p99), "ms"));
    }
    for (name, value, unit) in &out {
        eprintln!("{label}: {name}: {value:.2}{unit}");
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let format = Format::from_args(&args);
    let scale = if quick {
        Scale {
            writes: vec![(1, 200), (16, 800), (64, 1280)],
            range_keys: 2000,
            watchers: 100,
            watch_writes: 50,
        }
    } else {
        Scale {
            writes: vec![(1, 1000), (16, 4000), (64, 8000)],
            range_keys: 10_000,
            watchers: 1000,
            watch_writes: 200,
        }
    };
    let dir = std::env::temp_dir().join(format!("store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the benchmark dir");

    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.join("state.db"))
            .await
            .expect("open SQLite"),
    );
    let etcd_process = EtcdProcess::start(&dir.join("etcd"))
        .await
        .unwrap_or_else(|e| panic!("store-bench needs etcd: {e}"));
    let etcd: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&[etcd_process.endpoint().to_string()], None)
            .await
            .expect("connect to etcd"),
    );
    let (mut sqlite_rows, mut etcd_rows) = (Vec::new(), Vec::new());
    for step in 0..scale.writes.len() + 2 {
        sqlite_rows.extend(run_step(&sqlite, &scale, step, "sqlite").await);
        etcd_rows.extend(run_step(&etcd, &scale, step, "etcd").await);
    }
    drop((sqlite, etcd, etcd_process));
    let _ = std::fs::remove_dir_all(&dir);

    let mut report = Comparison::new("benchmark", "sqlite", "etcd");
    for ((name, s, unit), (_, e, _)) in sqlite_rows.into_iter().zip(etcd_rows) {
        report.row(name, s, e, unit);
    }
    report.note("(for creates/s higher is better; for times lower is better)");
    report.print(format);
}
