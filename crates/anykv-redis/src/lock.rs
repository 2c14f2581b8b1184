//! Locks: `SET {ns}:lock:<name> <token> NX PX <ttl>`, kept alive by the
//! holder with a token-checked `PEXPIRE`, released by a token-checked
//! delete that appends an unlock record to the change stream. The fencing
//! token comes from `INCR {ns}:fence`.
//!
//! Waiters sleep until the watch reader sees an unlock record for their
//! lock, or until the holder's remaining `PTTL` runs out, then try again;
//! every waiter of the store wakes on a release and they race for it (no
//! fairness). While the reader is disconnected, waiters retry at least
//! every second.
//!
//! With `wait_replicas`, taking and extending a lock wait for replicas
//! (`WAIT`): a lock the replicas did not acknowledge is given back and the
//! call fails with `Unavailable`, and an extension they did not acknowledge
//! does not count, so the holder's `lost()` never fires later than the
//! deadline a promoted replica knows. After a failover the fencing token
//! counter has jumped (see `scripts.rs`), so tokens keep increasing. A `lock()` cancelled while its attempt is in flight gives
//! back whatever that attempt took (a token-checked release in the
//! background).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::backend::{check_lock_options, lost_signal, Release};
use anykv_core::{async_trait, Error, LockGuard, LockOptions, Result};
use tokio::sync::Notify;

use crate::client::Durability;
use crate::config::{BACKEND, MAX_TTL, MIN_TTL};
use crate::keepalive::{keep_alive, KeepAliveTask};
use crate::layout::KeyName;
use crate::reply::{as_array, as_i64, as_u64, unexpected_reply};
use crate::scripts;
use crate::state::{HeldLock, StoreState};

/// Whether a lock call waits for the lock (`lock`) or answers at once
/// (`try_lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Wait until it is free, within the options' timeout.
    UntilFree,
    /// Answer `None` if it is held.
    Never,
}

/// Takes lock `name`: `Some(guard)` once the server confirmed it, `None`
/// if it is held and `wait` is [`Wait::Never`], `LockTimeout` when the
/// options' timeout runs out first while another client holds it.
pub(crate) async fn acquire(
    state: &Arc<StoreState>,
    name: &str,
    options: LockOptions,
    wait: Wait,
) -> Result<Option<LockGuard>> {
    check_lock_options(&options)?;
    let s = state.clone();
    s.ensure_open()?;
    let name = s.layout.key(name)?;
    let ttl = options.ttl.clamp(MIN_TTL, MAX_TTL);
    let ttl_ms = ttl.as_millis().to_string();
    let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
    let id = s.next_id();
    let token = format!("{}-{id}", s.instance_id);
    let notify = {
        let mut feed = s.feed.lock();
        let entry = feed
            .lock_waiters
            .entry(name.full.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        entry.0.clone()
    };
    let _waiter = WaiterRegistration {
        state: s.clone(),
        full: name.full.clone(),
    };
    loop {
        s.ensure_open()?;
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // If this future is dropped while the script is in flight, or
        // the outcome is unknown, the rollback gives back what we may
        // hold (a token-checked UNLOCK) instead of leaving it held for
        // the whole TTL.
        let mut rollback = AttemptRollback {
            state: Some(s.clone()),
            full: name.full.clone(),
            token: token.clone(),
        };
        let sent = Instant::now();
        let canonical = &name.canonical;
        let written = s
            .client
            .write_script(
                &scripts::LOCK,
                &[name.full.as_bytes(), token.as_bytes(), ttl_ms.as_bytes()],
                || format!("lock {canonical:?}"),
                Durability::Replicated,
            )
            .await?;
        let durable = written.replicated(|| format!("lock {canonical:?}"));
        let reply = as_array(written.value).ok_or_else(|| unexpected_reply("lock"))?;
        let (Some(got), Some(n)) = (
            reply.first().and_then(as_i64),
            reply.get(1).and_then(as_i64),
        ) else {
            return Err(unexpected_reply("lock"));
        };
        if got == 1 {
            // Not acknowledged by the replicas: the rollback gives it back.
            durable?;
            let fence = u64::try_from(n).map_err(|_| unexpected_reply("lock"))?;
            rollback.state = None;
            return Ok(Some(hold(&s, name, token, ttl, fence, id, sent)));
        }
        rollback.state = None;
        if wait == Wait::Never {
            return Ok(None);
        }
        // A parked reader starts after this attempt, so the release
        // we wait for wakes us.
        if let Some(rev) = reply.get(2).and_then(as_u64) {
            s.feed.lock().resume_after(rev, &s.wake_reader);
        }
        // While the reader is connected, its unlock records wake us;
        // otherwise the holder's remaining PTTL is the only bound, and
        // without the reader we retry at least every second.
        let reading = s.reader_connected.load(Ordering::SeqCst);
        let nap = match n {
            n if n > 0 => {
                let d = Duration::from_millis(n as u64 + 5);
                if reading {
                    d
                } else {
                    d.min(Duration::from_secs(1))
                }
            }
            // Released between SET and PTTL.
            -2 => Duration::from_millis(5),
            _ => Duration::from_secs(1),
        };
        let until = deadline.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(nap) => {}
            _ = async {
                match until {
                    Some(u) => tokio::time::sleep_until(u).await,
                    None => futures::future::pending().await,
                }
            } => {
                return Err(Error::LockTimeout {
                    backend: BACKEND,
                    key: name.canonical.clone(),
                    after: options.timeout.unwrap_or_default(),
                });
            }
        }
    }
}

/// The guard of a lock the server confirmed, kept alive from `sent` (when
/// the request that took it was sent).
fn hold(
    state: &Arc<StoreState>,
    name: KeyName,
    token: String,
    ttl: Duration,
    fence: u64,
    id: u64,
    sent: Instant,
) -> LockGuard {
    let s = state.clone();
    let (trigger, signal) = lost_signal();
    let task = {
        let s = s.clone();
        let trigger = trigger.clone();
        let (full, token) = (name.full.clone(), token.clone());
        let ttl_ms = ttl.as_millis().to_string();
        tokio::spawn(async move {
            let (state, full, token, ttl_ms) = (&*s, &full, &token, &ttl_ms);
            keep_alive(
                state.client.request_timeout(),
                ttl,
                sent,
                &state.recheck,
                move || async move {
                    let w = state
                        .client
                        .write_script(
                            &scripts::LOCK_REFRESH,
                            &[full.as_bytes(), token.as_bytes(), ttl_ms.as_bytes()],
                            "keep lock",
                            Durability::Replicated,
                        )
                        .await?;
                    if as_i64(&w.value) == Some(1) {
                        w.replicated("keep lock")?;
                    }
                    Ok(w.value)
                },
            )
            .await;
            s.locks.lock().remove(&id);
            trigger.fire();
        })
    };
    s.locks.lock().insert(
        id,
        HeldLock {
            full: name.full,
            token,
            keepalive: KeepAliveTask { trigger, task },
        },
    );
    LockGuard::new(
        name.canonical,
        fence,
        signal,
        Box::new(LockRelease { state: s, id }),
    )
}

/// Releases lock `id` of this store, if it still holds it: stops its
/// keep-alive (its `lost()` fires) and deletes it on the server if the
/// token is still there.
pub(crate) async fn release(state: &StoreState, id: u64) -> Result<()> {
    let held = state.locks.lock().remove(&id);
    if let Some(lock) = held {
        lock.keepalive.stop();
        state
            .client
            .write_script(
                &scripts::UNLOCK,
                &[lock.full.as_bytes(), lock.token.as_bytes()],
                "release lock",
                Durability::Primary,
            )
            .await?;
    }
    Ok(())
}

/// Gives back a lock an attempt may have taken, unless disarmed (its
/// `state` taken) once the outcome is known.
struct AttemptRollback {
    state: Option<Arc<StoreState>>,
    full: String,
    token: String,
}

impl Drop for AttemptRollback {
    fn drop(&mut self) {
        let Some(s) = self.state.take() else {
            return;
        };
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (full, token) = (
            std::mem::take(&mut self.full),
            std::mem::take(&mut self.token),
        );
        h.spawn(async move {
            let _ = s
                .client
                .write_script(
                    &scripts::UNLOCK,
                    &[full.as_bytes(), token.as_bytes()],
                    "unlock",
                    Durability::Primary,
                )
                .await;
        });
    }
}

/// One `lock()` call waiting on a lock name; removes the name's waiter
/// entry when the last waiter of this store leaves.
struct WaiterRegistration {
    state: Arc<StoreState>,
    full: String,
}

impl Drop for WaiterRegistration {
    fn drop(&mut self) {
        let mut feed = self.state.feed.lock();
        if let Some(entry) = feed.lock_waiters.get_mut(&self.full) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                feed.lock_waiters.remove(&self.full);
            }
        }
    }
}

/// Releases a lock when its guard is released or dropped.
struct LockRelease {
    state: Arc<StoreState>,
    id: u64,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        release(&self.state, self.id).await
    }

    fn release_in_background(&self) {
        let (s, id) = (self.state.clone(), self.id);
        let state = self.state.clone();
        crate::keepalive::give_back(
            async move {
                let _ = release(&s, id).await;
            },
            move || {
                if let Some(lock) = state.locks.lock().remove(&id) {
                    lock.keepalive.stop();
                }
            },
        );
    }
}
