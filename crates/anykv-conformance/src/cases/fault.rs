//! Cases: a frozen or restarted server. They use the factory's
//! [`crate::StoreFactory::pause_server`] and
//! [`crate::StoreFactory::restart_server`] hooks (a factory without them
//! reports these cases unsupported, naming the hook) and run alone, since
//! every client of the server feels them.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{Error, ErrorKind, LockGuard, LockOptions, PutOptions, WatchEvent, WatchOptions};
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, next_item, read_initial, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_fault {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args fault: [
            fault_pause_calls_fail_typed,
            fault_pause_store_recovers,
            fault_pause_watch_continues_or_ends,
            fault_pause_lock_lost_before_another_holds,
            fault_restart_store_and_watch_recover,
        ] }
    };
}

/// How long a call may take while the server is frozen.
fn bound(ctx: &Ctx) -> Duration {
    ctx.request_timeout() + SLACK
}

/// Whether an error says "the outcome is unknown, try again".
fn is_outage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable)
}

/// Retries `f` on `Timeout`/`Unavailable` until it succeeds or `within`
/// runs out.
async fn until_ok<T, F, Fut>(within: Duration, what: &str, mut f: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anykv_core::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_outage(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(Err(e)) => {
                return Err(Failure::failed(format!(
                    "{what}: {:?} error after the server came back: {e}",
                    e.kind()
                )))
            }
            Err(_) => {
                return Err(Failure::failed(format!(
                    "{what}: not done within {within:?}"
                )))
            }
        }
    }
}

/// Every kind of call on a frozen server fails with `Timeout` or
/// `Unavailable` — never a generic `Backend` error — within the request
/// timeout plus slack.
pub async fn fault_pause_calls_fail_typed(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    s.put("k", bytes("v"), PutOptions::new()).await?;
    ctx.pause_server().await?;
    let bound = bound(ctx);
    let started = Instant::now();
    let calls: Vec<(&str, futures::future::BoxFuture<'_, anykv_core::Result<()>>)> = vec![
        ("get", Box::pin(async { s.get("k").await.map(|_| ()) })),
        (
            "exists",
            Box::pin(async { s.exists("k").await.map(|_| ()) }),
        ),
        ("list", Box::pin(async { s.list("").await.map(|_| ()) })),
        (
            "put",
            Box::pin(async { s.put("k2", bytes("v"), PutOptions::new()).await.map(|_| ()) }),
        ),
        (
            "atomic_put",
            Box::pin(async {
                s.atomic_put("k3", bytes("v"), None, PutOptions::new())
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "delete",
            Box::pin(async { s.delete("k4").await.map(|_| ()) }),
        ),
    ];
    let names: Vec<&str> = calls.iter().map(|(n, _)| *n).collect();
    let results = futures::future::join_all(calls.into_iter().map(|(_, f)| async move {
        let r = tokio::time::timeout(bound + SLACK, f).await;
        (r, started.elapsed())
    }))
    .await;
    ctx.resume_server().await?;
    for (name, (r, took)) in names.into_iter().zip(results) {
        match r {
            Err(_) => {
                return Err(Failure::failed(format!(
                    "{name} on a frozen server had not returned after {took:?}"
                )))
            }
            Ok(Ok(())) => {
                return Err(Failure::failed(format!(
                    "{name} on a frozen server succeeded"
                )))
            }
            Ok(Err(e)) => {
                check!(
                    is_outage(&e),
                    "{name} on a frozen server failed with {:?}, not Timeout or Unavailable: {e}",
                    e.kind()
                );
                check!(
                    e.is_retryable(),
                    "{name}'s {:?} error is not retryable",
                    e.kind()
                );
                check!(
                    took <= bound,
                    "{name} on a frozen server took {took:?}, more than the request timeout \
                     plus slack ({bound:?})"
                );
            }
        }
    }
    Ok(())
}

/// After a freeze, the same store works again without being reopened:
/// reads see the data from before, writes land.
pub async fn fault_pause_store_recovers(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let before = s.put("k", bytes("before"), PutOptions::new()).await?;
    ctx.pause_server().await?;
    let _ = tokio::time::timeout(bound(ctx), s.get("k")).await;
    ctx.resume_server().await?;
    let within = EVENT_TIMEOUT + ctx.request_timeout();
    let got = until_ok(within, "get after the freeze", || s.get("k")).await?;
    check_eq!(got.map(|p| p.revision), Some(before));
    let after = until_ok(within, "put after the freeze", || {
        s.put("k", bytes("after"), PutOptions::new())
    })
    .await?;
    check!(
        after > before,
        "revision {after} after the freeze, {before} before"
    );
    let other = ctx.store().await?;
    check_eq!(other.get("k").await?.map(|p| p.revision), Some(after));
    Ok(())
}

/// A watch open across a freeze either goes on with nothing missing (it
/// delivers what was written after the server came back, and converges
/// to the final state) or ends with an error — it is never silent.
pub async fn fault_pause_watch_continues_or_ends(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let a = s.put("t/a", bytes("1"), PutOptions::new()).await?;
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(
        initial.iter().map(|p| p.revision).collect::<Vec<_>>(),
        vec![a]
    );
    ctx.pause_server().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctx.resume_server().await?;
    let within = EVENT_TIMEOUT + ctx.request_timeout();
    let writer = ctx.store().await?;
    let b = until_ok(within, "put after the freeze", || {
        writer.put("t/b", bytes("2"), PutOptions::new())
    })
    .await?;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        check!(
            !left.is_zero(),
            "the watch neither delivered t/b (revision {b}) nor ended with an error \
             within {within:?} of the freeze"
        );
        match next_item(&mut w, left).await? {
            Some(Ok(WatchEvent::Put(kv))) if kv.key == "t/b" => {
                check_eq!(kv.revision, b);
                return Ok(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                check!(
                    e.kind() != ErrorKind::Backend,
                    "the watch ended with a generic Backend error: {e}"
                );
                return Ok(());
            }
            None => {
                return Err(Failure::failed(
                    "the watch ended without an error across a freeze (silently)",
                ))
            }
        }
    }
}

/// A lock holder's `lost()` fires before another client can take its
/// lock: the holder's server freezes for longer than the lock's TTL while
/// another client waits for the lock; whenever the waiter gets it, the
/// first holder has been told it lost it (or has released it).
pub async fn fault_pause_lock_lost_before_another_holds(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let ttl = Duration::from_secs(2).max(a.capabilities().min_ttl);
    let held = a.lock("l", LockOptions::new().with_ttl(ttl)).await?;
    let first = held.fencing_token();
    let held = Arc::new(parking_lot::Mutex::new(Some(held)));
    let lost = held
        .lock()
        .as_ref()
        .map(|g| g.lost_signal())
        .ok_or_else(|| Failure::failed("no guard"))?;
    let waiter = {
        let b = b.clone();
        let lost = lost.clone();
        let held = held.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match b.lock("l", LockOptions::new().with_ttl(ttl)).await {
                    Ok(g) => {
                        let holder_gone = lost.is_lost() || held.lock().is_none();
                        return Ok::<(LockGuard, bool), Error>((g, holder_gone));
                    }
                    Err(e) if is_outage(&e) && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctx.pause_server().await?;
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    ctx.resume_server().await?;
    // The holder must learn of the loss within its TTL and slack of the
    // freeze; if it still holds (its backend kept the lock alive), the
    // waiter must still be waiting, and the holder then releases.
    let settle = Instant::now() + ttl + SLACK;
    while !lost.is_lost() && Instant::now() < settle && !waiter.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !lost.is_lost() {
        check!(
            !waiter.is_finished(),
            "another client took the lock while its holder was not told it lost it"
        );
        let guard = held.lock().take();
        if let Some(g) = guard {
            // Dropping the guard releases it in the background if the
            // release call itself meets the aftermath of the freeze.
            let _ = tokio::time::timeout(EVENT_TIMEOUT, g.release()).await;
        }
    } else {
        drop(held.lock().take());
    }
    let (guard, holder_gone) = tokio::time::timeout(EVENT_TIMEOUT * 3, waiter)
        .await
        .map_err(|_| Failure::failed("the waiter never got the lock after the freeze"))?
        .map_err(|e| Failure::failed(format!("the waiter panicked: {e}")))?
        .map_err(|e| Failure::failed(format!("the waiter failed ({:?}): {e}", e.kind())))?;
    check!(
        holder_gone,
        "another client got the lock while the first holder had not been told it lost it"
    );
    check!(
        guard.fencing_token() > first,
        "fencing tokens {first} then {}",
        guard.fencing_token()
    );
    Ok(())
}

/// After a restart that keeps the data, the same store works without
/// being reopened, and a watch open across it either delivers what was
/// written after the restart or ends with an error.
pub async fn fault_restart_store_and_watch_recover(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let a = s.put("t/a", bytes("1"), PutOptions::new()).await?;
    let mut w = if s.capabilities().watch {
        let mut w = s.watch_tree("t", WatchOptions::new()).await?;
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        Some(w)
    } else {
        None
    };
    ctx.restart_server().await?;
    let within = EVENT_TIMEOUT * 2 + ctx.request_timeout();
    let got = until_ok(within, "get after the restart", || s.get("t/a")).await?;
    check_eq!(
        got.map(|p| p.revision),
        Some(a),
        "the key written before the restart"
    );
    let b = until_ok(within, "put after the restart", || {
        s.put("t/b", bytes("2"), PutOptions::new())
    })
    .await?;
    check!(b > a, "revision {b} after the restart, {a} before");
    if let Some(w) = w.as_mut() {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            check!(
                !left.is_zero(),
                "the watch neither delivered t/b nor ended with an error after the restart"
            );
            match next_item(w, left).await? {
                Some(Ok(WatchEvent::Put(kv))) if kv.key == "t/b" => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    check!(
                        e.kind() != ErrorKind::Backend,
                        "the watch ended with a generic Backend error: {e}"
                    );
                    break;
                }
                None => {
                    return Err(Failure::failed(
                        "the watch ended without an error across a restart",
                    ))
                }
            }
        }
    }
    Ok(())
}
