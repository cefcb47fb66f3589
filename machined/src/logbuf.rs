//! Line-oriented log buffers: the last lines kept in memory (for `logs --tail`), live followers
//! (for `logs -f`), and an optional size-capped file on disk.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Lines kept in memory per buffer.
const KEEP_LINES: usize = 5000;
/// The on-disk file is rotated to `<name>.1` when it grows past this.
const FILE_CAP_BYTES: u64 = 4 * 1024 * 1024;

struct FileSink {
    path: PathBuf,
    file: File,
    written: u64,
}

struct Inner {
    lines: VecDeque<String>,
    sink: Option<FileSink>,
    /// Log forwarding: the service name lines are tagged with, and the shipper.
    ship: Option<(Arc<str>, crate::logship::LogShipper)>,
}

/// A shared log buffer.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<String>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBuffer {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                lines: VecDeque::new(),
                sink: None,
                ship: None,
            })),
            live,
        }
    }

    /// A buffer that also appends to `path` (created with its parent directory).
    pub fn with_file(path: PathBuf) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        let buf = Self::new();
        buf.inner.lock().expect("log lock").sink = Some(FileSink {
            path,
            file,
            written,
        });
        Ok(buf)
    }

    /// Also hands every later line to `shipper` (log forwarding), tagged with `service`.
    pub fn ship_as(&self, service: &str, shipper: &crate::logship::LogShipper) {
        self.inner.lock().expect("log lock").ship = Some((Arc::from(service), shipper.clone()));
    }

    /// Appends one line (without its newline).
    pub fn push(&self, line: impl Into<String>) {
        let line = line.into();
        let mut inner = self.inner.lock().expect("log lock");
        if let Some(sink) = inner.sink.as_mut() {
            sink.append(&line);
        }
        if let Some((service, shipper)) = &inner.ship {
            // Never blocks: a full queue drops the line for the destinations only.
            shipper.send(service, &line);
        }
        if inner.lines.len() == KEEP_LINES {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line.clone());
        let _ = self.live.send(line);
    }

    /// Appends raw output, split into lines.
    pub fn push_text(&self, text: &str) {
        for line in text.lines() {
            self.push(line);
        }
    }

    /// The last `tail` lines (all kept lines for 0) and a receiver for lines pushed afterwards,
    /// taken atomically.
    pub fn snapshot(&self, tail: usize) -> (Vec<String>, broadcast::Receiver<String>) {
        let inner = self.inner.lock().expect("log lock");
        let rx = self.live.subscribe();
        let skip = if tail == 0 {
            0
        } else {
            inner.lines.len().saturating_sub(tail)
        };
        (inner.lines.iter().skip(skip).cloned().collect(), rx)
    }

    pub fn lines(&self) -> Vec<String> {
        self.snapshot(0).0
    }
}

impl FileSink {
    fn append(&mut self, line: &str) {
        if self.written > FILE_CAP_BYTES {
            let rotated = self.path.with_extension("log.1");
            let _ = std::fs::rename(&self.path, rotated);
            if let Ok(file) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                self.file = file;
                self.written = 0;
            }
        }
        if writeln!(self.file, "{line}").is_ok() {
            self.written += line.len() as u64 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_last_lines() {
        let buf = LogBuffer::new();
        buf.push_text("a\nb\nc\n");
        assert_eq!(buf.snapshot(2).0, vec!["b", "c"]);
        assert_eq!(buf.snapshot(0).0.len(), 3);
    }

    #[tokio::test]
    async fn followers_get_new_lines() {
        let buf = LogBuffer::new();
        buf.push("old");
        let (_, mut rx) = buf.snapshot(0);
        buf.push("new");
        assert_eq!(rx.recv().await.unwrap(), "new");
    }

    #[test]
    fn file_sink_keeps_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/svc.log");
        let buf = LogBuffer::with_file(path.clone()).unwrap();
        buf.push("hello");
        assert_eq!(std::fs::read_to_string(path).unwrap(), "hello\n");
    }
}
