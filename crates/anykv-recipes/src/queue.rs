//! A FIFO work queue under a prefix: [`Queue`].
//!
//! # How it works
//!
//! A queue `name` lives under `{prefix}/{name}` (prefix `queues`):
//!
//! - `tail` holds the sequence number of the last item pushed (decimal).
//! - `items/{seq}` holds one item, `seq` written as 20 decimal digits, so
//!   the keys sort in push order and the oldest item is the first key.
//!
//! [`Queue::push`] reads `tail` and, in one transaction that holds only if
//! `tail` is still at the revision read, writes `tail + 1` and the item
//! `items/{tail + 1}`. Pushes are thus numbered without gaps or
//! duplicates, in the order they happened; a push that loses a race to
//! another producer reads again and retries.
//!
//! [`Queue::claim`] reads the first few items and takes the oldest with a
//! transaction that deletes it only if it is still at the revision read:
//! of any number of consumers racing for one item, exactly one transaction
//! holds, and that consumer alone gets the item. The others go on to the
//! next item. An item is delivered to exactly one consumer, at most once:
//! a consumer that dies after claiming an item loses it (push it again to
//! retry the work). [`Queue::claim_wait`] waits for an item with a watch
//! on `items` when the queue is empty: no polling. Every waiting consumer
//! wakes on a push; one gets the item and the others wait again.
//!
//! A push or claim that fails with `Timeout` or `Unavailable` may or may
//! not have been applied.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{Queue, QueueOptions};
//! let producer = anykv_memory::MemoryStore::open_url("memory://docs-queue")?.into_dyn();
//! let consumer = anykv_memory::MemoryStore::open_url("memory://docs-queue")?.into_dyn();
//! let jobs = Queue::new(producer, "jobs", QueueOptions::new())?;
//! assert_eq!(jobs.push("resize 1.png").await?, 1);
//! assert_eq!(jobs.push("resize 2.png").await?, 2);
//! assert_eq!(jobs.len().await?, 2);
//!
//! let worker = Queue::new(consumer, "jobs", QueueOptions::new())?;
//! let first = worker.claim().await?.expect("an item");
//! assert_eq!((first.seq, first.value.as_ref()), (1, &b"resize 1.png"[..]));
//! let second = worker.claim_wait().await?; // waits (with a watch) when empty
//! assert_eq!(second.seq, 2);
//! assert_eq!(worker.claim().await?, None);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use anykv_core::{
    Bytes, Compare, Error, ErrorKind, ListOptions, Result, Store, Txn, TxnOp, WatchEvent,
    WatchOptions,
};
use futures::StreamExt;

use crate::util::{check_segment, is_permanent, join, pause, race_backoff, require, Backoff};

/// How many items a claim reads at once: the oldest, and the next ones to
/// try when other consumers take the first.
const CLAIM_PAGE: usize = 16;

/// Options of a [`Queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueOptions {
    /// Where queues live: queue `name` is under `{prefix}/{name}`. Default
    /// `queues`.
    pub prefix: String,
    /// Delays between attempts of [`Queue::claim_wait`] while the backend
    /// is unreachable.
    pub backoff: Backoff,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            prefix: "queues".into(),
            backoff: Backoff::default(),
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl QueueOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// An item taken from a [`Queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// Its sequence number: 1 for the queue's first push, then one more
    /// per push.
    pub seq: u64,
    /// Its key (now deleted).
    pub key: String,
    /// What was pushed.
    pub value: Bytes,
    /// The revision of its push.
    pub revision: u64,
}

/// A FIFO queue; see the [module](self).
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    tail: String,
    items: String,
    options: QueueOptions,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("store", &self.store)
            .field("items", &self.items)
            .finish()
    }
}

fn parse_seq(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl Queue {
    /// The queue `name` (one key segment) on `store`.
    pub fn new(store: Arc<dyn Store>, name: &str, options: QueueOptions) -> Result<Queue> {
        check_segment("queue name", name)?;
        let prefix = anykv_core::key::normalize_prefix(&options.prefix)?;
        let dir = join(&prefix, name);
        Ok(Queue {
            store,
            tail: join(&dir, "tail"),
            items: join(&dir, "items"),
            options,
        })
    }

    /// Appends `value` and returns its sequence number.
    pub async fn push(&self, value: impl Into<Bytes>) -> Result<u64> {
        require(self.store.as_ref(), "queue push", false)?;
        let value = value.into();
        let mut attempt = 0u32;
        loop {
            let tail = self.store.get(&self.tail).await?;
            let (last, compare) = match &tail {
                Some(pair) => {
                    let last = parse_seq(&pair.value).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "the queue's tail {:?} does not hold a sequence number",
                            self.tail
                        ))
                    })?;
                    (last, Compare::revision(self.tail.clone(), pair.revision))
                }
                None => (0, Compare::absent(self.tail.clone())),
            };
            let seq = last + 1;
            let txn = Txn::new()
                .when(compare)
                .then(TxnOp::put(self.tail.clone(), seq.to_string()))
                .then(TxnOp::put(self.item_key(seq), value.clone()));
            if self.store.txn(txn).await?.succeeded {
                return Ok(seq);
            }
            pause(race_backoff().delay(attempt)).await;
            attempt = attempt.saturating_add(1).min(6);
        }
    }

    fn item_key(&self, seq: u64) -> String {
        join(&self.items, &format!("{seq:020}"))
    }

    /// Takes the oldest item, or `None` when the queue is empty. Of several
    /// consumers claiming at once, each item goes to exactly one.
    pub async fn claim(&self) -> Result<Option<QueueItem>> {
        require(self.store.as_ref(), "queue claim", false)?;
        loop {
            let page = self
                .store
                .list_with(&self.items, ListOptions::new().with_limit(CLAIM_PAGE))
                .await?;
            if page.is_empty() {
                return Ok(None);
            }
            for pair in page {
                let Some(seq) = pair.key.rsplit('/').next().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                #[cfg(test)]
                if self.options.flaw == Some(crate::util::Flaw::QueueClaimWithoutCompare) {
                    // The broken variant: read, then delete without a
                    // compare (the yield stands for a network round trip).
                    tokio::task::yield_now().await;
                    self.store.delete(&pair.key).await?;
                    return Ok(Some(QueueItem {
                        seq,
                        key: pair.key,
                        value: pair.value,
                        revision: pair.revision,
                    }));
                }
                let txn = Txn::new()
                    .when(Compare::revision(pair.key.clone(), pair.revision))
                    .then(TxnOp::delete(pair.key.clone()));
                if self.store.txn(txn).await?.succeeded {
                    return Ok(Some(QueueItem {
                        seq,
                        key: pair.key,
                        value: pair.value,
                        revision: pair.revision,
                    }));
                }
                // Another consumer took it: on to the next one.
            }
        }
    }

    /// Takes the oldest item, waiting (with a watch, no polling) until
    /// there is one. Retries with backoff while the backend is
    /// unreachable; fails on errors no retry can mend. Dropping the future
    /// stops waiting (an item is taken only when it resolves).
    pub async fn claim_wait(&self) -> Result<QueueItem> {
        let mut attempt = 0u32;
        loop {
            let step = async {
                if let Some(item) = self.claim().await? {
                    return Ok(Some(item));
                }
                self.wait_for_item().await.map(|()| None)
            };
            match step.await {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => attempt = 0,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("claiming from {}: {e}; retrying", self.items);
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Waits until an item is present (one that already is counts).
    async fn wait_for_item(&self) -> Result<()> {
        let mut watch = self
            .store
            .watch_tree(&self.items, WatchOptions::new())
            .await?;
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) if e.kind() == ErrorKind::Compacted => return Ok(()),
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// How many items wait in the queue.
    pub async fn len(&self) -> Result<usize> {
        let items = self
            .store
            .list_with(&self.items, ListOptions::new().keys_only())
            .await?;
        Ok(items.len())
    }

    /// Whether the queue is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        let first = self
            .store
            .list_with(&self.items, ListOptions::new().keys_only().with_limit(1))
            .await?;
        Ok(first.is_empty())
    }
}
