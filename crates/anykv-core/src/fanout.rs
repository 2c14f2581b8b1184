//! A bounded event channel per watch, for backends that fan one change feed
//! out to many watches.
//!
//! The feed side holds an [`EventSender`] per watch and never blocks: when a
//! watch's buffer is full the sender marks it lagged and reports it
//! [`Gone`], and the backend drops it. The watch side turns the
//! [`EventReceiver`] into a [`WatchStream`] that first yields the watch's
//! initial events, then what the feed sent, then, if the watch lagged,
//! [`Error::WatchLagged`]; an error sent by the feed is yielded and ends the
//! stream. A guard given to the stream is dropped with it, which is where a
//! backend unregisters the watch.
//!
//! ```
//! use anykv_core::fanout::event_channel;
//! use anykv_core::{KvPair, WatchEvent};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, rx) = event_channel("doc", 1);
//! let mut stream = rx.into_stream(vec![WatchEvent::Synced { revision: 1 }], ());
//! tx.send(Ok(WatchEvent::Put(KvPair::new("k", "v", 2)))).unwrap();
//! assert!(tx.send(Ok(WatchEvent::Put(KvPair::new("k", "w", 3)))).is_err()); // full
//! drop(tx);
//! assert!(matches!(stream.next().await, Some(Ok(WatchEvent::Synced { .. }))));
//! assert!(matches!(stream.next().await, Some(Ok(WatchEvent::Put(_)))));
//! assert!(matches!(stream.next().await, Some(Err(anykv_core::Error::WatchLagged { .. }))));
//! assert!(stream.next().await.is_none());
//! # }
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::types::{WatchEvent, WatchStream};

/// The feed side of one watch's channel.
#[derive(Debug)]
pub struct EventSender {
    tx: mpsc::Sender<Result<WatchEvent>>,
    lagged: Arc<AtomicBool>,
}

/// The watch behind an [`EventSender`] is gone: its consumer dropped the
/// stream, or fell behind and will get [`Error::WatchLagged`]. Drop the
/// sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// The watch side of one watch's channel.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<Result<WatchEvent>>,
    lagged: Arc<AtomicBool>,
    backend: &'static str,
    buffer: usize,
}

/// A channel holding at most `buffer` events (at least 1) for one watch of
/// `backend`.
pub fn event_channel(backend: &'static str, buffer: usize) -> (EventSender, EventReceiver) {
    let buffer = buffer.clamp(1, crate::MAX_WATCH_BUFFER);
    let (tx, rx) = mpsc::channel(buffer);
    let lagged = Arc::new(AtomicBool::new(false));
    (
        EventSender {
            tx,
            lagged: lagged.clone(),
        },
        EventReceiver {
            rx,
            lagged,
            backend,
            buffer,
        },
    )
}

impl EventSender {
    /// Queues an event (or an error that ends the stream) without waiting.
    /// A full buffer marks the watch lagged; either way [`Gone`] means the
    /// sender should be dropped.
    pub fn send(&self, event: Result<WatchEvent>) -> std::result::Result<(), Gone> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::SeqCst);
                Err(Gone)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }

    /// Whether the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl EventReceiver {
    /// The watch's stream: `initial` first, then what the feed sends.
    /// `guard` is dropped when the stream is.
    pub fn into_stream<G: Send + 'static>(self, initial: Vec<WatchEvent>, guard: G) -> WatchStream {
        Box::pin(EventStream {
            initial: initial.into_iter(),
            rx: self.rx,
            lagged: self.lagged,
            backend: self.backend,
            buffer: self.buffer,
            done: false,
            _guard: guard,
        })
    }
}

struct EventStream<G> {
    initial: std::vec::IntoIter<WatchEvent>,
    rx: mpsc::Receiver<Result<WatchEvent>>,
    lagged: Arc<AtomicBool>,
    backend: &'static str,
    buffer: usize,
    done: bool,
    _guard: G,
}

impl<G> Unpin for EventStream<G> {}

impl<G> Stream for EventStream<G> {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(ev) = this.initial.next() {
            return Poll::Ready(Some(Ok(ev)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(ev))) => Poll::Ready(Some(Ok(ev))),
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.lagged.load(Ordering::SeqCst) {
                    Poll::Ready(Some(Err(Error::WatchLagged {
                        backend: this.backend,
                        buffer: this.buffer,
                    })))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
