//! `kill -9` of a process writing to the SQLite store, mid-stream: every write it acknowledged
//! must be in the database when it is opened again.
//!
//! The test binary re-invokes itself with `STORE_CRASH_CHILD=<db path>`: the child writes
//! unique keys from many concurrent tasks and prints `ACK <revision> <key>` after each
//! acknowledgement. The parent SIGKILLs it by PID after enough acknowledgements, reopens the
//! database and checks every acknowledged key, three times over on the same database.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ros_store::Store;
use ros_store::sqlite::SqliteStore;

const CHILD_ENV: &str = "STORE_CRASH_CHILD";
const WRITERS: usize = 16;
/// Acknowledgements to wait for before the kill; the kill lands while writes are in flight.
const ACKS_BEFORE_KILL: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        write_until_killed(&path).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..3 {
        let new = run_child_and_kill(&db, round);
        assert!(
            new.len() >= ACKS_BEFORE_KILL,
            "round {round}: only {} acks",
            new.len()
        );
        acked.extend(new);
        let store = SqliteStore::open(&db).await.unwrap();
        for (key, rev) in &acked {
            match store.get(key, None).await.unwrap() {
                Some(kv) => assert_eq!(kv.mod_revision, *rev, "{key} has another revision"),
                None => panic!("round {round}: acknowledged write {key} at revision {rev} is lost"),
            }
        }
        // Only creates happened, one per revision: the log has no holes either.
        let all = store.range("/crash/", None, 0, None).await.unwrap();
        assert_eq!(
            all.kvs.len() as i64,
            all.revision,
            "round {round}: keys vs revisions"
        );
        assert!(all.revision >= *acked.values().max().unwrap());
    }
}

/// Runs one child writing to `db`, kills it with SIGKILL mid-stream, and returns what it
/// acknowledged (key -> revision), including lines still in the pipe after the kill.
fn run_child_and_kill(db: &std::path::Path, round: usize) -> BTreeMap<String, i64> {
    let exe = std::env::current_exe().unwrap();
    // The test's name inside this binary: its module path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let test = format!("{module}::acknowledged_writes_survive_kill_9");
    let mut child = Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture"])
        .env(CHILD_ENV, db)
        .env("STORE_CRASH_ROUND", round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer child");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = BTreeMap::new();
    let mut killed = false;
    for line in lines {
        let line = line.expect("read child output");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (rev, key) = rest.split_once(' ').expect("ACK <revision> <key>");
            acked.insert(key.to_string(), rev.parse::<i64>().unwrap());
        }
        if !killed && acked.len() >= ACKS_BEFORE_KILL {
            // Child::kill sends SIGKILL to the child's PID.
            child.kill().expect("kill -9 the writer");
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the writer ended on its own ({status}) before it was killed"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the writer died of SIGKILL");
    acked
}

async fn write_until_killed(path: &str) {
    let round: usize = std::env::var("STORE_CRASH_ROUND").unwrap().parse().unwrap();
    let store = Arc::new(SqliteStore::open(path).await.unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, out) = (store.clone(), out.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{w}/{i:08}");
                    let rev = store.create(&key, vec![b'x'; 256], None).await.unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {rev} {key}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}
