//! A double barrier: [`DoubleBarrier`]. Participants enter together once
//! `count` of them have arrived, and leave together once all have left,
//! as ZooKeeper's and etcd's double barrier recipes do.
//!
//! # How it works
//!
//! Barrier `name` lives under `{prefix}/{name}` (prefix `barriers`):
//!
//! - `members/{id}`: one key per participant that entered, bound to its
//!   lease.
//! - `ready`: written when `count` participants have entered; its value is
//!   a random round id.
//!
//! [`DoubleBarrier::enter`] writes the participant's member key, then
//! watches the barrier. It passes when a `ready` key written after its own
//! member key appears, or when it sees `count` members itself: then it
//! writes `ready` with a transaction that holds only if `ready` is still as
//! it saw it (absent, or a previous round's), so one round gets one `ready`.
//! A `ready` left from an earlier round (older than the member key) does
//! not count.
//!
//! [`BarrierEntry::leave`] deletes the member key and waits, with a watch,
//! until no member key is left; then it deletes this round's `ready` (a
//! transaction on `ready`'s value, so it never deletes a later round's) and
//! revokes its lease.
//!
//! # Participants that die
//!
//! Member keys live as long as their leases. A participant that dies before
//! the barrier is full leaves it within its lease's TTL: the others go on
//! waiting until `count` live participants have entered (someone must take
//! its place). A participant that dies after entering does not hold up the
//! others' `leave`: its key vanishes within the TTL and `leave` completes.
//! Use one barrier name for one round at a time: start the next round
//! after every participant's `leave` has returned.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{BarrierOptions, DoubleBarrier};
//! let store = anykv_memory::MemoryStore::new().into_dyn();
//! let barrier = DoubleBarrier::new(store, "batch-7", 2, BarrierOptions::new())?;
//! let other = barrier.clone();
//! let worker = tokio::spawn(async move {
//!     let entry = other.enter().await?; // waits for the second participant
//!     entry.leave().await // waits until both have left
//! });
//! let entry = barrier.enter().await?;
//! // ... both work on the batch ...
//! entry.leave().await?;
//! worker.await.expect("the worker")?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    Bytes, Compare, Error, ErrorKind, KvPair, Lease, PutOptions, Result, Store, Txn, TxnOp,
    WatchEvent, WatchOptions,
};
use futures::StreamExt;

use crate::util::{check_segment, is_permanent, join, pause, random_id, require, Backoff};

/// Options of a [`DoubleBarrier`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BarrierOptions {
    /// Where barriers live: barrier `name` is under `{prefix}/{name}`.
    /// Default `barriers`.
    pub prefix: String,
    /// The TTL of a participant's lease, raised to the backend's `min_ttl`:
    /// a participant that dies leaves the barrier this long after its last
    /// keep-alive. Default 10 s.
    pub ttl: Duration,
    /// Delays between attempts while the backend is unreachable.
    pub backoff: Backoff,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for BarrierOptions {
    fn default() -> Self {
        BarrierOptions {
            prefix: "barriers".into(),
            ttl: Duration::from_secs(10),
            backoff: Backoff::default(),
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl BarrierOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// A double barrier for `count` participants; see the [module](self).
#[derive(Clone)]
pub struct DoubleBarrier {
    store: Arc<dyn Store>,
    members: String,
    ready: String,
    count: usize,
    options: BarrierOptions,
}

impl fmt::Debug for DoubleBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoubleBarrier")
            .field("store", &self.store)
            .field("members", &self.members)
            .field("count", &self.count)
            .finish()
    }
}

/// What a watch on the barrier shows.
#[derive(Default)]
struct View {
    members: HashSet<String>,
    ready: Option<KvPair>,
    synced: bool,
}

impl DoubleBarrier {
    /// The barrier `name` (one key segment) for `count` participants (at
    /// least 1) on `store`.
    pub fn new(
        store: Arc<dyn Store>,
        name: &str,
        count: usize,
        options: BarrierOptions,
    ) -> Result<DoubleBarrier> {
        check_segment("barrier name", name)?;
        if count == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one participant".into(),
            ));
        }
        let prefix = anykv_core::key::normalize_prefix(&options.prefix)?;
        let dir = join(&prefix, name);
        Ok(DoubleBarrier {
            store,
            members: join(&dir, "members"),
            ready: join(&dir, "ready"),
            count,
            options,
        })
    }

    /// The number of participants the barrier waits for.
    pub fn count(&self) -> usize {
        self.count
    }

    fn threshold(&self) -> usize {
        #[cfg(test)]
        if self.options.flaw == Some(crate::util::Flaw::BarrierPassesEarly) {
            return self.count.saturating_sub(1).max(1);
        }
        self.count
    }

    /// Enters the barrier and waits until `count` participants have
    /// entered (wrap it in a timeout to bound the wait; dropping the future
    /// leaves the barrier). Retries with backoff while the backend is
    /// unreachable; fails on errors no retry can mend, and with `LeaseLost`
    /// if the participant's lease is lost while it waits.
    pub async fn enter(&self) -> Result<BarrierEntry> {
        require(self.store.as_ref(), "barrier enter", true)?;
        let ttl = self.options.ttl.max(self.store.capabilities().min_ttl);
        let lease = self.store.grant_lease(ttl).await?;
        let put = PutOptions::new().with_lease(lease.id());
        let (key, entered) = loop {
            let key = join(&self.members, &random_id());
            match self
                .store
                .atomic_put(&key, Bytes::new(), None, put.clone())
                .await
            {
                Ok(revision) => break (key, revision),
                Err(e) if e.kind() == ErrorKind::KeyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut attempt = 0u32;
        let round = loop {
            let outcome = tokio::select! {
                outcome = self.wait_ready(entered) => outcome,
                () = lease.lost() => return Err(Error::LeaseLost {
                    backend: self.store.capabilities().backend,
                    lease: lease.id().0,
                }),
            };
            match outcome {
                Ok(round) => break round,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("entering {}: {e}; retrying", self.members);
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        };
        Ok(BarrierEntry {
            store: self.store.clone(),
            members: self.members.clone(),
            ready: self.ready.clone(),
            key,
            round,
            lease: Some(lease),
            backoff: self.options.backoff,
        })
    }

    /// Watches the barrier until this round's `ready` exists (writing it
    /// when the members are enough); returns the round id.
    async fn wait_ready(&self, entered: u64) -> Result<Bytes> {
        let dir_members = format!("{}/", self.members);
        let parent = match self.ready.rsplit_once('/') {
            Some((parent, _)) => parent.to_owned(),
            None => String::new(),
        };
        let mut watch = self.store.watch_tree(&parent, WatchOptions::new()).await?;
        let mut view = View::default();
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(pair))) => {
                    if pair.key == self.ready {
                        view.ready = Some(pair);
                    } else if pair.key.starts_with(&dir_members) {
                        view.members.insert(pair.key);
                    }
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    if key == self.ready {
                        view.ready = None;
                    } else {
                        view.members.remove(&key);
                    }
                }
                Some(Ok(WatchEvent::Synced { .. })) => view.synced = true,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Unavailable {
                        backend: self.store.capabilities().backend,
                        message: "the barrier's watch ended".into(),
                        source: None,
                    })
                }
            }
            if !view.synced {
                continue;
            }
            if let Some(ready) = view.ready.as_ref().filter(|r| r.revision > entered) {
                return Ok(ready.value.clone());
            }
            if view.members.len() >= self.threshold() {
                let round = Bytes::from(random_id());
                let compare = match &view.ready {
                    Some(old) => Compare::revision(self.ready.clone(), old.revision),
                    None => Compare::absent(self.ready.clone()),
                };
                let txn = Txn::new()
                    .when(compare)
                    .then(TxnOp::put(self.ready.clone(), round.clone()));
                if self.store.txn(txn).await?.succeeded {
                    return Ok(round);
                }
                // Another participant wrote it: its put is on the way.
            }
        }
    }
}

/// A participant inside a [`DoubleBarrier`], from
/// [`DoubleBarrier::enter`]. Dropping it without [`BarrierEntry::leave`]
/// revokes its lease, which deletes its member key in the background.
#[must_use = "a participant leaves with leave(); dropping it leaves without waiting"]
pub struct BarrierEntry {
    store: Arc<dyn Store>,
    members: String,
    ready: String,
    key: String,
    round: Bytes,
    lease: Option<Lease>,
    backoff: Backoff,
}

impl fmt::Debug for BarrierEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierEntry")
            .field("key", &self.key)
            .field("round", &self.round)
            .finish()
    }
}

impl BarrierEntry {
    /// This participant's member key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The round's id (the value of `ready`).
    pub fn round(&self) -> &[u8] {
        &self.round
    }

    /// Leaves the barrier and waits until every participant has left (or
    /// died: its key vanishes with its lease). Retries with backoff while
    /// the backend is unreachable.
    pub async fn leave(mut self) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            let step = async {
                self.store.delete(&self.key).await?;
                self.wait_empty().await?;
                let txn = Txn::new()
                    .when(Compare::value(self.ready.clone(), self.round.clone()))
                    .then(TxnOp::delete(self.ready.clone()));
                self.store.txn(txn).await.map(|_| ())
            };
            match step.await {
                Ok(()) => break,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("leaving {}: {e}; retrying", self.members);
                    pause(self.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }

    /// Waits until no member key is left.
    async fn wait_empty(&self) -> Result<()> {
        let mut watch = self
            .store
            .watch_tree(&self.members, WatchOptions::new())
            .await?;
        let mut members = HashSet::new();
        let mut synced = false;
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(pair))) => {
                    members.insert(pair.key);
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    members.remove(&key);
                }
                Some(Ok(WatchEvent::Synced { .. })) => synced = true,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Unavailable {
                        backend: self.store.capabilities().backend,
                        message: "the barrier's watch ended".into(),
                        source: None,
                    })
                }
            }
            if synced && members.is_empty() {
                return Ok(());
            }
        }
    }
}
