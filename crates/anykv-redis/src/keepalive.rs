//! Keeping a lease or a lock alive, and deciding when it is lost.
//!
//! A lock's or a lease's deadline is measured from when the refresh that
//! set it was sent (the server set it later); `lost()` fires at
//! [`loss_deadline`] after that if no refresh has succeeded by then,
//! whatever refresh is still in flight, and each refresh is bounded by the
//! time left. Refreshes go every [`keepalive_interval`], and at once when
//! the store's calls succeed again after failing (a new connection, maybe
//! to a new primary that lacks the lease or the lock): the holder then
//! learns of a loss as soon as its store reaches the new primary.

use std::future::Future;
use std::time::{Duration, Instant};

use anykv_core::backend::{keepalive_interval, loss_deadline, LostTrigger};
use anykv_core::Result;
use redis::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::reply::as_i64;

/// How soon a refresh whose outcome is unknown is tried again.
const RETRY_REFRESH: Duration = Duration::from_millis(200);

/// The background task keeping one lease or lock alive, and the trigger
/// of its `lost()` signal.
pub(crate) struct KeepAliveTask {
    /// Fires the holder's `lost()`.
    pub(crate) trigger: LostTrigger,
    /// The refreshing task.
    pub(crate) task: JoinHandle<()>,
}

impl KeepAliveTask {
    /// Stops refreshing and fires `lost()`.
    pub(crate) fn stop(self) {
        self.task.abort();
        self.trigger.fire();
    }
}

/// Keeps a lock or a lease alive until it is lost; returns then. `sent`
/// is when the request that set its current deadline was sent: the server
/// set that deadline later, so `sent + ttl` is never past it. A refresh
/// every [`keepalive_interval`] moves it on; a refresh that fails or hangs
/// does not delay the verdict, which falls at `sent +`
/// [`loss_deadline`]`(ttl)` whatever is in flight. `refresh` answers `1`
/// while the lease or lock is still held; anything else means it is gone.
/// `recheck` wakes it to refresh at once.
pub(crate) async fn keep_alive<F, Fut>(
    request_timeout: Duration,
    ttl: Duration,
    sent: Instant,
    recheck: &Notify,
    mut refresh: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value>>,
{
    let mut valid_until = tokio::time::Instant::from_std(sent) + loss_deadline(ttl);
    let mut wait = keepalive_interval(ttl);
    loop {
        let next = tokio::time::Instant::now() + wait;
        if next >= valid_until {
            tokio::time::sleep_until(valid_until).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = recheck.notified() => {}
        }
        let sent = tokio::time::Instant::now();
        let bound = request_timeout.min(valid_until.saturating_duration_since(sent));
        match tokio::time::timeout(bound, refresh()).await {
            Ok(Ok(v)) if as_i64(&v) == Some(1) => {
                valid_until = sent + loss_deadline(ttl);
                wait = keepalive_interval(ttl);
            }
            // Gone (or an answer we do not understand): lost now.
            Ok(Ok(_)) => return,
            Ok(Err(e)) if !e.is_retryable() => {
                crate::counters::keepalive_failure(&e);
                return;
            }
            // Unknown: retry soon, until the deadline.
            Ok(Err(e)) => {
                crate::counters::keepalive_failure(&e);
                if tokio::time::Instant::now() >= valid_until {
                    return;
                }
                wait = RETRY_REFRESH;
            }
            Err(_) => {
                crate::counters::keepalive_failure(&"no answer in time");
                if tokio::time::Instant::now() >= valid_until {
                    return;
                }
                wait = RETRY_REFRESH;
            }
        }
    }
}

/// Gives a lease or a lock back after its handle was dropped: `work` on
/// the current runtime when there is one; without a runtime, `stop` at
/// once (the keep-alive stops, so the server's TTL frees it).
pub(crate) fn give_back<F>(work: F, stop: impl FnOnce())
where
    F: Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(work);
        }
        Err(_) => stop(),
    }
}
