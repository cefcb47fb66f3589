//! Watches: one etcd watch stream per store watch, fed into the store's [`WatchStream`] by a
//! task that stops (and so cancels the etcd watch) when the stream is dropped.

use std::sync::Arc;

use futures_util::StreamExt;
use ros_etcd_api::etcdserverpb::{
    WatchCreateRequest, WatchRequest, watch_client::WatchClient, watch_request,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::members::Members;
use super::{MAX_RESPONSE, convert, describe};
use crate::{Revision, StoreError, WatchStream};

/// Events buffered between the etcd watch and the consumer.
const OUT_BUFFER: usize = 256;

/// Watches the keys under `prefix` from `from_revision + 1`, with previous values.
pub(super) async fn start(
    members: &Arc<Members>,
    prefix: &str,
    from_revision: Revision,
) -> Result<WatchStream, Status> {
    let (key, range_end) = convert::prefix_range(prefix);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                start_revision: from_revision + 1,
                prev_kv: true,
                ..Default::default()
            },
        )),
    };
    let mut stream = members
        .read(|channel| {
            // The request stream stays open after the create: closing it would end the watch.
            let requests = futures_util::stream::once(std::future::ready(create.clone()))
                .chain(futures_util::stream::pending());
            async move {
                WatchClient::new(channel)
                    .max_decoding_message_size(MAX_RESPONSE)
                    .watch(requests)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await?;
    // The member that answered (read stops at the first that does).
    let member = members.current().0;
    let members = Arc::clone(members);
    let (tx, rx) = mpsc::channel(OUT_BUFFER);
    let task = tokio::spawn(async move {
        let fail = |tx: mpsc::Sender<_>, e| async move {
            let _ = tx.send(Err(e)).await;
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return fail(tx, StoreError::Other("etcd watch ended".into())).await;
                }
                Err(status) => {
                    // The consumer watches again; let that go to another member if this one
                    // is gone.
                    members.failed(member, &status);
                    let err = StoreError::Other(format!("etcd watch: {}", describe(&status)));
                    return fail(tx, err).await;
                }
            };
            if resp.canceled {
                let err = if resp.compact_revision > 0 {
                    StoreError::Compacted {
                        compacted: resp.compact_revision,
                    }
                } else {
                    StoreError::Other(format!("etcd watch canceled: {}", resp.cancel_reason))
                };
                return fail(tx, err).await;
            }
            for event in resp.events {
                let converted = convert::event(event);
                let failed = converted.is_err();
                if tx.send(converted).await.is_err() || failed {
                    return;
                }
            }
        }
    });
    Ok(WatchStream::new(rx, Some(task.abort_handle())))
}
