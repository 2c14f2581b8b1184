//! The locks of an in-process backend: FIFO queues with fencing tokens.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::owner::{Hold, HoldKind, Owner, WeakOwner};
use super::root::Root;
use crate::handles::{lost_signal, LostSignal, LostTrigger, Release};
use crate::{key, Error, LockGuard, LockOptions, Result};

/// The locks of a backend whose clients share one process: one FIFO
/// queue per lock name, a release handing the lock straight to the next
/// waiter (no stampede), and a fencing token that strictly increases from
/// one holder to the next, across every lock of the table.
///
/// Everything the contract asks of a lock call is here: the options and
/// the name are checked, `try_lock` refuses a held lock at once, `lock`
/// waits at most `options.timeout` (then `Timeout`), and a `lock` future
/// dropped at any await — while queued, or in the instant the lock was
/// handed to it — leaves the queue or passes the lock on, never leaving it
/// held. Each held lock counts as a lock of its [`Owner`]; closing the
/// owner abandons its waits (so its own waiters never get a lock it
/// releases), releases its locks and fires their loss signals. Locks
/// never expire here: a holder's lease lives as long as its process.
///
/// Cloning gives another handle on the same table. Lock waits with a
/// timeout use Tokio's timer.
///
/// ```
/// use anykv_core::backend::{LockTable, Owner, Root};
/// use anykv_core::LockOptions;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// let locks = LockTable::new("mykv");
/// let (a, b) = (Owner::new("mykv"), Owner::new("mykv"));
/// let root = Root::new("app")?;
/// let held = locks.lock(&a, &root, "jobs/nightly", &LockOptions::new()).await?;
/// assert_eq!(held.key(), "jobs/nightly");
/// assert!(locks.try_lock(&b, &root, "jobs/nightly", &LockOptions::new())?.is_none());
/// let lost = held.lost();
/// a.close();                                   // releases a's lock
/// lost.await;
/// let next = locks.try_lock(&b, &root, "jobs/nightly", &LockOptions::new())?.unwrap();
/// assert!(next.fencing_token() > held.fencing_token());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LockTable {
    shared: Arc<LockShared>,
}

struct LockShared {
    backend: &'static str,
    state: Mutex<LockState>,
}

#[derive(Default)]
struct LockState {
    queues: HashMap<String, Queue>,
    next_ticket: u64,
    next_token: u64,
}

#[derive(Default)]
struct Queue {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
}

struct Holder {
    ticket: u64,
    /// Dropped when the lock is released, which fires the holder's loss
    /// signal.
    _trigger: LostTrigger,
    _hold: Hold,
}

struct Waiter {
    ticket: u64,
    owner: WeakOwner,
    tx: oneshot::Sender<(u64, LostSignal)>,
    _hold: Hold,
}

/// What a lock attempt found.
enum Attempt {
    Acquired(u64, u64, LostSignal),
    Busy,
    Queued(u64, oneshot::Receiver<(u64, LostSignal)>),
}

impl fmt::Debug for LockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockTable")
            .field("backend", &self.shared.backend)
            .field("locks", &self.shared.state.lock().queues.len())
            .finish()
    }
}

impl LockTable {
    /// An empty table of `backend`.
    pub fn new(backend: &'static str) -> Self {
        LockTable {
            shared: Arc::new(LockShared {
                backend,
                state: Mutex::new(LockState::default()),
            }),
        }
    }

    /// Waits until `owner` holds the lock `name` (under `root`), at most
    /// `options.timeout` (then `Timeout`). `Closed` if the owner is or
    /// gets closed meanwhile; `InvalidKey` and `InvalidArgument` for a bad
    /// name or options.
    pub async fn lock(
        &self,
        owner: &Owner,
        root: &Root,
        name: &str,
        options: &LockOptions,
    ) -> Result<LockGuard> {
        let (full, shown) = self.check(owner, root, name, options)?;
        let (ticket, rx) = match self.attempt(owner, &full, true)? {
            Attempt::Acquired(ticket, token, lost) => {
                return Ok(self.guard(full, shown, ticket, token, lost))
            }
            Attempt::Queued(ticket, rx) => (ticket, rx),
            // A waiting attempt always queues.
            Attempt::Busy => return crate::waited_for(self.shared.backend, None),
        };
        // Dropped before the lock is ours (a timeout, or the caller's
        // future dropped), this leaves the queue, or releases the lock if
        // it was handed over in that same instant.
        let mut pending = Unlock {
            table: Arc::downgrade(&self.shared),
            name: full,
            ticket,
            armed: true,
        };
        let granted = match options.timeout {
            Some(after) => {
                tokio::time::timeout(after, rx)
                    .await
                    .map_err(|_| Error::LockTimeout {
                        backend: self.shared.backend,
                        key: shown.to_string(),
                        after,
                    })?
            }
            None => rx.await,
        };
        pending.armed = false;
        match granted {
            Ok((token, lost)) => Ok(self.guard(pending.name.clone(), shown, ticket, token, lost)),
            // The wait was abandoned: its owner closed.
            Err(_) => Err(Error::closed(self.shared.backend)),
        }
    }

    /// Takes the lock `name` (under `root`) for `owner` if it is free right
    /// now; `None` if it is held or others wait for it.
    pub fn try_lock(
        &self,
        owner: &Owner,
        root: &Root,
        name: &str,
        options: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        let (full, shown) = self.check(owner, root, name, options)?;
        match self.attempt(owner, &full, false)? {
            Attempt::Acquired(ticket, token, lost) => {
                Ok(Some(self.guard(full, shown, ticket, token, lost)))
            }
            _ => Ok(None),
        }
    }

    fn check(
        &self,
        owner: &Owner,
        root: &Root,
        name: &str,
        options: &LockOptions,
    ) -> Result<(String, String)> {
        owner.ensure_open()?;
        super::check_lock_options(options)?;
        let shown = key::normalize_key(name)?;
        Ok((root.under(&shown).into_owned(), shown))
    }

    fn attempt(&self, owner: &Owner, full: &str, wait: bool) -> Result<Attempt> {
        let mut st = self.shared.state.lock();
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        let free = st
            .queues
            .get(full)
            .is_none_or(|q| q.holder.is_none() && q.waiters.is_empty());
        if free {
            let hold = owner.hold(HoldKind::Lock, self.give_back(full, ticket))?;
            let (token, lost) = st.grant(full, ticket, hold);
            return Ok(Attempt::Acquired(ticket, token, lost));
        }
        if !wait {
            return Ok(Attempt::Busy);
        }
        let hold = owner.hold(HoldKind::Waiting, self.give_back(full, ticket))?;
        let (tx, rx) = oneshot::channel();
        st.queues
            .entry(full.to_owned())
            .or_default()
            .waiters
            .push_back(Waiter {
                ticket,
                owner: owner.downgrade(),
                tx,
                _hold: hold,
            });
        Ok(Attempt::Queued(ticket, rx))
    }

    /// What an owner's close runs for its ticket: leave the queue or
    /// release the lock.
    fn give_back(&self, full: &str, ticket: u64) -> impl FnOnce() + Send + 'static {
        let table = Arc::downgrade(&self.shared);
        let name = full.to_owned();
        move || unlock(&table, &name, ticket)
    }

    fn guard(
        &self,
        full: String,
        shown: String,
        ticket: u64,
        token: u64,
        lost: LostSignal,
    ) -> LockGuard {
        let release = Unlock {
            table: Arc::downgrade(&self.shared),
            name: full,
            ticket,
            armed: false,
        };
        LockGuard::new(shown, token, lost, Box::new(release))
    }
}

impl LockState {
    /// Makes `ticket` the holder of `full`, with the next fencing token.
    fn grant(&mut self, full: &str, ticket: u64, hold: Hold) -> (u64, LostSignal) {
        self.next_token += 1;
        let (trigger, lost) = lost_signal();
        self.queues.entry(full.to_owned()).or_default().holder = Some(Holder {
            ticket,
            _trigger: trigger,
            _hold: hold,
        });
        (self.next_token, lost)
    }

    /// Releases `full` if `ticket` holds it and hands it to the next live
    /// waiter; if `ticket` is queued, it leaves the queue. A ticket that
    /// no longer holds the lock never frees a newer holder.
    fn unlock(&mut self, table: &Weak<LockShared>, full: &str, ticket: u64) -> Vec<Holder> {
        let mut released = Vec::new();
        let Some(queue) = self.queues.get_mut(full) else {
            return released;
        };
        if queue.holder.as_ref().is_some_and(|h| h.ticket == ticket) {
            released.extend(queue.holder.take());
        } else {
            queue.waiters.retain(|w| w.ticket != ticket);
        }
        while self.queues.get(full).is_some_and(|q| q.holder.is_none()) {
            let Some(next) = self
                .queues
                .get_mut(full)
                .and_then(|q| q.waiters.pop_front())
            else {
                break;
            };
            if next.tx.is_closed() {
                continue;
            }
            let name = full.to_owned();
            let t = table.clone();
            let ticket = next.ticket;
            // A waiter whose owner closed meanwhile is skipped.
            let Ok(hold) = next
                .owner
                .hold(HoldKind::Lock, move || unlock(&t, &name, ticket))
            else {
                continue;
            };
            let grant = self.grant(full, ticket, hold);
            if next.tx.send(grant).is_err() {
                // The waiter gave up between the check and the send.
                released.extend(self.queues.get_mut(full).and_then(|q| q.holder.take()));
            }
        }
        if self
            .queues
            .get(full)
            .is_some_and(|q| q.holder.is_none() && q.waiters.is_empty())
        {
            self.queues.remove(full);
        }
        released
    }
}

fn unlock(table: &Weak<LockShared>, full: &str, ticket: u64) {
    if let Some(shared) = table.upgrade() {
        let released = shared.state.lock().unlock(table, full, ticket);
        // Firing the loss signals and dropping the holds happen outside
        // the table's lock.
        drop(released);
    }
}

/// Leaves the queue or releases the lock of a ticket: a guard's release,
/// and, armed, a waiting call's clean-up when it is dropped.
struct Unlock {
    table: Weak<LockShared>,
    name: String,
    ticket: u64,
    armed: bool,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        if self.armed {
            unlock(&self.table, &self.name, self.ticket);
        }
    }
}

#[async_trait]
impl Release for Unlock {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        unlock(&self.table, &self.name, self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_are_served_in_order_and_dropped_ones_skipped() {
        let locks = LockTable::new("t");
        let (a, b, c) = (Owner::new("t"), Owner::new("t"), Owner::new("t"));
        let root = Root::default();
        let opts = LockOptions::new();
        let held = locks.lock(&a, &root, "l", &opts).await.unwrap();
        let timeout = LockOptions::new().with_timeout(Duration::from_millis(20));
        let e = locks.lock(&b, &root, "l", &timeout).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::LockTimeout);
        let cancelled =
            tokio::time::timeout(Duration::from_millis(20), locks.lock(&b, &root, "l", &opts))
                .await;
        assert!(cancelled.is_err());
        let waiter = {
            let (locks, root, opts) = (locks.clone(), root.clone(), opts.clone());
            tokio::spawn(async move {
                let guard = locks.lock(&c, &root, "l", &opts).await;
                (guard, c)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(b.stats().locks, 0);
        let first = held.fencing_token();
        held.release().await.unwrap();
        let (next, c) = waiter.await.unwrap();
        let next = next.unwrap();
        assert!(next.fencing_token() > first);
        assert_eq!((a.stats().locks, c.stats().locks), (0, 1));
        drop(next);
        assert_eq!(c.stats().locks, 0);
        assert!(locks.shared.state.lock().queues.is_empty());
    }

    #[tokio::test]
    async fn a_wait_dropped_right_at_handover_passes_the_lock_on() {
        let locks = LockTable::new("t");
        let (a, b, c) = (Owner::new("t"), Owner::new("t"), Owner::new("t"));
        let root = Root::default();
        let opts = LockOptions::new();
        let held = locks.try_lock(&a, &root, "l", &opts).unwrap().unwrap();
        let mut waiting = Box::pin(locks.lock(&b, &root, "l", &opts));
        let mut next = Box::pin(locks.lock(&c, &root, "l", &opts));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert!(futures::poll!(next.as_mut()).is_pending());
        held.release().await.unwrap();
        // Handed to b, which never sees it: its future is dropped first.
        assert_eq!(b.stats().locks, 1);
        drop(waiting);
        assert_eq!(b.stats().locks, 0);
        let got = next.await.unwrap();
        assert_eq!(c.stats().locks, 1);
        drop(got);
        assert!(locks.try_lock(&a, &root, "l", &opts).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_close_abandons_its_own_waits_before_releasing() {
        let locks = LockTable::new("t");
        let (a, b) = (Owner::new("t"), Owner::new("t"));
        let root = Root::default();
        let opts = LockOptions::new();
        let held = locks.try_lock(&a, &root, "l", &opts).unwrap().unwrap();
        let own = locks.lock(&a, &root, "l", &opts);
        let other = locks.lock(&b, &root, "l", &opts);
        tokio::pin!(own, other);
        assert!(futures::poll!(own.as_mut()).is_pending());
        assert!(futures::poll!(other.as_mut()).is_pending());
        a.close();
        assert!(held.is_lost());
        assert_eq!(own.await.unwrap_err().kind(), crate::ErrorKind::Closed);
        assert!(other.await.is_ok());
    }
}
