//! The stream a watch returns: an mpsc receiver fed by a backend task, which stops when the
//! stream is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::{StoreError, WatchEvent};

/// Events of one watch, in revision order. Ends with `Err(..)` (then `None`) if the watch
/// cannot continue, e.g. [`StoreError::Compacted`]. Dropping it cancels the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    _cancel_on_drop: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WatchStream {
    /// A stream reading from `rx`; `feeder` (the task sending into it) is aborted on drop.
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<WatchEvent, StoreError>>,
        feeder: Option<tokio::task::AbortHandle>,
    ) -> Self {
        WatchStream {
            rx,
            _cancel_on_drop: feeder.map(AbortOnDrop),
        }
    }

    /// The next event; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
