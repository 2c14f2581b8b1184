//! Cases: `close`: every later call fails with `Closed`, watch streams end,
//! closing twice is fine, and other clients are unaffected.

use std::time::Duration;

use anykv_core::{KvPair, LockOptions, PutOptions, WatchEvent, WatchOptions, WatchStream};
use futures::StreamExt;

use crate::{
    bytes, check, check_eq, check_err, next_event, read_initial, wait_gone, wait_until, CaseResult,
    Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_close {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args close: [
            close_makes_calls_fail_closed,
            close_makes_watch_calls_fail_closed,
            close_makes_lease_calls_fail_closed,
            close_makes_lock_calls_fail_closed,
            close_ends_watch_streams,
            close_is_idempotent,
            close_leaves_other_clients_working,
            close_leaves_other_clients_watches,
            close_dropping_last_handle_releases,
        ] }
    };
}

/// After `close()`, every key-value call of that store (`get`, `put`,
/// `delete`, `exists`, `list`, `delete_tree`, `atomic_put`,
/// `atomic_delete`) fails with `Closed`, and none of them changes the data,
/// which another client on the root still reads.
pub async fn close_makes_calls_fail_closed(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let observer = ctx.store().await?;
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v", r)));
    s.close().await?;

    check_err!(s.get("k").await, Closed);
    check_err!(s.put("k", bytes("x"), PutOptions::new()).await, Closed);
    check_err!(s.put("new", bytes("x"), PutOptions::new()).await, Closed);
    check_err!(s.delete("k").await, Closed);
    check_err!(s.exists("k").await, Closed);
    check_err!(s.list("").await, Closed);
    check_err!(s.list("k").await, Closed);
    check_err!(s.delete_tree("k").await, Closed);
    check_err!(s.delete_tree("").await, Closed);
    check_err!(
        s.atomic_put("k", bytes("x"), Some(r), PutOptions::new())
            .await,
        Closed
    );
    check_err!(
        s.atomic_put("new", bytes("x"), None, PutOptions::new())
            .await,
        Closed
    );
    check_err!(s.atomic_delete("k", r).await, Closed);

    check_eq!(observer.list("").await?, vec![KvPair::new("k", "v", r)]);
    Ok(())
}

/// After `close()`, `watch` and `watch_tree` fail with `Closed`.
pub async fn close_makes_watch_calls_fail_closed(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let observer = ctx.store().await?;
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    s.close().await?;
    check_err!(s.watch("k", WatchOptions::new()).await, Closed);
    check_err!(s.watch_tree("", WatchOptions::new()).await, Closed);
    check_err!(s.watch_tree("k", WatchOptions::new()).await, Closed);
    check_eq!(observer.list("").await?, vec![KvPair::new("k", "v", r)]);
    Ok(())
}

/// After `close()`, `grant_lease` fails with `Closed`, and so does a put
/// bound to a lease granted before the close.
pub async fn close_makes_lease_calls_fail_closed(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let observer = ctx.store().await?;
    let lease = s.grant_lease(Duration::from_secs(30)).await?;
    let id = lease.id();
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    s.close().await?;
    check_err!(s.grant_lease(Duration::from_secs(30)).await, Closed);
    check_err!(
        s.put("leased", bytes("x"), PutOptions::new().with_lease(id))
            .await,
        Closed
    );
    drop(lease);
    check_eq!(observer.list("").await?, vec![KvPair::new("k", "v", r)]);
    Ok(())
}

/// After `close()`, `lock` and `try_lock` fail with `Closed`; a lock the
/// store held is released by the close, so another client takes it at once.
pub async fn close_makes_lock_calls_fail_closed(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    let observer = ctx.store().await?;
    let opts = LockOptions::new().with_timeout(SLACK);
    let held = s.lock("held", opts.clone()).await?;
    check!(
        observer.try_lock("held", opts.clone()).await?.is_none(),
        "another client took a held lock"
    );
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    s.close().await?;
    check_err!(s.lock("free", opts.clone()).await, Closed);
    check_err!(s.try_lock("free", opts.clone()).await, Closed);

    let Some(guard) = observer.try_lock("held", opts.clone()).await? else {
        return Err(Failure::failed(
            "the closed store's lock is still held after close()",
        ));
    };
    check!(
        guard.fencing_token() > held.fencing_token(),
        "fencing token {} is not above the closed holder's {}",
        guard.fencing_token(),
        held.fencing_token()
    );
    drop(held);
    guard.release().await?;
    check_eq!(observer.list("").await?, vec![KvPair::new("k", "v", r)]);
    Ok(())
}

/// Reads what a closed store's stream still yields: at most the one event
/// written before the close (`buffered`, if any), at most one `Closed`
/// error, then the end, all within `EVENT_TIMEOUT`.
async fn expect_end(stream: &mut WatchStream, buffered: Option<&WatchEvent>) -> CaseResult {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let mut seen_event = false;
    let mut seen_error = false;
    loop {
        let item = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| {
                Failure::failed(format!(
                    "the watch stream did not end within {EVENT_TIMEOUT:?} after close()"
                ))
            })?;
        match item {
            None => return Ok(()),
            Some(Ok(ev)) => {
                check!(
                    !seen_event && !seen_error && Some(&ev) == buffered,
                    "after close() the stream yielded {ev:?}; only the buffered {buffered:?} \
                     may come before its end"
                );
                seen_event = true;
            }
            Some(Err(e)) => {
                check!(
                    !seen_error,
                    "after close() the stream yielded a second error"
                );
                check_err!(Err::<(), _>(e), Closed);
                seen_error = true;
            }
        }
    }
}

/// `close()` ends the store's open watch streams: each yields `None`
/// within `EVENT_TIMEOUT`, after at most the event written just before the
/// close (and at most a `Closed` error); nothing written afterwards by
/// another client arrives.
pub async fn close_ends_watch_streams(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let observer = ctx.store().await?;
    let r1 = s.put("k", bytes("v1"), PutOptions::new()).await?;
    let mut wk = s.watch("k", WatchOptions::new()).await?;
    let mut wt = s.watch_tree("", WatchOptions::new()).await?;
    let want = vec![KvPair::new("k", "v1", r1)];
    check_eq!(read_initial(&mut wk, EVENT_TIMEOUT).await?.0, want);
    check_eq!(read_initial(&mut wt, EVENT_TIMEOUT).await?.0, want);

    let r2 = s.put("k", bytes("v2"), PutOptions::new()).await?;
    s.close().await?;
    let r3 = observer.put("k", bytes("v3"), PutOptions::new()).await?;
    let buffered = WatchEvent::Put(KvPair::new("k", "v2", r2));
    expect_end(&mut wk, Some(&buffered))
        .await
        .map_err(|f| prefixed(f, "watch(\"k\")"))?;
    expect_end(&mut wt, Some(&buffered))
        .await
        .map_err(|f| prefixed(f, "watch_tree(\"\")"))?;
    check_eq!(observer.get("k").await?, Some(KvPair::new("k", "v3", r3)));
    Ok(())
}

/// Prefixes a failure's message.
fn prefixed(f: Failure, what: &str) -> Failure {
    match f {
        Failure::Failed(m) => Failure::Failed(format!("{what}: {m}")),
        other => other,
    }
}

/// Closing twice, one after the other or at the same time, is `Ok`; the
/// store stays closed and the data stays.
pub async fn close_is_idempotent(ctx: &Ctx) -> CaseResult {
    let s1 = ctx.store().await?;
    let s2 = ctx.store().await?;
    let observer = ctx.store().await?;
    let r = s1.put("k", bytes("v"), PutOptions::new()).await?;
    s1.close().await?;
    s1.close().await?;
    check_err!(s1.get("k").await, Closed);

    let (a, b) = tokio::join!(s2.close(), s2.close());
    a?;
    b?;
    s2.close().await?;
    check_err!(s2.put("k", bytes("x"), PutOptions::new()).await, Closed);
    check_eq!(observer.get("k").await?, Some(KvPair::new("k", "v", r)));
    Ok(())
}

/// Closing one client leaves another on the same root fully working: its
/// data is intact, it reads, writes, swaps and deletes, and a client opened
/// after the close works too.
pub async fn close_leaves_other_clients_working(ctx: &Ctx) -> CaseResult {
    let s1 = ctx.store().await?;
    let s2 = ctx.store().await?;
    let ra = s1.put("a", bytes("from s1"), PutOptions::new()).await?;
    let rb = s2.put("b", bytes("from s2"), PutOptions::new()).await?;
    s1.close().await?;

    check_eq!(s2.get("a").await?, Some(KvPair::new("a", "from s1", ra)));
    check_eq!(s2.get("b").await?, Some(KvPair::new("b", "from s2", rb)));
    let rc = s2.put("c", bytes("c"), PutOptions::new()).await?;
    check!(rc > rb, "revision {rc} is not above {rb}");
    let ra2 = s2
        .atomic_put("a", bytes("swapped"), Some(ra), PutOptions::new())
        .await?;
    check!(s2.delete("b").await?, "delete(\"b\") returned false");
    let want = vec![KvPair::new("a", "swapped", ra2), KvPair::new("c", "c", rc)];
    check_eq!(s2.list("").await?, want);

    let s3 = ctx.store().await?;
    check_eq!(s3.list("").await?, want);
    let rd = s3.put("d", bytes("d"), PutOptions::new()).await?;
    check_eq!(s2.get("d").await?, Some(KvPair::new("d", "d", rd)));
    check_eq!(s3.delete_tree("").await?, 3, "delete_tree(\"\")");
    check_eq!(s2.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// Closing one client does not end another client's watches on the same
/// root: they keep delivering changes.
pub async fn close_leaves_other_clients_watches(ctx: &Ctx) -> CaseResult {
    let s1 = ctx.store().await?;
    ctx.require(s1.capabilities().watch, "watch")?;
    let s2 = ctx.store().await?;
    let r = s1.put("k", bytes("v"), PutOptions::new()).await?;
    let mut w1 = s1.watch_tree("", WatchOptions::new()).await?;
    let mut w2 = s2.watch_tree("", WatchOptions::new()).await?;
    let mut wk = s2.watch("k", WatchOptions::new()).await?;
    let want = vec![KvPair::new("k", "v", r)];
    check_eq!(read_initial(&mut w1, EVENT_TIMEOUT).await?.0, want);
    check_eq!(read_initial(&mut w2, EVENT_TIMEOUT).await?.0, want);
    check_eq!(read_initial(&mut wk, EVENT_TIMEOUT).await?.0, want);

    s1.close().await?;
    expect_end(&mut w1, None)
        .await
        .map_err(|f| prefixed(f, "the closed client's watch"))?;

    let r2 = s2.put("k", bytes("v2"), PutOptions::new()).await?;
    let ev = WatchEvent::Put(KvPair::new("k", "v2", r2));
    check_eq!(next_event(&mut w2, EVENT_TIMEOUT).await?, ev.clone());
    check_eq!(next_event(&mut wk, EVENT_TIMEOUT).await?, ev);
    let r3 = s2.put("n", bytes("n"), PutOptions::new()).await?;
    check_eq!(
        next_event(&mut w2, EVENT_TIMEOUT).await?,
        WatchEvent::Put(KvPair::new("n", "n", r3))
    );
    Ok(())
}

/// Dropping a client's last handle (without `close()`, as a process that
/// forgets to close) gives back what it held, on a best-effort basis but
/// within the TTLs: its leases' keys vanish within the lease TTL plus
/// [`SLACK`], its locks are free for others within the lock TTL plus
/// [`SLACK`] and report the loss, and its permanent keys stay.
pub async fn close_dropping_last_handle_releases(ctx: &Ctx) -> CaseResult {
    let observer = ctx.store().await?;
    let s = ctx.unmanaged_store().await?;
    let caps = s.capabilities().clone();
    let ttl = Duration::from_secs(2).max(caps.min_ttl);
    let plain = s.put("plain", bytes("stays"), PutOptions::new()).await?;
    let lease = if caps.leases {
        let lease = s.grant_lease(ttl).await?;
        s.put(
            "leased",
            bytes("goes"),
            PutOptions::new().with_lease(lease.id()),
        )
        .await?;
        Some(lease)
    } else {
        None
    };
    let guard = if caps.locks {
        Some(s.lock("l", LockOptions::new().with_ttl(ttl)).await?)
    } else {
        None
    };
    check!(
        caps.leases || caps.locks,
        "the backend has neither leases nor locks: nothing to release"
    );
    if caps.leases {
        check!(
            observer.exists("leased").await?,
            "the leased key was written"
        );
    }
    if caps.locks {
        check!(
            observer.try_lock("l", LockOptions::new()).await?.is_none(),
            "the lock is held before the drop"
        );
    }
    // The lease and guard handles stay alive: only the store is dropped.
    drop(s);
    if caps.leases {
        wait_gone(&observer, &["leased"], ttl + SLACK).await?;
    }
    if let Some(g) = &guard {
        let observer = observer.clone();
        wait_until(ttl + SLACK, "the dropped client's lock is free", || {
            let observer = observer.clone();
            async move {
                match observer.try_lock("l", LockOptions::new()).await? {
                    Some(mine) => {
                        mine.release().await?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
        })
        .await?;
        check!(
            g.is_lost(),
            "the dropped client's guard does not report the loss"
        );
    }
    check_eq!(
        observer.get("plain").await?.map(|p| p.revision),
        Some(plain)
    );
    drop((lease, guard));
    Ok(())
}
