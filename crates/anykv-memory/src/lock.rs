//! Locks: FIFO queues in the store's state, with fencing tokens; a
//! waiter that gives up (timeout, or its future dropped) leaves the queue.

use std::sync::Arc;

use anykv_core::{async_trait, Error, LockGuard, LockOptions, Release, Result};

use crate::state::{LockAttempt, Shared, BACKEND};

/// Takes (or, with `wait`, waits for) the lock whose full name is `full`
/// for `owner`; `canonical` is the name its guard reports. Locks are FIFO
/// queues: a release hands the lock to the next waiter directly.
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
    owner: u64,
    full: String,
    canonical: String,
    options: LockOptions,
    wait: bool,
) -> Result<Option<LockGuard>> {
    let attempt = shared.state.write().lock(owner, &full, wait);
    let guard = |ticket, token, lost| {
        LockGuard::new(
            canonical.clone(),
            token,
            lost,
            Box::new(LockRelease {
                shared: shared.clone(),
                full: full.clone(),
                ticket,
            }),
        )
    };
    match attempt {
        LockAttempt::Acquired {
            ticket,
            token,
            lost,
        } => Ok(Some(guard(ticket, token, lost))),
        LockAttempt::Busy => Ok(None),
        LockAttempt::Closed => Err(Error::closed(BACKEND)),
        LockAttempt::Queued { ticket, rx } => {
            let mut pending = PendingLock {
                shared: shared.clone(),
                full: full.clone(),
                ticket,
                armed: true,
            };
            let outcome = match options.timeout {
                Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| t),
                None => Ok(rx.await),
            };
            match outcome {
                Ok(Ok((token, lost))) => {
                    pending.armed = false;
                    Ok(Some(guard(ticket, token, lost)))
                }
                Ok(Err(_)) => {
                    pending.armed = false;
                    Err(Error::closed(BACKEND))
                }
                // `pending` leaves the queue (or releases a lock granted
                // in the same instant) as it drops.
                Err(after) => Err(Error::Timeout {
                    backend: BACKEND,
                    operation: format!("lock {canonical:?}"),
                    after,
                }),
            }
        }
    }
}

/// A queued lock request; dropped before it is granted (timeout, or the
/// caller's future dropped), it leaves the queue, or releases the lock if it
/// was granted in that same instant.
struct PendingLock {
    shared: Arc<Shared>,
    full: String,
    ticket: u64,
    armed: bool,
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        if self.armed {
            self.shared.state.write().unlock(&self.full, self.ticket);
        }
    }
}

/// Releases a held lock.
struct LockRelease {
    shared: Arc<Shared>,
    full: String,
    ticket: u64,
}

#[async_trait]
impl Release for LockRelease {
    async fn release(&self) -> Result<()> {
        self.release_in_background();
        Ok(())
    }

    fn release_in_background(&self) {
        self.shared.state.write().unlock(&self.full, self.ticket);
    }
}
