//! Locks: ephemeral sequential nodes on the store's shared sessions.
//!
//! The waiters of lock `l` of root `r` are the children of
//! `/r/l/@locks` (the lock's path derives from root and name together,
//! so root `r/sub` lock `l` is root `r` lock `sub/l`, as keys are). The
//! lowest sequence holds the lock; every other waiter watches only its
//! predecessor.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::{async_trait, key, lost_signal, Error, LockGuard, LockOptions, Release, Result};
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::client::{map_err, timed, token};
use crate::lease::{Member, Shared};
use crate::paths::{child, LOCKS, LOCK_PREFIX};
use crate::store::{Inner, ZkStore};
use crate::{BACKEND, MIN_TTL};

/// How often a write retries after a definite, not-applied failure.
const CREATE_ATTEMPTS: usize = 64;

/// A held lock.
pub(crate) struct LockEntry {
    id: u64,
    session: Arc<Shared>,
    node: String,
    trigger: anykv_core::LostTrigger,
}

/// The per-call budget: the request timeout, cut to what is left of the
/// lock's own timeout.
struct Budget {
    limit: Duration,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    what: String,
}

impl Budget {
    /// The time the next request may take; `Timeout` when the lock's
    /// timeout has run out.
    fn step(&self) -> Result<Duration> {
        match self.deadline {
            None => Ok(self.limit),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(self.timed_out())
                } else {
                    Ok(left.min(self.limit))
                }
            }
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            backend: BACKEND,
            operation: self.what.clone(),
            after: self.timeout.unwrap_or(self.limit),
        }
    }

    /// Runs a request within [`Budget::step`]; a request cut short by the
    /// lock's timeout reports that timeout.
    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<T, zk::Error>>,
    ) -> Result<T> {
        let step = self.step()?;
        match tokio::time::timeout(step, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_err(e, &self.what)),
            Err(_) => Err(self.cut_short(step)),
        }
    }

    /// The error of a request that took all of `step`.
    fn cut_short(&self, step: Duration) -> Error {
        if step < self.limit {
            self.timed_out()
        } else {
            Error::Timeout {
                backend: BACKEND,
                operation: self.what.clone(),
                after: self.limit,
            }
        }
    }
}

impl ZkStore {
    /// `lock` (`wait`) and `try_lock`.
    pub(crate) async fn lock_impl(
        &self,
        key: &str,
        options: LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        self.check()?;
        let canonical = key::normalize_key(key)?;
        let lock_dir = child(&self.key_dir(&canonical), LOCKS);
        let budget = Budget {
            limit: self.limit(),
            deadline: options.timeout.map(|t| Instant::now() + t),
            timeout: options.timeout,
            what: format!("lock {canonical:?}"),
        };
        let ttl = options.ttl.max(MIN_TTL);
        let id = self.inner.next_lock.fetch_add(1, Ordering::Relaxed);
        let (trigger, signal) = lost_signal();
        let member = Member {
            trigger: trigger.clone(),
            is_lock: true,
            lock_node: None,
        };
        let session = self.shared_session(ttl, id, member, budget.step()?).await?;
        let mut mine: Option<String> = None;
        let outcome = self
            .lock_steps(&session, id, &lock_dir, &budget, &signal, wait, &mut mine)
            .await;
        match outcome {
            Ok(Some(node)) => {
                let entry = Arc::new(LockEntry {
                    id,
                    session,
                    node: child(&lock_dir, &node),
                    trigger,
                });
                self.inner.locks.lock().insert(id, entry.clone());
                if self.inner.closed.load(Ordering::SeqCst) {
                    let _ = release(&self.inner, &entry).await;
                    return Err(Error::closed(BACKEND));
                }
                let fencing = match self.fencing(&entry, &budget).await {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = release(&self.inner, &entry).await;
                        return Err(e);
                    }
                };
                Ok(Some(LockGuard::new(
                    canonical,
                    fencing,
                    signal,
                    Box::new(LockRelease {
                        store: Arc::downgrade(&self.inner),
                        entry,
                    }),
                )))
            }
            other => {
                // Give up in the background, so that a call that failed
                // because the server is away returns at once.
                let inner = self.inner.clone();
                let node = mine.map(|n| child(&lock_dir, &n));
                tokio::spawn(async move {
                    if let (Some(node), Some(client)) = (node, session.client()) {
                        let limit = inner.config.request_timeout;
                        let _ = timed(limit, "release", client.delete(&node, None)).await;
                    }
                    inner.pool.leave(&session, id);
                });
                other.map(|_| None)
            }
        }
    }

    /// The fencing token: the holder node's `czxid`, store-wide increasing
    /// even if the lock's directory is reaped and re-created.
    async fn fencing(&self, entry: &LockEntry, budget: &Budget) -> Result<u64> {
        let client = entry.session.client().ok_or_else(|| lost(&budget.what))?;
        match budget.run(client.check_stat(&entry.node)).await? {
            Some(st) => Ok(st.czxid as u64),
            None => Err(lost(&budget.what)),
        }
    }

    /// Creates our waiter node and waits until it is the lowest: the
    /// node's name once held, `None` if `wait` is false and the lock is
    /// held. `mine` keeps the node's name for giving up.
    #[allow(clippy::too_many_arguments)]
    async fn lock_steps(
        &self,
        session: &Arc<Shared>,
        id: u64,
        lock_dir: &str,
        budget: &Budget,
        signal: &anykv_core::LostSignal,
        wait: bool,
        mine: &mut Option<String>,
    ) -> Result<Option<String>> {
        let client = session.client().ok_or_else(|| lost(&budget.what))?;
        let tok = format!("{LOCK_PREFIX}{:016x}-", token());
        let opts = zk::CreateMode::EphemeralSequential.with_acls(self.acls());
        // Create our node; after a lost reply, find it again by its token
        // (as Curator's protection mode does).
        for _ in 0..CREATE_ATTEMPTS {
            let step = budget.step()?;
            let r =
                tokio::time::timeout(step, client.create(&child(lock_dir, &tok), b"", &opts)).await;
            match r {
                Ok(Ok((_, seq))) => {
                    *mine = Some(format!("{tok}{seq}"));
                    break;
                }
                Ok(Err(zk::Error::NoNode)) => {
                    self.make_dirs_within(&client, lock_dir, budget.step()?)
                        .await?
                }
                Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {
                    // The reply was lost: the node may exist.
                    if let Ok(children) = budget.run(client.list_children(lock_dir)).await {
                        if let Some(n) = children.into_iter().find(|c| c.starts_with(&tok)) {
                            *mine = Some(n);
                            break;
                        }
                    }
                    return Err(match r {
                        Ok(Err(e)) => map_err(e, &budget.what),
                        _ => budget.cut_short(step),
                    });
                }
                Ok(Err(e)) => return Err(map_err(e, &budget.what)),
            }
        }
        let Some(name) = mine.clone() else {
            return Err(Error::Backend {
                backend: BACKEND,
                message: format!("{}: could not create the lock node", budget.what),
                source: None,
            });
        };
        session.set_node(id, &child(lock_dir, &name));
        let seq_of = |n: &str| {
            n.rsplit('-')
                .next()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(i64::MAX)
        };
        let mut closed = self.inner.closed_tx.subscribe();
        loop {
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(Error::closed(BACKEND));
            }
            if signal.is_lost() {
                return Err(lost(&budget.what));
            }
            let children = budget.run(client.list_children(lock_dir)).await?;
            let mut waiters: Vec<&String> = children
                .iter()
                .filter(|c| c.starts_with(LOCK_PREFIX))
                .collect();
            waiters.sort_by_key(|c| seq_of(c));
            let Some(idx) = waiters.iter().position(|c| **c == name) else {
                return Err(lost(&budget.what));
            };
            if idx == 0 {
                return Ok(Some(name));
            }
            if !wait {
                return Ok(None);
            }
            let pred = child(lock_dir, waiters[idx - 1]);
            let watcher = match budget.run(client.check_and_watch_stat(&pred)).await? {
                (None, _) => continue,
                (Some(_), w) => w,
            };
            // Wait for the predecessor to go, the session to be lost or
            // the store to close, and look again at least once per
            // request timeout: a server that went away makes that look
            // fail within the request timeout.
            let step = budget.step()?;
            tokio::select! {
                _ = watcher.changed() => {}
                _ = closed.wait_for(|c| *c) => return Err(Error::closed(BACKEND)),
                _ = signal.wait() => return Err(lost(&budget.what)),
                _ = tokio::time::sleep(step) => {}
            }
        }
    }

    /// [`ZkStore::make_dirs`] bounded by `limit` as a whole.
    async fn make_dirs_within(
        &self,
        client: &zk::Client,
        dir: &str,
        limit: Duration,
    ) -> Result<()> {
        match tokio::time::timeout(limit, self.make_dirs(client, dir)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: format!("creating {dir}"),
                after: limit,
            }),
        }
    }
}

/// The lock's session was lost while taking it.
fn lost(what: &str) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: format!("{what}: the lock's session was lost (connection lost or expired)"),
        source: None,
    }
}

/// Releases a held lock: deletes its node (our own, so never the next
/// holder's) and leaves its session.
async fn release(inner: &Arc<Inner>, entry: &Arc<LockEntry>) -> Result<()> {
    inner.locks.lock().remove(&entry.id);
    entry.trigger.fire();
    let mut result = Ok(());
    if let Some(client) = entry.session.client() {
        let limit = inner.config.request_timeout;
        match timed(limit, "release", client.delete(&entry.node, None)).await {
            Ok(Ok(())) | Ok(Err(zk::Error::NoNode | zk::Error::SessionExpired)) => {}
            Ok(Err(e)) => result = Err(map_err(e, "release the lock")),
            Err(e) => result = Err(e),
        }
    }
    inner.pool.leave(&entry.session, entry.id);
    result
}

/// Releases every lock of a closing store.
pub(crate) async fn release_all(inner: &Arc<Inner>) {
    let entries: Vec<_> = inner.locks.lock().values().cloned().collect();
    for e in entries {
        let _ = release(inner, &e).await;
    }
}

/// Fires every lock's signal (the store is dropped).
pub(crate) fn fire_all(inner: &Inner) {
    for (_, e) in inner.locks.lock().drain() {
        e.trigger.fire();
    }
}

struct LockRelease {
    store: Weak<Inner>,
    entry: Arc<LockEntry>,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        match self.store.upgrade() {
            Some(inner) => release(&inner, &self.entry).await,
            None => {
                self.entry.trigger.fire();
                Ok(())
            }
        }
    }

    fn release_in_background(&self) {
        let Some(inner) = self.store.upgrade() else {
            self.entry.trigger.fire();
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let entry = self.entry.clone();
                h.spawn(async move {
                    let _ = release(&inner, &entry).await;
                });
            }
            Err(_) => {
                inner.locks.lock().remove(&self.entry.id);
                self.entry.trigger.fire();
                inner.pool.leave(&self.entry.session, self.entry.id);
            }
        }
    }
}
