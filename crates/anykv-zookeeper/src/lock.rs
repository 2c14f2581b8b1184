//! Locks: ephemeral sequential nodes on the store's shared sessions.
//!
//! The waiters of lock `l` of root `r` are the children of
//! `/r/l/@locks` (the lock's path derives from root and name together,
//! so root `r/sub` lock `l` is root `r` lock `sub/l`, as keys are). The
//! lowest sequence holds the lock; every other waiter watches only its
//! predecessor. When a lock counts as lost is its session's business
//! (`sessions.rs`, after the store's [`crate::LossPolicy`]); a node given
//! up that cannot be deleted at once is handed to the session, which
//! deletes it as soon as it can.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anykv_core::backend::{check_lock_options, lost_signal, Release};
use anykv_core::{async_trait, key, Error, LockGuard, LockOptions, LostSignal, Result};
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::client::{map_err, random_token, with_deadline};
use crate::config::{BACKEND, MIN_TTL};
use crate::layout::{child, LOCK_PREFIX};
use crate::nodes::make_dirs;
use crate::sessions::{SessionMember, SharedSession};
use crate::state::{HeldLock, StoreState};

/// How often creating the waiter node retries after a definite,
/// not-applied failure (its parent reaped).
const CREATE_ATTEMPTS: usize = 64;

/// The per-call budget: the request timeout, cut to what is left of the
/// lock's own timeout.
struct Budget {
    request_timeout: Duration,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    what: String,
    /// The lock's name, as the caller gave it (normalized).
    key: String,
    /// Set while the waiter node waits behind another client's: the
    /// lock's timeout running out then is [`Error::LockTimeout`] (the lock
    /// is busy), before that and after the grant it is [`Error::Timeout`].
    waiting: AtomicBool,
}

impl Budget {
    /// The time the next request may take; [`Budget::timed_out`] when the
    /// lock's timeout has run out.
    fn step(&self) -> Result<Duration> {
        match self.deadline {
            None => Ok(self.request_timeout),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(self.timed_out())
                } else {
                    Ok(left.min(self.request_timeout))
                }
            }
        }
    }

    /// The lock's own timeout ran out: `LockTimeout` while waiting behind
    /// another client's node (a request of that wait cut short by the
    /// lock's deadline included: the time went on waiting for the
    /// holder), `Timeout` otherwise (the server too slow to create the
    /// node or to grant).
    fn timed_out(&self) -> Error {
        if self.waiting.load(Ordering::Relaxed) {
            return Error::LockTimeout {
                backend: BACKEND,
                key: self.key.clone(),
                after: self.timeout.unwrap_or(self.request_timeout),
            };
        }
        Error::Timeout {
            backend: BACKEND,
            operation: self.what.clone(),
            after: self.timeout.unwrap_or(self.request_timeout),
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
        if step < self.request_timeout {
            self.timed_out()
        } else {
            Error::Timeout {
                backend: BACKEND,
                operation: self.what.clone(),
                after: self.request_timeout,
            }
        }
    }
}

/// `lock` (`wait`: until held, within `options.timeout`) and `try_lock`
/// (`None` when held elsewhere).
pub(crate) async fn acquire(
    state: &Arc<StoreState>,
    key: &str,
    options: LockOptions,
    wait: bool,
) -> Result<Option<LockGuard>> {
    check_lock_options(&options)?;
    state.ensure_open()?;
    let canonical = key::normalize_key(key)?;
    let lock_dir = state.client.layout().lock_dir(&canonical);
    let budget = Budget {
        request_timeout: state.client.request_timeout(),
        deadline: options.timeout.map(|t| Instant::now() + t),
        timeout: options.timeout,
        what: format!("lock {canonical:?}"),
        key: canonical.clone(),
        waiting: AtomicBool::new(false),
    };
    let ttl = options.ttl.max(MIN_TTL);
    let id = state.next_lock_id.fetch_add(1, Ordering::Relaxed);
    let (trigger, signal) = lost_signal();
    let member = SessionMember {
        trigger: trigger.clone(),
        is_lock: true,
        lock_node: None,
    };
    let session = state
        .sessions
        .join(&state.client, ttl, id, member, budget.step()?)
        .await?;
    // Until the guard is handed out, dropping this (an error, a timeout,
    // or the caller's future dropped at any await) gives the lock up.
    let mut pending = PendingLock {
        state: state.clone(),
        session: session.clone(),
        id,
        lock_dir: lock_dir.clone(),
        node: None,
        armed: true,
    };
    let outcome = take_turn(
        state,
        &session,
        id,
        &lock_dir,
        &budget,
        &signal,
        wait,
        &mut pending.node,
    )
    .await;
    match outcome {
        Ok(Some(node)) => {
            let entry = Arc::new(HeldLock {
                id,
                session,
                node: child(&lock_dir, &node),
                trigger,
            });
            state.locks.lock().insert(id, entry.clone());
            if state.is_closed() {
                pending.armed = false;
                let _ = release(state, &entry).await;
                return Err(Error::closed(BACKEND));
            }
            let fencing = match fencing_token(&entry, &budget).await {
                // Lost while it was being taken (a suspension under the
                // `Connection` policy): never hand out a lost guard.
                Ok(_) if signal.is_lost() => {
                    pending.armed = false;
                    let _ = release(state, &entry).await;
                    return Err(lost(&budget.what));
                }
                Ok(f) => f,
                Err(e) => {
                    pending.armed = false;
                    let _ = release(state, &entry).await;
                    return Err(e);
                }
            };
            pending.armed = false;
            Ok(Some(LockGuard::new(
                canonical,
                fencing,
                signal,
                Box::new(LockRelease {
                    store: Arc::downgrade(state),
                    entry,
                }),
            )))
        }
        // `pending` gives up in the background as it drops, so that a
        // call that failed because the server is away returns at once.
        other => other.map(|_| None),
    }
}

/// A lock call that has not handed out its guard yet: dropped armed (an
/// error, a timeout, the caller's future dropped at any await, even in the
/// instant the lock was granted), it deletes its node and leaves the
/// shared session in the background, so the lock goes to the next waiter.
struct PendingLock {
    state: Arc<StoreState>,
    session: Arc<SharedSession>,
    id: u64,
    lock_dir: String,
    /// The waiter node's name, once created.
    node: Option<String>,
    armed: bool,
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let state = self.state.clone();
        let session = self.session.clone();
        let id = self.id;
        let node = self.node.take().map(|n| child(&self.lock_dir, &n));
        state.locks.lock().remove(&id);
        let give_up = async move {
            if let Some(node) = node {
                let _ = delete_or_give_back(&state, &session, node).await;
            }
            state.sessions.leave(&session, id);
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(give_up);
        }
    }
}

/// The fencing token: the holder node's `czxid`, store-wide increasing
/// even if the lock's directory is reaped and re-created.
async fn fencing_token(entry: &HeldLock, budget: &Budget) -> Result<u64> {
    let session = entry.session.session().ok_or_else(|| lost(&budget.what))?;
    match budget.run(session.check_stat(&entry.node)).await? {
        Some(st) => Ok(st.czxid as u64),
        None => Err(lost(&budget.what)),
    }
}

/// Creates our waiter node and waits until it is the lowest: the node's
/// name once held, `None` if `wait` is false and the lock is held. `mine`
/// keeps the node's name for giving up.
#[allow(clippy::too_many_arguments)]
async fn take_turn(
    state: &StoreState,
    session: &Arc<SharedSession>,
    id: u64,
    lock_dir: &str,
    budget: &Budget,
    signal: &LostSignal,
    wait: bool,
    mine: &mut Option<String>,
) -> Result<Option<String>> {
    let client = session.session().ok_or_else(|| lost(&budget.what))?;
    let tok = format!("{LOCK_PREFIX}{:016x}-", random_token());
    let opts = zk::CreateMode::EphemeralSequential.with_acls(state.client.acls());
    // Create our node; after a lost reply, find it again by its token
    // (as Curator's protection mode does).
    for _ in 0..CREATE_ATTEMPTS {
        let step = budget.step()?;
        let r = tokio::time::timeout(step, client.create(&child(lock_dir, &tok), b"", &opts)).await;
        match r {
            Ok(Ok((_, seq))) => {
                *mine = Some(format!("{tok}{seq}"));
                break;
            }
            Ok(Err(zk::Error::NoNode)) => {
                make_dirs_within(state, &client, lock_dir, budget.step()?).await?
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
    session.set_lock_node(id, &child(lock_dir, &name));
    let seq_of = |n: &str| {
        n.rsplit('-')
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    let mut closed = state.shutdown.subscribe();
    loop {
        if state.is_closed() {
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
            budget.waiting.store(false, Ordering::Relaxed);
            return Ok(Some(name));
        }
        if !wait {
            return Ok(None);
        }
        budget.waiting.store(true, Ordering::Relaxed);
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

/// [`make_dirs`] bounded by `limit` as a whole.
async fn make_dirs_within(
    state: &StoreState,
    session: &zk::Client,
    dir: &str,
    limit: Duration,
) -> Result<()> {
    match tokio::time::timeout(limit, make_dirs(&state.client, session, dir)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            backend: BACKEND,
            operation: format!("creating {dir}"),
            after: limit,
        }),
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
/// holder's) and leaves its session. A node that could not be deleted (the
/// connection is down) is handed to the session, which deletes it once
/// connected: a released lock never keeps others waiting.
async fn release(state: &StoreState, entry: &Arc<HeldLock>) -> Result<()> {
    state.locks.lock().remove(&entry.id);
    entry.trigger.fire();
    let result = delete_or_give_back(state, &entry.session, entry.node.clone()).await;
    state.sessions.leave(&entry.session, entry.id);
    result
}

/// Deletes a lock node of `session`; if that fails, the session deletes
/// it as soon as it can ([`SharedSession::give_back`]). The error is the
/// delete's.
async fn delete_or_give_back(
    state: &StoreState,
    session: &SharedSession,
    node: String,
) -> Result<()> {
    let Some(client) = session.session() else {
        // Closed or lost: the server deleted the node with the session.
        return Ok(());
    };
    let limit = state.client.request_timeout();
    let error = match with_deadline(limit, "release", client.delete(&node, None)).await {
        Ok(Ok(())) | Ok(Err(zk::Error::NoNode | zk::Error::SessionExpired)) => return Ok(()),
        Ok(Err(e)) => map_err(e, "release the lock"),
        Err(e) => e,
    };
    session.give_back(node);
    Err(error)
}

/// Releases every lock of a closing store.
pub(crate) async fn release_all(state: &StoreState) {
    let entries: Vec<_> = state.locks.lock().values().cloned().collect();
    for e in entries {
        let _ = release(state, &e).await;
    }
}

/// What a [`LockGuard`] does on release and drop.
struct LockRelease {
    store: Weak<StoreState>,
    entry: Arc<HeldLock>,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        match self.store.upgrade() {
            Some(state) => release(&state, &self.entry).await,
            None => {
                self.entry.trigger.fire();
                Ok(())
            }
        }
    }

    fn release_in_background(&self) {
        let Some(state) = self.store.upgrade() else {
            self.entry.trigger.fire();
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let entry = self.entry.clone();
                h.spawn(async move {
                    let _ = release(&state, &entry).await;
                });
            }
            Err(_) => {
                state.locks.lock().remove(&self.entry.id);
                self.entry.trigger.fire();
                state.sessions.leave(&self.entry.session, self.entry.id);
            }
        }
    }
}
