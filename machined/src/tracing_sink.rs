//! machined's own log goes to stderr (the console on a node) and into a buffer that
//! `rosctl logs machined` reads.

use crate::logbuf::LogBuffer;
use std::io::Write;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone)]
struct Tee {
    buffer: LogBuffer,
}

struct TeeWriter {
    buffer: LogBuffer,
    pending: Vec<u8>,
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter {
    fn drop(&mut self) {
        let _ = std::io::stderr().write_all(&self.pending);
        self.buffer
            .push_text(&String::from_utf8_lossy(&self.pending));
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter;
    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            buffer: self.buffer.clone(),
            pending: Vec::new(),
        }
    }
}

/// Installs the global subscriber; returns the buffer holding machined's log.
pub fn init_tracing() -> LogBuffer {
    let buffer = LogBuffer::new();
    let filter = EnvFilter::try_from_env("ROS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Tee {
            buffer: buffer.clone(),
        })
        .try_init();
    buffer
}
