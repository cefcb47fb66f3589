//! One exec process in a running container through containerd's task service (Exec, Start,
//! Wait, ResizePty, CloseIO, Kill, DeleteProcess), with its stdio through FIFOs in a
//! per-exec directory, as containerd 1.6 expects (the shim opens the paths it is given).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest, containers_client::ContainersClient,
};
use prost_types::Any;
use serde_json::{Value, json};
use tokio::net::unix::pipe;
use tonic::Request;
use tonic::transport::Channel;

use crate::agent::runtime::ContainerRuntime;

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What the client asked to run, and which streams it attached.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A started exec process. Dropping it does not stop the process: call [`Exec::finish`].
pub struct Exec {
    channel: Channel,
    namespace: String,
    container_id: String,
    exec_id: String,
    dir: PathBuf,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

/// The exec's process spec: the container's own (user, env, cwd, capabilities, limits) with
/// the client's command and terminal choice.
pub fn process_spec(container_process: &Value, command: &[String], tty: bool) -> Value {
    let mut p = if container_process.is_object() {
        container_process.clone()
    } else {
        json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})
    };
    p["args"] = json!(command);
    p["terminal"] = json!(tty);
    if let Some(o) = p.as_object_mut() {
        o.remove("consoleSize");
    }
    if tty {
        let env = p["env"].as_array().cloned().unwrap_or_default();
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|s| s.starts_with("TERM=")))
        {
            let mut env = env;
            env.push(json!("TERM=xterm"));
            p["env"] = json!(env);
        }
    }
    p
}

/// Opens the read end of a FIFO on a blocking thread: the open returns once the shim opens
/// its write end, so data the process writes before we read is never lost and EOF means
/// the shim is done with the stream.
fn open_reader(path: PathBuf) -> tokio::task::JoinHandle<std::io::Result<std::fs::File>> {
    tokio::task::spawn_blocking(move || std::fs::File::open(path))
}

/// Releases a blocked [`open_reader`] when the shim never opened the FIFO.
fn release_reader(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path);
}

async fn reader_ready(
    open: tokio::task::JoinHandle<std::io::Result<std::fs::File>>,
    what: &str,
) -> Result<pipe::Receiver> {
    let file = open
        .await
        .with_context(|| format!("opening the {what} FIFO"))?
        .with_context(|| format!("opening the {what} FIFO"))?;
    pipe::Receiver::from_file(file).with_context(|| format!("the {what} FIFO"))
}

impl Exec {
    /// Creates the FIFOs under `exec_root/<exec id>`, then execs and starts `r.command` in the
    /// running task of container `container_id`.
    pub async fn start(
        runtime: &ContainerRuntime,
        exec_root: &Path,
        container_id: &str,
        r: &ExecRequest,
    ) -> Result<Exec> {
        let channel = runtime.channel();
        let namespace = runtime.namespace().to_string();
        let container = ContainersClient::new(channel.clone())
            .get(req(
                &namespace,
                GetContainerRequest {
                    id: container_id.to_string(),
                },
            ))
            .await
            .map_err(|s| anyhow!("container {container_id}: {}", s.message()))?
            .into_inner()
            .container
            .ok_or_else(|| anyhow!("container {container_id}: empty reply"))?;
        let spec: Value = container
            .spec
            .as_ref()
            .map(|s| serde_json::from_slice(&s.value))
            .transpose()
            .with_context(|| format!("the runtime spec of container {container_id}"))?
            .unwrap_or(Value::Null);
        let process = process_spec(&spec["process"], &r.command, r.tty);

        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        let dir = exec_root.join(&exec_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut exec = Exec {
            channel,
            namespace,
            container_id: container_id.to_string(),
            exec_id,
            dir,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        match exec.exec_and_start(r, &process).await {
            Ok(()) => Ok(exec),
            Err(e) => {
                // It may have started (a FIFO failed afterwards): stop it before removing it.
                exec.kill().await;
                exec.cleanup().await;
                Err(e)
            }
        }
    }

    fn fifo(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", p.display()))?;
        Ok(p)
    }

    async fn exec_and_start(&mut self, r: &ExecRequest, process: &Value) -> Result<()> {
        let stdin = if r.stdin {
            let p = self.fifo("stdin")?;
            // Read-write: opening never blocks; closing it is the process's EOF.
            self.stdin = Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&p)
                    .context("opening the stdin FIFO")?,
            );
            Some(p)
        } else {
            None
        };
        // containerd 1.6's shim wants both output paths of a non-terminal exec; output the
        // client did not ask for is read and dropped. With a terminal, stderr is the terminal.
        let stdout = Some(self.fifo("stdout")?);
        let stderr = (!r.tty).then(|| self.fifo("stderr")).transpose()?;
        let stdout_open = stdout.clone().map(open_reader);
        let stderr_open = stderr.clone().map(open_reader);
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let mut tasks = TasksClient::new(self.channel.clone());
        let started = async {
            tasks
                .exec(req(
                    &self.namespace,
                    ExecProcessRequest {
                        container_id: self.container_id.clone(),
                        stdin: path(&stdin),
                        stdout: path(&stdout),
                        stderr: path(&stderr),
                        terminal: r.tty,
                        spec: Some(Any {
                            type_url: PROCESS_TYPE_URL.to_string(),
                            value: serde_json::to_vec(process)?,
                        }),
                        exec_id: self.exec_id.clone(),
                    },
                ))
                .await
                .map_err(|s| anyhow!("{}", s.message()))?;
            tasks
                .start(req(
                    &self.namespace,
                    StartRequest {
                        container_id: self.container_id.clone(),
                        exec_id: self.exec_id.clone(),
                    },
                ))
                .await
                .map_err(|s| anyhow!("{}", s.message()))?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = started {
            for p in [&stdout, &stderr].into_iter().flatten() {
                release_reader(p);
            }
            return Err(e.context(format!(
                "error executing command {:?} in container {}",
                r.command, self.container_id
            )));
        }
        if let Some(open) = stdout_open {
            self.stdout = Some(reader_ready(open, "stdout").await?);
        }
        if let Some(open) = stderr_open {
            self.stderr = Some(reader_ready(open, "stderr").await?);
        }
        Ok(())
    }

    /// Waits for the process to exit; its exit status.
    pub fn wait(&self) -> impl std::future::Future<Output = Result<u32>> + use<> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let request = req(
            &self.namespace,
            WaitRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            },
        );
        async move {
            Ok(tasks
                .wait(request)
                .await
                .map_err(|s| anyhow!("waiting for the exec process: {}", s.message()))?
                .into_inner()
                .exit_status)
        }
    }

    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .resize_pty(req(
                &self.namespace,
                ResizePtyRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                    width,
                    height,
                },
            ))
            .await
            .map_err(|s| anyhow!("resizing the terminal: {}", s.message()))?;
        Ok(())
    }

    /// Ends the process's input once our end of the stdin FIFO is closed: the shim holds a
    /// write end of its own (for this call) and closes it; the process then reads the
    /// buffered bytes and EOF.
    pub fn close_stdin(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let request = req(
            &self.namespace,
            CloseIoRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            },
        );
        async move {
            if let Err(s) = tasks.close_io(request).await {
                tracing::debug!("closing the exec's stdin: {}", s.message());
            }
        }
    }

    pub async fn kill(&self) {
        let _ = TasksClient::new(self.channel.clone())
            .kill(req(
                &self.namespace,
                KillRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                    signal: 9,
                    all: false,
                },
            ))
            .await;
    }

    /// Removes the (exited) process from containerd and its FIFO directory.
    pub async fn finish(mut self) {
        self.cleanup().await;
    }

    async fn cleanup(&mut self) {
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
        let r = TasksClient::new(self.channel.clone())
            .delete_process(req(
                &self.namespace,
                DeleteProcessRequest {
                    container_id: self.container_id.clone(),
                    exec_id: self.exec_id.clone(),
                },
            ))
            .await;
        if let Err(s) = r
            && s.code() != tonic::Code::NotFound
        {
            tracing::warn!(exec = %self.exec_id, "deleting the exec process: {}", s.message());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("removing {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_spec_keeps_the_containers_context_with_the_new_command() {
        let container = json!({
            "args": ["/bin/sh", "-c", "sleep 1000"],
            "env": ["PATH=/bin", "GREETING=hello"],
            "cwd": "/work",
            "user": {"uid": 1000, "gid": 1000},
            "terminal": false,
            "consoleSize": {"height": 1, "width": 1},
        });
        let cmd = vec!["echo".to_string(), "hi".to_string()];
        let p = process_spec(&container, &cmd, false);
        assert_eq!(p["args"], json!(["echo", "hi"]));
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["env"], json!(["PATH=/bin", "GREETING=hello"]));
        assert!(p.get("consoleSize").is_none());
        let t = process_spec(&container, &cmd, true);
        assert_eq!(t["terminal"], true);
        assert_eq!(t["env"][2], "TERM=xterm");
    }
}
