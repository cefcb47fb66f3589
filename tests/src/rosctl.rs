//! Driving a node with the real `rosctl` binary (built in release with the image's
//! binaries, in the same cargo invocation), each call bounded by a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long one unary rosctl call may take (the guest may be slow under TCG).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `rosctl` aimed at one node through its forwarded API port.
#[derive(Debug, Clone)]
pub struct Rosctl {
    pub bin: PathBuf,
    pub rosconfig: PathBuf,
    /// `127.0.0.1:PORT`.
    pub node: String,
}

/// A child killed by PID when dropped (rosctl calls that stream or hang).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.0.kill().ok();
        }
        self.0.wait().ok();
    }
}

/// Reads a pipe to the end on a thread (so a chatty child never blocks on a full pipe).
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut buf).ok();
        }
        buf
    })
}

impl Rosctl {
    pub fn new(bin: &Path, rosconfig: &Path, port: u16) -> Self {
        Self {
            bin: bin.to_path_buf(),
            rosconfig: rosconfig.to_path_buf(),
            node: format!("127.0.0.1:{port}"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--rosconfig")
            .arg(&self.rosconfig)
            .args(["-n", &self.node])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `rosctl <args>` to completion within `timeout` (killed by PID after it).
    pub fn run(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let mut guard = KillOnDrop(child);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = guard.0.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "rosctl {} did not finish within {timeout:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Runs `rosctl <args>` and returns its stdout; a failure carries stderr.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args, CALL_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "rosctl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Retries `rosctl <args>` until it succeeds (the node is still booting), up to `timeout`.
    pub fn ok_within(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ok(args) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("no success within {timeout:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(2)),
            }
        }
    }

    /// Retries until `rosctl <args>` succeeds with stdout satisfying `done`.
    pub fn wait_for(
        &self,
        args: &[&str],
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.ok(args) {
                Ok(out) if done(&out) => return Ok(out),
                Ok(out) => out,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "rosctl {}: not as expected within {timeout:?}; last answer:\n{last}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Starts a streaming call (`logs -f`, `dmesg -f`) and collects its stdout lines until
    /// `enough` says so or `timeout` passes; the call is then killed by PID.
    pub fn stream_until(
        &self,
        args: &[&str],
        timeout: Duration,
        enough: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>> {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("rosctl stdout")?;
        let _guard = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            if enough(&lines) {
                return Ok(lines);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "rosctl {}: stream not as expected within {timeout:?}; got {} lines:\n{}",
                    args.join(" "),
                    lines.len(),
                    lines.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "rosctl {}: stream ended early after {} lines:\n{}",
                    args.join(" "),
                    lines.len(),
                    lines.join("\n")
                ),
            }
        }
    }
}
