//! Watches: history from the log, then live events from the writer's broadcast.
//!
//! Hand-off without gaps or duplicates: a watcher subscribes to the broadcast *before* it reads
//! history. A write committed before the subscription is visible to the history read (which
//! starts after it); a write committed after it arrives on the broadcast. Live events at or
//! below the last revision already delivered are skipped. If the watcher falls behind and the
//! broadcast drops events for it (`Lagged`), it subscribes again and catches up from the log.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::reader::{self, HistoryPage, Readers};
use super::writer::Committed;
use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// Events read from the log per read transaction.
const HISTORY_PAGE: usize = 1000;
/// Events buffered between the watcher task and the consumer.
const OUT_BUFFER: usize = 256;

pub(super) async fn start(
    readers: Arc<Readers>,
    hub: &broadcast::Sender<Arc<Committed>>,
    prefix: &str,
    from: Revision,
) -> Result<WatchStream, StoreError> {
    let live = hub.subscribe();
    // Read the first page here so "too old" is answered by watch() itself.
    let first = read_page(&readers, prefix, from).await?;
    let (tx, rx) = mpsc::channel(OUT_BUFFER);
    let watcher = Watcher {
        readers,
        hub: hub.downgrade(),
        prefix: prefix.to_string(),
        last: from,
        out: tx,
    };
    let task = tokio::spawn(watcher.run(live, first));
    Ok(WatchStream::new(rx, Some(task.abort_handle())))
}

async fn read_page(
    readers: &Arc<Readers>,
    prefix: &str,
    after: Revision,
) -> Result<HistoryPage, StoreError> {
    let prefix = prefix.to_string();
    readers
        .read(move |tx, snap| reader::history(tx, snap, &prefix, after, HISTORY_PAGE))
        .await
}

struct Watcher {
    readers: Arc<Readers>,
    hub: broadcast::WeakSender<Arc<Committed>>,
    prefix: String,
    /// The revision up to which everything has been delivered.
    last: Revision,
    out: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

/// Why delivery stopped.
enum Stop {
    /// The consumer dropped the stream.
    Gone,
    /// The watch cannot continue; the error has been sent.
    Failed,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Committed>>, first: HistoryPage) {
        let mut page = Some(first);
        loop {
            if self.catch_up(page.take()).await.is_err() {
                return;
            }
            match self.follow(&mut live).await {
                Ok(()) => {}
                Err(_) => return,
            }
            // Lagged: subscribe again, then catch up from the log.
            match self.hub.upgrade() {
                Some(hub) => live = hub.subscribe(),
                None => {
                    let _ = self
                        .fail::<()>(StoreError::Other("store closed".into()))
                        .await;
                    return;
                }
            }
        }
    }

    /// Delivers history after `self.last` until the log has nothing newer.
    async fn catch_up(&mut self, mut page: Option<HistoryPage>) -> Result<(), Stop> {
        loop {
            let p = match page.take() {
                Some(p) => p,
                None => match read_page(&self.readers, &self.prefix, self.last).await {
                    Ok(p) => p,
                    Err(e) => return self.fail(e).await,
                },
            };
            for event in p.events {
                self.deliver(event).await?;
            }
            self.last = self.last.max(p.scanned_to);
            if p.complete {
                return Ok(());
            }
        }
    }

    /// Delivers live events; returns `Ok(())` when the receiver lagged.
    async fn follow(&mut self, live: &mut broadcast::Receiver<Arc<Committed>>) -> Result<(), Stop> {
        loop {
            match live.recv().await {
                Ok(batch) => {
                    for event in &batch.events {
                        if event.revision() > self.last && event.kv.key.starts_with(&self.prefix) {
                            self.deliver(event.clone()).await?;
                        }
                    }
                    self.last = self.last.max(batch.revision);
                }
                Err(RecvError::Lagged(_)) => return Ok(()),
                Err(RecvError::Closed) => {
                    return self.fail(StoreError::Other("store closed".into())).await;
                }
            }
        }
    }

    async fn deliver(&mut self, event: WatchEvent) -> Result<(), Stop> {
        self.last = event.revision();
        self.out.send(Ok(event)).await.map_err(|_| Stop::Gone)
    }

    async fn fail<T>(&mut self, err: StoreError) -> Result<T, Stop> {
        let _ = self.out.send(Err(err)).await;
        Err(Stop::Failed)
    }
}
