//! One image pull: manifest (an index resolved to this machine's platform), config and
//! layers from the registry into containerd's content store, the layers unpacked into
//! snapshots, then the image record.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use containerd_client::types::Descriptor;
use futures_util::StreamExt;
use serde_json::Value;
use tonic::transport::Channel;

use super::content::Store;
use super::registry::Endpoint;
use crate::agent::runtime::{chain_id, host_arch};

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Pulls `name` from the first endpoint that serves it; the error names every endpoint's
/// failure (the registry's own message included).
pub async fn pull(
    endpoints: &[Endpoint],
    name: &str,
    channel: Channel,
    namespace: &str,
    snapshotter: &str,
) -> Result<()> {
    let mut failures = Vec::new();
    for ep in endpoints {
        let store = Store::begin(channel.clone(), namespace, snapshotter).await?;
        let r = pull_from(ep, name, &store).await;
        store.end().await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(image = name, endpoint = %ep.host, error = format!("{e:#}"), "pull failed");
                failures.push(format!("{}: {e:#}", ep.host));
            }
        }
    }
    Err(anyhow!("{}", failures.join("; ")))
}

fn media_type(doc: &Value, fallback: &str) -> String {
    doc["mediaType"].as_str().unwrap_or(fallback).to_string()
}

fn descriptor(v: &Value) -> Result<Descriptor> {
    Ok(Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("descriptor without a digest: {v}"))?
            .to_string(),
        size: v["size"]
            .as_i64()
            .ok_or_else(|| anyhow!("descriptor without a size: {v}"))?,
        annotations: HashMap::new(),
    })
}

fn once(data: Bytes) -> impl futures_util::Stream<Item = Result<Bytes>> + Unpin {
    futures_util::stream::iter([Ok(data)])
}

async fn pull_from(ep: &Endpoint, name: &str, store: &Store) -> Result<()> {
    let accept: Vec<&str> = INDEX_TYPES.iter().chain(MANIFEST_TYPES).copied().collect();
    let (top_bytes, top_digest) = ep
        .client
        .pull_manifest_raw(&ep.reference, &ep.auth, &accept)
        .await
        .with_context(|| format!("fetching the manifest of {}", ep.reference.whole()))?;
    let top: Value = serde_json::from_slice(&top_bytes).context("manifest: not JSON")?;
    let is_index = top["manifests"].is_array();
    let top_type = media_type(
        &top,
        if is_index {
            INDEX_TYPES[0]
        } else {
            MANIFEST_TYPES[0]
        },
    );
    let (manifest_bytes, manifest_digest, manifest) = if is_index {
        let arch = host_arch();
        let entry = top["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .ok_or_else(|| anyhow!("no manifest for linux/{arch} in the image index"))?;
        let d = descriptor(entry)?;
        let by_digest = ep.reference.clone_with_digest(d.digest.clone());
        let (bytes, digest) = ep
            .client
            .pull_manifest_raw(&by_digest, &ep.auth, MANIFEST_TYPES)
            .await
            .with_context(|| format!("fetching manifest {}", d.digest))?;
        let m: Value = serde_json::from_slice(&bytes).context("manifest: not JSON")?;
        (bytes, digest, m)
    } else {
        (top_bytes.clone(), top_digest.clone(), top.clone())
    };
    let manifest_type = media_type(&manifest, MANIFEST_TYPES[0]);

    let config_desc = descriptor(&manifest["config"]).context("manifest config")?;
    let layers: Vec<Descriptor> = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest {manifest_digest} has no layers"))?
        .iter()
        .map(descriptor)
        .collect::<Result<_>>()?;

    // The config first: its diff IDs name the snapshots the layers become.
    let mut config_bytes = Vec::new();
    let mut s = ep
        .client
        .pull_blob_stream(&ep.reference, config_desc.digest.as_str())
        .await
        .with_context(|| format!("fetching config {}", config_desc.digest))?
        .stream;
    while let Some(chunk) = s.next().await {
        config_bytes.extend_from_slice(&chunk.context("reading the config")?);
    }
    let config: Value = serde_json::from_slice(&config_bytes).context("image config: not JSON")?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(String::from))
        .collect();
    anyhow::ensure!(
        diff_ids.len() == layers.len(),
        "image config lists {} layers, the manifest {}",
        diff_ids.len(),
        layers.len()
    );
    let refs: Vec<&str> = diff_ids.iter().map(String::as_str).collect();
    let top_chain = chain_id(&refs);

    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let labels = HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.clone())]);
        if store.has(&layer.digest).await? {
            continue;
        }
        let blob = ep
            .client
            .pull_blob_stream(&ep.reference, layer.digest.as_str())
            .await
            .with_context(|| format!("fetching layer {}", layer.digest))?;
        let stream = blob
            .stream
            .map(|r| r.map_err(|e| anyhow!("reading the layer: {e}")));
        store
            .write(&layer.digest, layer.size, &labels, stream)
            .await?;
    }
    let config_labels = HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{}", store.snapshotter),
        top_chain.clone(),
    )]);
    write_or_label(
        store,
        &config_desc.digest,
        &config_labels,
        Bytes::from(config_bytes),
    )
    .await?;

    // Layers into snapshots, each on its parent chain.
    let mut parent = String::new();
    for (i, (layer, diff_id)) in layers.iter().zip(&diff_ids).enumerate() {
        let chain = chain_id(&refs[..=i]);
        if !store.has_snapshot(&chain).await? {
            store.unpack_layer(layer, &parent, &chain, diff_id).await?;
        }
        parent = chain;
    }

    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config_desc.digest.clone(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    write_or_label(
        store,
        &manifest_digest,
        &manifest_labels,
        manifest_bytes.clone(),
    )
    .await?;
    let target = if is_index {
        let labels = HashMap::from([(
            "containerd.io/gc.ref.content.m.0".to_string(),
            manifest_digest.clone(),
        )]);
        write_or_label(store, &top_digest, &labels, top_bytes.clone()).await?;
        Descriptor {
            media_type: top_type,
            digest: top_digest,
            size: top_bytes.len() as i64,
            annotations: HashMap::new(),
        }
    } else {
        Descriptor {
            media_type: manifest_type,
            digest: manifest_digest,
            size: manifest_bytes.len() as i64,
            annotations: HashMap::new(),
        }
    };
    store.set_image(name, target).await
}

async fn write_or_label(
    store: &Store,
    digest: &str,
    labels: &HashMap<String, String>,
    data: Bytes,
) -> Result<()> {
    if store.has(digest).await? {
        store.label(digest, labels).await
    } else {
        let size = data.len() as i64;
        store.write(digest, size, labels, once(data)).await
    }
}
