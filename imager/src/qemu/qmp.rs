//! A minimal QMP (QEMU Machine Protocol) client over the VM's Unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QMP {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP {}: unexpected greeting {greeting}", socket.display());
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .context("reading from QMP")?
            == 0
        {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent invalid JSON: {line}"))
    }

    /// Runs one command and returns its `return` value; events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&request)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .with_context(|| format!("sending QMP {command}"))?;
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                bail!("QMP {command} failed: {error}");
            }
        }
    }

    /// Presses and releases the keys together (QEMU's `sendkey ctrl-alt-delete`).
    pub fn send_keys(&mut self, qcodes: &[&str]) -> Result<()> {
        let keys: Vec<Value> = qcodes
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.execute("send-key", Some(json!({ "keys": keys })))?;
        Ok(())
    }

    pub fn ctrl_alt_delete(&mut self) -> Result<()> {
        self.send_keys(&["ctrl", "alt", "delete"])
    }

    /// The ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).map(|_| ())
    }

    /// Whether the guest CPUs are running (`query-status`).
    pub fn status(&mut self) -> Result<String> {
        let value = self.execute("query-status", None)?;
        Ok(value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    pub fn quit(&mut self) -> Result<()> {
        self.execute("quit", None).map(|_| ())
    }
}
