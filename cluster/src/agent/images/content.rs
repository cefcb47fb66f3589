//! containerd's content store, snapshots and image records as a pull writes them. Every call
//! carries the pull's lease, so containerd's garbage collector keeps half-pulled content
//! until the image record and the `containerd.io/gc.ref.*` labels hold it.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, Image, Info, InfoRequest, UpdateImageRequest,
    UpdateRequest, WriteAction, WriteContentRequest, content_client::ContentClient,
    diff_client::DiffClient, images_client::ImagesClient,
};
use containerd_client::types::Descriptor;
use futures_util::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Code, Request};

const CHUNK: usize = 1 << 20;

/// The containerd side of one pull: namespace and lease on every request.
pub struct Store {
    channel: Channel,
    namespace: String,
    pub snapshotter: String,
    lease: String,
}

impl Store {
    /// Takes a lease that expires on its own after an hour (a crashed agent leaves nothing
    /// pinned for long).
    pub async fn begin(channel: Channel, namespace: &str, snapshotter: &str) -> Result<Store> {
        let id = format!("ros-pull-{:016x}", rand::random::<u64>());
        let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        let mut s = Store {
            channel,
            namespace: namespace.to_string(),
            snapshotter: snapshotter.to_string(),
            lease: String::new(),
        };
        LeasesClient::new(s.channel.clone())
            .create(s.req(CreateLeaseRequest {
                id: id.clone(),
                labels: HashMap::from([(
                    "containerd.io/gc.expire".to_string(),
                    expire.to_string(),
                )]),
            }))
            .await
            .map_err(|e| anyhow!("containerd: creating a lease for the pull: {}", e.message()))?;
        s.lease = id;
        Ok(s)
    }

    pub async fn end(self) {
        let r = LeasesClient::new(self.channel.clone())
            .delete(self.req(DeleteLeaseRequest {
                id: self.lease.clone(),
                sync: false,
            }))
            .await;
        if let Err(e) = r {
            tracing::warn!(lease = %self.lease, error = %e.message(), "deleting the pull lease");
        }
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        if !self.lease.is_empty()
            && let Ok(v) = self.lease.parse()
        {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    /// Whether the content store holds `digest`.
    pub async fn has(&self, digest: &str) -> Result<bool> {
        self.info(digest).await.map(|i| i.is_some())
    }

    async fn info(&self, digest: &str) -> Result<Option<Info>> {
        let r = ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(anyhow!("content {digest}: {}", s.message())),
        }
    }

    /// Adds `labels` to existing content `digest`.
    pub async fn label(&self, digest: &str, labels: &HashMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        ContentClient::new(self.channel.clone())
            .update(self.req(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
                }),
            }))
            .await
            .map_err(|s| anyhow!("labelling content {digest}: {}", s.message()))?;
        Ok(())
    }

    /// Writes a blob from `data` (a stream of chunks) and commits it as `digest`, checked by
    /// containerd against the digest and `size`.
    pub async fn write<S>(
        &self,
        digest: &str,
        size: i64,
        labels: &HashMap<String, String>,
        data: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let reference = format!("ros-pull-{digest}");
        // A write left over from an interrupted pull would hold the ref: drop it first.
        let _ = ContentClient::new(self.channel.clone())
            .abort(self.req(AbortRequest {
                r#ref: reference.clone(),
            }))
            .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let outbound = tokio_stream_from(rx);
        // containerd answers (and sends the reply headers) only after the first message:
        // queue a STAT before making the call.
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|_| anyhow!("writing {digest}: request stream closed"))?;
        let mut responses = ContentClient::new(self.channel.clone())
            .write(self.req(outbound))
            .await
            .map_err(|s| anyhow!("writing {digest}: {}", s.message()))?
            .into_inner();
        match responses.next().await {
            Some(Ok(_)) => {}
            Some(Err(s)) => return Err(anyhow!("writing {digest}: {}", s.message())),
            None => return Err(anyhow!("writing {digest}: containerd ended the stream")),
        }
        let mut offset = 0i64;
        let mut data = data;
        // containerd answers every message: send one, read its answer (lock step).
        let mut step = async |msg: WriteContentRequest| -> Result<i64> {
            tx.send(msg)
                .await
                .map_err(|_| anyhow!("writing {digest}: containerd closed the stream"))?;
            match responses.next().await {
                Some(Ok(r)) => Ok(r.offset),
                Some(Err(s)) => Err(anyhow!("writing {digest}: {}", s.message())),
                None => Err(anyhow!("writing {digest}: containerd ended the stream")),
            }
        };
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            for part in chunk.chunks(CHUNK) {
                step(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total: size,
                    expected: digest.to_string(),
                    offset,
                    data: part.to_vec(),
                    labels: HashMap::new(),
                })
                .await?;
                offset += part.len() as i64;
            }
        }
        if offset != size {
            return Err(anyhow!(
                "blob {digest}: the registry sent {offset} bytes, the manifest says {size}"
            ));
        }
        let r = step(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.to_string(),
            offset,
            data: vec![],
            labels: labels.clone(),
        })
        .await;
        match r {
            Ok(_) => Ok(()),
            // Someone else committed the same blob meanwhile: keep it, add our labels.
            Err(e) if e.to_string().contains("already exists") => self.label(digest, labels).await,
            Err(e) => Err(e),
        }
    }

    /// Whether the snapshot `key` (a chain ID once committed) exists.
    pub async fn has_snapshot(&self, key: &str) -> Result<bool> {
        let r = SnapshotsClient::new(self.channel.clone())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(anyhow!("snapshot {key}: {}", s.message())),
        }
    }

    /// Applies `layer` on top of snapshot `parent` and commits the result as `chain_id`.
    pub async fn unpack_layer(
        &self,
        layer: &Descriptor,
        parent: &str,
        chain_id: &str,
        diff_id: &str,
    ) -> Result<()> {
        let key = format!("extract-{:016x} {chain_id}", rand::random::<u64>());
        let mut snaps = SnapshotsClient::new(self.channel.clone());
        let mounts = snaps
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| anyhow!("preparing a snapshot on {parent:?}: {}", s.message()))?
            .into_inner()
            .mounts;
        let result = async {
            let applied = DiffClient::new(self.channel.clone())
                .apply(self.req(ApplyRequest {
                    diff: Some(layer.clone()),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }))
                .await
                .map_err(|s| anyhow!("applying layer {}: {}", layer.digest, s.message()))?
                .into_inner()
                .applied
                .ok_or_else(|| anyhow!("applying layer {}: empty reply", layer.digest))?;
            if applied.digest != diff_id {
                return Err(anyhow!(
                    "layer {}: unpacked to {}, the image config says {diff_id}",
                    layer.digest,
                    applied.digest
                ));
            }
            let r = snaps
                .commit(self.req(CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain_id.to_string(),
                    key: key.clone(),
                    labels: HashMap::new(),
                }))
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => Err(anyhow!("exists")),
                Err(s) => Err(anyhow!("committing snapshot {chain_id}: {}", s.message())),
            }
        }
        .await;
        if result.is_err() {
            let _ = snaps
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key,
                }))
                .await;
        }
        match result {
            Err(e) if e.to_string() == "exists" => Ok(()),
            r => r,
        }
    }

    /// Creates or repoints the image record `name` at `target`.
    pub async fn set_image(&self, name: &str, target: Descriptor) -> Result<()> {
        let image = Image {
            name: name.to_string(),
            target: Some(target),
            ..Default::default()
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let r = images
            .create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                images
                    .update(self.req(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".to_string()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| anyhow!("updating image {name}: {}", s.message()))?;
                Ok(())
            }
            Err(s) => Err(anyhow!("creating image {name}: {}", s.message())),
        }
        .context("containerd image store")
    }
}

/// A `Stream` over an mpsc receiver (the request side of a client-streaming call).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
