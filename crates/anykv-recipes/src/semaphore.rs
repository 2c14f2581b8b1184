//! A counting semaphore of N permits: [`Semaphore`].
//!
//! # How it works
//!
//! Semaphore `name` with `permits` permits lives under `{prefix}/{name}`
//! (prefix `semaphores`):
//!
//! - `slots/{i}`, for `i` in `0..permits`: a held permit, bound to its
//!   holder's lease. There are only `permits` slot keys, so there can never
//!   be more holders than permits.
//! - `waiters/{id}`: a client waiting in [`Semaphore::acquire`], bound to
//!   its lease, queued in the order of their creation revisions.
//!
//! A permit is taken with one transaction: *slot `i` is absent* (and, for
//! a waiter, *my waiter key is still there*) ⇒ put slot `i` bound to my
//! lease (and delete my waiter key). Two clients racing for one slot
//! cannot both succeed.
//!
//! [`Semaphore::acquire`] joins the waiters' queue. Only the oldest waiter
//! looks at the slots, waiting with a watch for one to be freed; every
//! other waiter watches only the waiter just ahead of it and wakes when
//! that one takes a permit or leaves: no polling, and a freed permit wakes
//! one client, not all of them. Waiters are served in arrival order;
//! [`Semaphore::try_acquire`] does not queue and may take a free permit
//! ahead of waiters (as `tryAcquire` does in Java).
//!
//! # When a permit ends
//!
//! A permit lives as long as its lease: [`Permit::release`] (or dropping
//! the permit) revokes it, and a holder that crashes, or whose store is
//! closed, or whose lease cannot be kept alive, loses it, so the slot is
//! freed within the lease's TTL and the next waiter takes it.
//! [`Permit::lost`] completes when the lease is lost or the slot key is
//! deleted or taken over; the holder must stop using the resource then.
//! Every client of one semaphore must use the same number of permits.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{Semaphore, SemaphoreOptions};
//! let store = anykv_memory::MemoryStore::new().into_dyn();
//! let downloads = Semaphore::new(store, "downloads", 2, SemaphoreOptions::new())?;
//! let a = downloads.acquire().await?;
//! let b = downloads.acquire().await?;
//! assert_ne!(a.slot(), b.slot());
//! assert!(downloads.try_acquire().await?.is_none()); // both permits are held
//! assert_eq!(downloads.holders().await?, 2);
//! a.release().await?;
//! let c = downloads.try_acquire().await?.expect("a permit was freed");
//! assert!(!c.is_lost());
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    lost_signal, Bytes, Compare, Error, ErrorKind, KvPair, Lease, LostSignal, LostTrigger,
    PutOptions, Result, Store, Txn, TxnOp, WatchEvent, WatchOptions,
};
use futures::StreamExt;

use crate::election::{monitor, wait_gone};
use crate::util::{
    check_segment, is_permanent, join, json_error, pause, random_id, require, Backoff, TaskGuard,
};

/// Options of a [`Semaphore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreOptions {
    /// Where semaphores live: semaphore `name` is under `{prefix}/{name}`.
    /// Default `semaphores`.
    pub prefix: String,
    /// The TTL of a holder's (or waiter's) lease, raised to the backend's
    /// `min_ttl`: a holder that dies frees its permit this long after its
    /// last keep-alive. Default 10 s.
    pub ttl: Duration,
    /// Delays between attempts while the backend is unreachable.
    pub backoff: Backoff,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for SemaphoreOptions {
    fn default() -> Self {
        SemaphoreOptions {
            prefix: "semaphores".into(),
            ttl: Duration::from_secs(10),
            backoff: Backoff::default(),
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl SemaphoreOptions {
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

/// A counting semaphore; see the [module](self).
#[derive(Clone)]
pub struct Semaphore {
    store: Arc<dyn Store>,
    slots: String,
    waiters: String,
    permits: usize,
    options: SemaphoreOptions,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("store", &self.store)
            .field("slots", &self.slots)
            .field("permits", &self.permits)
            .finish()
    }
}

/// The slot index of a slot key, if it is one of `0..permits`.
fn slot_index(pair: &KvPair, permits: usize) -> Option<usize> {
    let i: usize = pair.key.rsplit('/').next()?.parse().ok()?;
    (i < permits).then_some(i)
}

impl Semaphore {
    /// The semaphore `name` (one key segment) with `permits` permits (at
    /// least 1, at most 10 000) on `store`.
    pub fn new(
        store: Arc<dyn Store>,
        name: &str,
        permits: usize,
        options: SemaphoreOptions,
    ) -> Result<Semaphore> {
        check_segment("semaphore name", name)?;
        if !(1..=10_000).contains(&permits) {
            return Err(Error::InvalidArgument(format!(
                "a semaphore needs 1 to 10000 permits, not {permits}"
            )));
        }
        let prefix = anykv_core::key::normalize_prefix(&options.prefix)?;
        let dir = join(&prefix, name);
        Ok(Semaphore {
            store,
            slots: join(&dir, "slots"),
            waiters: join(&dir, "waiters"),
            permits,
            options,
        })
    }

    /// The number of permits.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// How many permits are held right now.
    pub async fn holders(&self) -> Result<usize> {
        let slots = self.store.list(&self.slots).await?;
        Ok(slots
            .iter()
            .filter(|p| slot_index(p, self.permits).is_some())
            .count())
    }

    async fn grant(&self) -> Result<Lease> {
        let ttl = self.options.ttl.max(self.store.capabilities().min_ttl);
        self.store.grant_lease(ttl).await
    }

    /// The first free slot, if any.
    async fn free_slots(&self) -> Result<Vec<usize>> {
        let held: HashSet<usize> = self
            .store
            .list(&self.slots)
            .await?
            .iter()
            .filter_map(|p| slot_index(p, self.permits))
            .collect();
        Ok((0..self.permits).filter(|i| !held.contains(i)).collect())
    }

    /// Takes a free permit now, or returns `None` when all are held. Does
    /// not wait behind the clients waiting in [`Semaphore::acquire`].
    pub async fn try_acquire(&self) -> Result<Option<Permit>> {
        require(self.store.as_ref(), "semaphore try_acquire", true)?;
        let free = self.free_slots().await?;
        if free.is_empty() {
            return Ok(None);
        }
        let lease = self.grant().await?;
        let id = random_id();
        let body = record(&id)?;
        for slot in free {
            let key = join(&self.slots, &slot.to_string());
            let txn = Txn::new()
                .when(Compare::absent(key.clone()))
                .then(TxnOp::put_with(
                    key.clone(),
                    body.clone(),
                    PutOptions::new().with_lease(lease.id()),
                ));
            if self.store.txn(txn).await?.succeeded {
                return Ok(Some(self.permit(lease, id, slot, key)));
            }
        }
        // Taken by others meanwhile; dropping the lease revokes it.
        Ok(None)
    }

    /// Waits for a permit, in arrival order behind the other waiters (wrap
    /// it in a timeout to bound the wait; dropping the future leaves the
    /// queue). Retries with backoff while the backend is unreachable; fails
    /// on errors no retry can mend (a backend without transactions, leases
    /// or watches, a closed store).
    pub async fn acquire(&self) -> Result<Permit> {
        require(self.store.as_ref(), "semaphore acquire", true)?;
        let mut attempt = 0u32;
        loop {
            #[cfg(test)]
            if self.options.flaw == Some(crate::util::Flaw::SemaphoreWithoutTxn) {
                return self.acquire_without_txn().await;
            }
            match self.try_wait().await {
                Ok(Some(permit)) => return Ok(permit),
                // The wait ended without a permit (lease lost, waiter key
                // gone): queue again.
                Ok(None) => pause(self.options.backoff.delay(0)).await,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("acquiring {}: {e}; retrying", self.slots);
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// The broken variant: counts the free slots, then takes one with a
    /// plain put, without a transaction (the yield stands for a network
    /// round trip).
    #[cfg(test)]
    async fn acquire_without_txn(&self) -> Result<Permit> {
        loop {
            if let Some(&slot) = self.free_slots().await?.first() {
                tokio::task::yield_now().await;
                let lease = self.grant().await?;
                let id = random_id();
                let key = join(&self.slots, &slot.to_string());
                let put = PutOptions::new().with_lease(lease.id());
                self.store.put(&key, record(&id)?, put).await?;
                return Ok(self.permit(lease, id, slot, key));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One turn in the waiters' queue: `None` if it ended (lease lost,
    /// waiter key gone) before a permit was taken.
    async fn try_wait(&self) -> Result<Option<Permit>> {
        let store = &self.store;
        let lease = self.grant().await?;
        let id = random_id();
        let waiter = join(&self.waiters, &id);
        let put = PutOptions::new().with_lease(lease.id());
        let position = store
            .atomic_put(&waiter, Bytes::new(), None, put.clone())
            .await?;
        let body = record(&id)?;
        let mut attempt = 0u32;
        loop {
            if lease.is_lost() {
                return Ok(None);
            }
            let step = async {
                let mut queue = store.list(&self.waiters).await?;
                queue.sort_by_key(|p| p.revision);
                if !queue.iter().any(|p| p.key == waiter) {
                    return Ok(Step::Gone);
                }
                if let Some(ahead) = queue.iter().rev().find(|p| p.revision < position) {
                    wait_gone(store.as_ref(), &ahead.key).await?;
                    return Ok(Step::Again);
                }
                // The oldest waiter: take a free slot, or wait for one.
                let Some(&slot) = self.free_slots().await?.first() else {
                    self.wait_slot_freed().await?;
                    return Ok(Step::Again);
                };
                let key = join(&self.slots, &slot.to_string());
                let txn = Txn::new()
                    .when(Compare::absent(key.clone()))
                    .when(Compare::revision(waiter.clone(), position))
                    .then(TxnOp::put_with(key.clone(), body.clone(), put.clone()))
                    .then(TxnOp::delete(waiter.clone()));
                let response = store.txn(txn).await?;
                if response.succeeded {
                    Ok(Step::Took(slot, key))
                } else if response.failed_compare == Some(1) {
                    Ok(Step::Gone)
                } else {
                    Ok(Step::Again)
                }
            };
            let outcome: Result<Step> = tokio::select! {
                outcome = step => outcome,
                () = lease.lost() => return Ok(None),
            };
            match outcome {
                Ok(Step::Took(slot, key)) => return Ok(Some(self.permit(lease, id, slot, key))),
                Ok(Step::Gone) => return Ok(None),
                Ok(Step::Again) => attempt = 0,
                // The lease went between two looks: queue again.
                Err(e) if e.kind() == ErrorKind::LeaseLost => return Ok(None),
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("waiting in {}: {e}; retrying", self.waiters);
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Waits until fewer than `permits` slots are held (with a watch on
    /// the slots).
    async fn wait_slot_freed(&self) -> Result<()> {
        let mut watch = self
            .store
            .watch_tree(&self.slots, WatchOptions::new())
            .await?;
        let mut held = HashSet::new();
        let mut synced = false;
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(pair))) => {
                    if let Some(i) = slot_index(&pair, self.permits) {
                        held.insert(i);
                    }
                }
                Some(Ok(WatchEvent::Delete { .. })) if synced => return Ok(()),
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    held.retain(|i| join(&self.slots, &i.to_string()) != key);
                }
                Some(Ok(WatchEvent::Synced { .. })) => {
                    synced = true;
                    if held.len() < self.permits {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }

    fn permit(&self, lease: Lease, id: String, slot: usize, key: String) -> Permit {
        let (trigger, lost) = lost_signal();
        let monitor = tokio::spawn(monitor(
            self.store.clone(),
            key.clone(),
            lease.lost_signal(),
            trigger.clone(),
        ));
        Permit {
            id,
            slot,
            key,
            lease: Some(lease),
            trigger,
            lost,
            _monitor: TaskGuard(monitor),
        }
    }
}

enum Step {
    Took(usize, String),
    Gone,
    Again,
}

fn record(id: &str) -> Result<Bytes> {
    serde_json::to_vec(&serde_json::json!({ "holder": id }))
        .map(Bytes::from)
        .map_err(json_error)
}

/// A held permit of a [`Semaphore`]. Releasing or dropping it frees the
/// permit (dropping does so in the background); [`Permit::lost`] says when
/// it ended otherwise.
#[must_use = "dropping a permit releases it at once"]
pub struct Permit {
    id: String,
    slot: usize,
    key: String,
    lease: Option<Lease>,
    trigger: LostTrigger,
    lost: LostSignal,
    _monitor: TaskGuard,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.key)
            .field("slot", &self.slot)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Permit {
    /// The slot held, in `0..permits`.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The slot's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder's id, as the slot's record (`{"holder": id}`) says.
    pub fn holder(&self) -> &str {
        &self.id
    }

    /// Completes when the permit has ended: the lease was lost (the holder
    /// could not keep it alive, its store closed), the slot key was deleted
    /// or taken over, or it was released.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lost.wait()
    }

    /// Whether the permit has ended.
    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// A loss signal that outlives this handle.
    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    /// Frees the permit: the loss signal fires, then the lease is revoked,
    /// which deletes the slot key and lets the next waiter take it.
    pub async fn release(mut self) -> Result<()> {
        self.trigger.fire();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Before the lease (a field) is dropped and revoked.
        self.trigger.fire();
    }
}
