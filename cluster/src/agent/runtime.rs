//! The agent's view of containerd: images, snapshots, containers and tasks of pods,
//! through containerd's gRPC API (containerd-client).

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use containerd_client::services::v1::container::Runtime as RuntimeSelection;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetImageRequest, GetRequest, KillRequest, ListContainersRequest,
    ReadContentRequest, StartRequest, containers_client::ContainersClient,
    content_client::ContentClient, images_client::ImagesClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use containerd_client::types::Mount;
use futures_util::StreamExt;
use prost_types::Any;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Labels the agent puts on every containerd container it creates; they are how a
/// restarted agent finds (adopts) the containers of its pods.
pub const LABEL_POD_UID: &str = "io.ros.pod.uid";
pub const LABEL_POD_NAMESPACE: &str = "io.ros.pod.namespace";
pub const LABEL_POD_NAME: &str = "io.ros.pod.name";
pub const LABEL_CONTAINER: &str = "io.ros.container.name";
pub const LABEL_ATTEMPT: &str = "io.ros.container.attempt";
pub const LABEL_IMAGE_ID: &str = "io.ros.image.digest";

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// A container of a pod as containerd holds it.
#[derive(Clone, Debug)]
pub struct PodContainer {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub created_at: Option<jiff::Timestamp>,
}

/// What the task (the process) of a container is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    /// No task exists (never started, or deleted).
    Missing,
    Created,
    Running,
    Stopped {
        exit_code: i32,
        finished_at: Option<jiff::Timestamp>,
    },
}

/// The resolved parts of an image the agent needs to run it.
pub struct ImageInfo {
    pub digest: String,
    /// Top of the unpacked layer chain, the parent of a container's snapshot.
    pub chain_id: String,
    /// The image config's `config` object (Entrypoint, Cmd, Env, WorkingDir, User).
    pub config: Value,
}

#[derive(Clone)]
pub struct ContainerRuntime {
    channel: Channel,
    namespace: String,
    snapshotter: String,
}

fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    let t = t.as_ref()?;
    if t.seconds <= 0 {
        return None;
    }
    jiff::Timestamp::new(t.seconds, 0).ok()
}

impl ContainerRuntime {
    pub async fn connect(
        socket: &std::path::Path,
        namespace: &str,
        snapshotter: &str,
    ) -> Result<Self> {
        let channel = containerd_client::connect(socket)
            .await
            .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
        Ok(ContainerRuntime {
            channel,
            namespace: namespace.to_string(),
            snapshotter: snapshotter.to_string(),
        })
    }

    /// The gRPC channel to containerd (for calls beyond this type's own, such as exec).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The containerd namespace the pods' containers live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's version; also the agent's health check of the runtime.
    pub async fn version(&self) -> Result<String> {
        let v = VersionClient::new(self.channel.clone())
            .version(Request::new(()))
            .await
            .context("containerd Version")?
            .into_inner();
        Ok(v.version)
    }

    /// Looks up `name` in containerd's image store and resolves its config and chain ID.
    /// `Ok(None)` when containerd does not hold the image.
    pub async fn image(&self, name: &str) -> Result<Option<ImageInfo>> {
        let got = ImagesClient::new(self.channel.clone())
            .get(req(
                &self.namespace,
                GetImageRequest {
                    name: name.to_string(),
                },
            ))
            .await;
        let image = match got {
            Ok(r) => r
                .into_inner()
                .image
                .ok_or_else(|| anyhow!("image {name}: empty reply"))?,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(anyhow!("image {name}: {}", s.message())),
        };
        let target = image
            .target
            .ok_or_else(|| anyhow!("image {name}: no target"))?;
        let mut manifest: Value = serde_json::from_slice(&self.read_blob(&target.digest).await?)
            .with_context(|| format!("image {name}: manifest {}", target.digest))?;
        if let Some(list) = manifest["manifests"].as_array() {
            // An index: take the manifest for this machine.
            let arch = host_arch();
            let pick = list
                .iter()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .or(list.first())
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| anyhow!("image {name}: index without a manifest for {arch}"))?
                .to_string();
            manifest = serde_json::from_slice(&self.read_blob(&pick).await?)
                .with_context(|| format!("image {name}: manifest {pick}"))?;
        }
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("image {name}: manifest without config"))?;
        let config: Value = serde_json::from_slice(&self.read_blob(config_digest).await?)
            .with_context(|| format!("image {name}: config {config_digest}"))?;
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str()).collect())
            .unwrap_or_default();
        Ok(Some(ImageInfo {
            digest: target.digest,
            chain_id: chain_id(&diff_ids),
            config: config["config"].clone(),
        }))
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(req(
                &self.namespace,
                ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .with_context(|| format!("reading blob {digest}"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(
                &chunk
                    .with_context(|| format!("reading blob {digest}"))?
                    .data,
            );
        }
        Ok(out)
    }

    /// Every container this agent created (carrying the pod labels).
    pub async fn list(&self) -> Result<Vec<PodContainer>> {
        let list = ContainersClient::new(self.channel.clone())
            .list(req(
                &self.namespace,
                ListContainersRequest { filters: vec![] },
            ))
            .await
            .context("listing containerd containers")?
            .into_inner();
        Ok(list
            .containers
            .into_iter()
            .filter_map(|c| {
                let l = &c.labels;
                Some(PodContainer {
                    pod_uid: l.get(LABEL_POD_UID)?.clone(),
                    name: l.get(LABEL_CONTAINER)?.clone(),
                    attempt: l.get(LABEL_ATTEMPT)?.parse().ok()?,
                    image: c.image.clone(),
                    image_id: l.get(LABEL_IMAGE_ID).cloned().unwrap_or_default(),
                    created_at: ts(&c.created_at),
                    id: c.id,
                })
            })
            .collect())
    }

    pub async fn task_state(&self, id: &str) -> Result<TaskState> {
        let got = TasksClient::new(self.channel.clone())
            .get(req(
                &self.namespace,
                GetRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
            ))
            .await;
        let p = match got {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => return Ok(TaskState::Missing),
            Err(s) => return Err(anyhow!("task {id}: {}", s.message())),
        };
        let Some(p) = p else {
            return Ok(TaskState::Missing);
        };
        use containerd_client::types::v1::Status;
        Ok(
            match Status::try_from(p.status).unwrap_or(Status::Unknown) {
                Status::Created => TaskState::Created,
                Status::Stopped => TaskState::Stopped {
                    exit_code: p.exit_status as i32,
                    finished_at: ts(&p.exited_at),
                },
                _ => TaskState::Running,
            },
        )
    }

    /// Creates the container `id` (snapshot from the image, `spec` as its runtime spec) and
    /// starts its task with stdout and stderr appended to `log_path` and stdin read from the
    /// FIFO `stdin` (if any; the shim keeps it open until CloseIO).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_and_start(
        &self,
        id: &str,
        image_name: &str,
        image: &ImageInfo,
        spec: &Value,
        labels: BTreeMap<String, String>,
        log_path: &std::path::Path,
        stdin: Option<&std::path::Path>,
    ) -> Result<()> {
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let prepared = snaps
            .prepare(req(
                &self.namespace,
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.to_string(),
                    parent: image.chain_id.clone(),
                    labels: Default::default(),
                },
            ))
            .await;
        let mounts: Vec<Mount> = match prepared {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => self.mounts(id).await?,
            Err(s) => {
                return Err(anyhow!(
                    "preparing the rootfs snapshot of {id} on {}: {} (is the image unpacked for this snapshotter?)",
                    image.chain_id,
                    s.message()
                ));
            }
        };
        let container = Container {
            id: id.to_string(),
            labels: labels.into_iter().collect(),
            image: image_name.to_string(),
            runtime: Some(RuntimeSelection {
                name: RUNC_RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: serde_json::to_vec(spec)?,
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        let created = ContainersClient::new(self.channel.clone())
            .create(req(
                &self.namespace,
                CreateContainerRequest {
                    container: Some(container),
                },
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(anyhow!("creating container {id}: {}", s.message())),
        }
        self.start_task(id, mounts, log_path, stdin).await
    }

    async fn mounts(&self, id: &str) -> Result<Vec<Mount>> {
        use containerd_client::services::v1::snapshots::MountsRequest;
        Ok(SnapshotsClient::new(self.channel.clone())
            .mounts(req(
                &self.namespace,
                MountsRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.to_string(),
                },
            ))
            .await
            .with_context(|| format!("mounts of snapshot {id}"))?
            .into_inner()
            .mounts)
    }

    async fn start_task(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        log: &std::path::Path,
        stdin: Option<&std::path::Path>,
    ) -> Result<()> {
        let uri = format!("file://{}", log.display());
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(req(
                &self.namespace,
                CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    stdin: stdin.map(|p| p.display().to_string()).unwrap_or_default(),
                    stdout: uri.clone(),
                    stderr: uri,
                    ..Default::default()
                },
            ))
            .await
            .map_err(|s| anyhow!("creating the task of {id}: {}", s.message()))?;
        tasks
            .start(req(
                &self.namespace,
                StartRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
            ))
            .await
            .map_err(|s| anyhow!("starting the task of {id}: {}", s.message()))?;
        Ok(())
    }

    pub async fn kill(&self, id: &str, signal: u32) -> Result<()> {
        let r = TasksClient::new(self.channel.clone())
            .kill(req(
                &self.namespace,
                KillRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                    signal,
                    all: true,
                },
            ))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(anyhow!("signal {signal} to {id}: {}", s.message())),
        }
    }

    /// Deletes the (stopped) task, the container and its snapshot; missing parts are fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let r = TasksClient::new(self.channel.clone())
            .delete(req(
                &self.namespace,
                DeleteTaskRequest {
                    container_id: id.to_string(),
                },
            ))
            .await;
        missing_is_fine(r, || format!("deleting the task of {id}"))?;
        let r = ContainersClient::new(self.channel.clone())
            .delete(req(
                &self.namespace,
                DeleteContainerRequest { id: id.to_string() },
            ))
            .await;
        missing_is_fine(r, || format!("deleting container {id}"))?;
        let r = SnapshotsClient::new(self.channel.clone())
            .remove(req(
                &self.namespace,
                RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: id.to_string(),
                },
            ))
            .await;
        missing_is_fine(r, || format!("removing the snapshot of {id}"))
    }
}

/// A removal's result where "not found" counts as done.
fn missing_is_fine<T>(
    r: std::result::Result<T, tonic::Status>,
    what: impl Fn() -> String,
) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(anyhow!("{}: {}", what(), s.message())),
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The OCI chain ID of a layer stack: the identity of the unpacked snapshot.
pub fn chain_id(diff_ids: &[&str]) -> String {
    let mut chain = String::new();
    for d in diff_ids {
        chain = if chain.is_empty() {
            d.to_string()
        } else {
            let h = ring::digest::digest(&ring::digest::SHA256, format!("{chain} {d}").as_bytes());
            format!("sha256:{}", hex(h.as_ref()))
        };
    }
    chain
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id_and_stacks_hash() {
        assert_eq!(chain_id(&["sha256:aa"]), "sha256:aa");
        let two = chain_id(&["sha256:aa", "sha256:bb"]);
        let want = ring::digest::digest(&ring::digest::SHA256, b"sha256:aa sha256:bb");
        assert_eq!(two, format!("sha256:{}", hex(want.as_ref())));
        assert_eq!(chain_id(&[]), "");
    }
}
