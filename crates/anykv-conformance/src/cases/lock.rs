//! Cases: distributed locks — mutual exclusion across clients, fencing
//! tokens, `try_lock`, waiting and timeouts, release by drop and by the
//! holder's close, loss notification, and the lock namespace.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, LockGuard, LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, check_err, next_event, read_initial, CaseResult, Ctx, Failure,
    EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_lock {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args lock: [
            lock_mutual_exclusion_counter,
            lock_fencing_tokens_increase,
            lock_try_lock_fails_while_held,
            lock_waiter_gets_lock_after_release,
            lock_waiter_gets_lock_after_holder_close,
            lock_timeout,
            lock_drop_releases,
            lock_attempt_dropped_in_flight_leaves_lock_free,
            lock_lost_fires_on_close,
            lock_release_after_loss_keeps_new_holder,
            lock_bookkeeping_invisible,
            lock_names_are_independent,
            lock_and_key_namespaces_separate,
            lock_key_is_canonical,
            lock_scoped_to_root,
            lock_ttl_limits_rejected,
        ] }
    };
}

/// How long a waiter must stay blocked to show that it is blocked.
const BLOCKED: Duration = Duration::from_millis(300);

/// A client on the case's root and lock options with a short lease (2 s,
/// raised to the backend's minimum), or "unsupported" unless locks work.
async fn lock_store(ctx: &Ctx) -> Result<(Arc<dyn Store>, LockOptions), Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    let ttl = Duration::from_secs(2).max(s.capabilities().min_ttl);
    Ok((s, LockOptions::new().with_ttl(ttl)))
}

/// A spawned task of the case, aborted if the case ends first.
struct Spawned<T>(JoinHandle<T>);

impl<T: Send + 'static> Spawned<T> {
    fn spawn(f: impl Future<Output = T> + Send + 'static) -> Self {
        Spawned(tokio::spawn(f))
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// The task's output; fails if it is not done within `within`.
    async fn join(mut self, within: Duration, what: &str) -> Result<T, Failure> {
        match tokio::time::timeout(within, &mut self.0).await {
            Err(_) => Err(Failure::failed(format!(
                "{what}: not done within {within:?}"
            ))),
            Ok(Err(e)) => Err(Failure::failed(format!("{what}: the task failed: {e}"))),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits in a task for `store` to take the lock `key`.
fn spawn_lock(
    store: &Arc<dyn Store>,
    key: &str,
    opts: &LockOptions,
) -> Spawned<anykv_core::Result<LockGuard>> {
    let store = store.clone();
    let key = key.to_owned();
    let opts = opts.clone();
    Spawned::spawn(async move { store.lock(&key, opts).await })
}

/// `try_lock`, which must answer without waiting for the lock: a call that
/// has not returned within [`EVENT_TIMEOUT`] fails the case.
async fn try_lock_now(
    s: &Arc<dyn Store>,
    key: &str,
    opts: &LockOptions,
) -> Result<Option<LockGuard>, Failure> {
    tokio::time::timeout(EVENT_TIMEOUT, s.try_lock(key, opts.clone()))
        .await
        .map_err(|_| {
            Failure::failed(format!(
                "try_lock({key:?}) did not return within {EVENT_TIMEOUT:?}: it must never wait"
            ))
        })?
        .map_err(Failure::from)
}

/// `try_lock` must find the lock held.
async fn expect_held(s: &Arc<dyn Store>, key: &str, opts: &LockOptions) -> CaseResult {
    match try_lock_now(s, key, opts).await? {
        None => Ok(()),
        Some(g) => Err(Failure::failed(format!(
            "try_lock({key:?}) got the lock (token {}) while another client holds it",
            g.fencing_token()
        ))),
    }
}

/// `try_lock` must get the lock now.
async fn expect_free(
    s: &Arc<dyn Store>,
    key: &str,
    opts: &LockOptions,
) -> Result<LockGuard, Failure> {
    try_lock_now(s, key, opts).await?.ok_or_else(|| {
        Failure::failed(format!(
            "try_lock({key:?}) found the lock held; it should be free"
        ))
    })
}

/// Repeats `try_lock` until it gets the lock, failing after `within`.
async fn try_lock_within(
    s: &Arc<dyn Store>,
    key: &str,
    opts: &LockOptions,
    within: Duration,
) -> Result<LockGuard, Failure> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(g) = s.try_lock(key, opts.clone()).await? {
            return Ok(g);
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(format!(
                "try_lock({key:?}) did not get the lock within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Eight tasks, each with its own client, each do 25 non-atomic
/// read-modify-write increments of one key (get, pause, put) inside the
/// lock: no two are ever inside at once, the final value is exactly 200,
/// and the fencing tokens in acquisition order strictly increase.
pub async fn lock_mutual_exclusion_counter(ctx: &Ctx) -> CaseResult {
    let (s, _) = lock_store(ctx).await?;
    s.put("counter", bytes("0"), PutOptions::new()).await?;
    let inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = ctx.store().await?;
        let inside = inside.clone();
        let tokens = tokens.clone();
        tasks.push(Spawned::spawn(async move {
            for i in 0..25u64 {
                let guard = c.lock("counter", LockOptions::new()).await?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    return Err(Failure::failed(format!(
                        "task {t} got the lock while another task held it"
                    )));
                }
                tokens.lock().push(guard.fencing_token());
                let current = c
                    .get("counter")
                    .await?
                    .ok_or_else(|| Failure::failed("the counter key vanished"))?;
                let n: u64 = std::str::from_utf8(&current.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Failure::failed(format!("the counter holds {:?}", current.value))
                    })?;
                tokio::time::sleep(Duration::from_millis(1 + (t + i) % 3)).await;
                c.put("counter", bytes((n + 1).to_string()), PutOptions::new())
                    .await?;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await?;
            }
            Ok::<_, Failure>(())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.join(Duration::from_secs(100), &format!("incrementing task {i}"))
            .await??;
    }
    let value = s.get("counter").await?.map(|p| p.value);
    check_eq!(value, Some(bytes("200")));
    let tokens = tokens.lock().clone();
    check_eq!(tokens.len(), 200);
    for pair in tokens.windows(2) {
        check!(
            pair[1] > pair[0],
            "fencing token {} followed {}: not strictly increasing",
            pair[1],
            pair[0]
        );
    }
    Ok(())
}

/// Successive holders of one lock, across three clients and whether they
/// got it by `lock` or `try_lock` and released it by `release` or by
/// dropping the guard, get strictly increasing fencing tokens.
pub async fn lock_fencing_tokens_increase(ctx: &Ctx) -> CaseResult {
    let (s, opts) = lock_store(ctx).await?;
    let clients = [s, ctx.store().await?, ctx.store().await?];
    let mut last = 0u64;
    for round in 0..4 {
        for (i, c) in clients.iter().enumerate() {
            let guard = if (round + i) % 2 == 0 {
                c.lock("f", opts.clone().with_timeout(EVENT_TIMEOUT))
                    .await?
            } else {
                try_lock_within(c, "f", &opts, SLACK).await?
            };
            let token = guard.fencing_token();
            check!(
                token > last,
                "holder #{} (client {i}) got fencing token {token} after {last}",
                round * 3 + i
            );
            last = token;
            if round % 2 == 0 {
                guard.release().await?;
            } else {
                drop(guard);
            }
        }
    }
    Ok(())
}

/// While one client holds a lock, `try_lock` from another returns
/// `Ok(None)` at once; after the holder releases, it returns `Ok(Some)`
/// with a greater fencing token, and then the first client's `try_lock`
/// returns `Ok(None)`.
pub async fn lock_try_lock_fails_while_held(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let ga = expect_free(&a, "t", &opts).await?;
    let started = Instant::now();
    expect_held(&b, "t", &opts).await?;
    check!(
        started.elapsed() < EVENT_TIMEOUT,
        "try_lock waited {:?} for a held lock",
        started.elapsed()
    );
    expect_held(&b, "t", &opts).await?;
    let ta = ga.fencing_token();
    ga.release().await?;
    let gb = expect_free(&b, "t", &opts).await?;
    check!(
        gb.fencing_token() > ta,
        "token {} after {ta}",
        gb.fencing_token()
    );
    expect_held(&a, "t", &opts).await?;
    gb.release().await?;
    Ok(())
}

/// A client waiting in `lock` stays blocked while another holds the lock
/// and gets it once the holder releases, with a greater fencing token.
pub async fn lock_waiter_gets_lock_after_release(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let ga = a.lock("w", opts.clone()).await?;
    let waiter = spawn_lock(&b, "w", &opts);
    tokio::time::sleep(BLOCKED).await;
    check!(
        !waiter.is_finished(),
        "lock() returned while another client held the lock"
    );
    let ta = ga.fencing_token();
    ga.release().await?;
    let gb = waiter.join(EVENT_TIMEOUT, "the waiter's lock()").await??;
    check!(
        gb.fencing_token() > ta,
        "token {} after {ta}",
        gb.fencing_token()
    );
    expect_held(&a, "w", &opts).await?;
    gb.release().await?;
    Ok(())
}

/// When the holder's store closes, a client waiting in `lock` gets the lock
/// within the lock's TTL plus [`SLACK`], and the old holder's guard
/// reports the loss.
pub async fn lock_waiter_gets_lock_after_holder_close(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let ga = a.lock("w", opts.clone()).await?;
    let waiter = spawn_lock(&b, "w", &opts);
    tokio::time::sleep(BLOCKED).await;
    check!(
        !waiter.is_finished(),
        "lock() returned while another client held the lock"
    );
    a.close().await?;
    let gb = waiter
        .join(
            opts.ttl + SLACK,
            "the waiter's lock() after the holder's close",
        )
        .await??;
    check!(
        gb.fencing_token() > ga.fencing_token(),
        "token {} after {}",
        gb.fencing_token(),
        ga.fencing_token()
    );
    tokio::time::timeout(SLACK, ga.lost())
        .await
        .map_err(|_| Failure::failed("the closed holder's guard did not report the loss"))?;
    check!(!gb.is_lost(), "the new holder's guard reports a loss");
    gb.release().await?;
    Ok(())
}

/// `lock` with a 500 ms timeout on a held lock fails with `LockTimeout`
/// (naming the lock, not retryable: the lock is busy, not the server)
/// after at least about 500 ms and well before [`crate::EVENT_TIMEOUT`]; the
/// abandoned wait leaves nothing behind: the same client gets the lock
/// after the release, and a third one after that.
pub async fn lock_timeout(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    let ga = a.lock("t", opts.clone()).await?;
    let started = Instant::now();
    let result = b
        .lock("t", opts.clone().with_timeout(Duration::from_millis(500)))
        .await;
    let took = started.elapsed();
    let e = check_err!(result, LockTimeout);
    check!(
        !e.is_retryable() && e.to_string().contains("\"t\""),
        "a lock that waited its timeout says {e} (retryable: {})",
        e.is_retryable()
    );
    check!(
        took >= Duration::from_millis(450),
        "lock() with a 500 ms timeout gave up after {took:?}"
    );
    check!(
        took < EVENT_TIMEOUT,
        "lock() with a 500 ms timeout took {took:?}"
    );
    expect_held(&c, "t", &opts).await?;
    ga.release().await?;
    let gb = b
        .lock("t", opts.clone().with_timeout(EVENT_TIMEOUT))
        .await?;
    expect_held(&c, "t", &opts).await?;
    gb.release().await?;
    expect_free(&c, "t", &opts).await?.release().await?;
    Ok(())
}

/// Dropping a guard releases the lock in the background: another client's
/// `try_lock` gets it within [`SLACK`], and `stats().locks` of the holder
/// rises by one while held and returns to its baseline.
pub async fn lock_drop_releases(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let base = a.stats().locks;
    let ga = a.lock("d", opts.clone()).await?;
    check_eq!(
        a.stats().locks,
        base + 1,
        "stats().locks while holding a lock"
    );
    expect_held(&b, "d", &opts).await?;
    drop(ga);
    let gb = try_lock_within(&b, "d", &opts, SLACK).await?;
    crate::wait_until(SLACK, "stats().locks returns to its baseline", || {
        let n = a.stats().locks;
        async move { Ok(n == base) }
    })
    .await?;
    gb.release().await?;
    Ok(())
}

/// A `lock()` call on a free lock that is dropped while its attempt is in
/// flight (its task aborted 0 µs to 5 ms after it started, before or after
/// the server granted it) leaves the lock free or gives it back at once:
/// another client gets it well within the lock's 60 s TTL, every time.
pub async fn lock_attempt_dropped_in_flight_leaves_lock_free(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let long = LockOptions::new().with_ttl(Duration::from_secs(60));
    for (round, delay_us) in [0u64, 20, 100, 300, 1000, 2000, 5000]
        .into_iter()
        .enumerate()
    {
        let name = format!("l{round}");
        let (a2, n2, opts) = (a.clone(), name.clone(), long.clone());
        let attempt = tokio::spawn(async move { a2.lock(&n2, opts).await });
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        attempt.abort();
        match attempt.await {
            // It finished before the abort: its guard was returned and
            // dropped with the task's output here, which releases it.
            Ok(result) => drop(result),
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                return Err(Failure::failed(format!(
                    "round {round}: lock panicked: {e}"
                )))
            }
        }
        let got = b
            .lock(&name, LockOptions::new().with_timeout(EVENT_TIMEOUT))
            .await
            .map_err(|e| {
                Failure::failed(format!(
                    "round {round}: a lock() dropped {delay_us} µs into its attempt left \
                     the lock taken for {EVENT_TIMEOUT:?} ({:?}): {e}",
                    e.kind()
                ))
            })?;
        check!(
            a.try_lock(&name, LockOptions::new()).await?.is_none(),
            "round {round}: a lock is held by one client at a time, but it was free \
             while the other client held it"
        );
        got.release().await?;
    }
    Ok(())
}

/// `LockGuard::lost()` does not complete while the lock is held and
/// completes within [`SLACK`] after the holder's store closes; `is_lost`
/// then says so, and another client can take the lock.
pub async fn lock_lost_fires_on_close(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let guard = a.lock("l", opts.clone()).await?;
    check!(!guard.is_lost(), "a fresh guard is reported lost");
    let signal = guard.lost_signal();
    let lost = guard.lost();
    check!(
        tokio::time::timeout(BLOCKED, guard.lost()).await.is_err(),
        "lost() completed while the lock was held"
    );
    a.close().await?;
    tokio::time::timeout(SLACK, lost).await.map_err(|_| {
        Failure::failed(format!(
            "LockGuard::lost() did not complete within {SLACK:?} of closing its store"
        ))
    })?;
    check!(guard.is_lost(), "is_lost() is false after lost() completed");
    check!(signal.is_lost(), "the lost signal is not fired");
    let gb = try_lock_within(&b, "l", &opts, opts.ttl + SLACK).await?;
    gb.release().await?;
    drop(guard);
    Ok(())
}

/// A's store closes while A holds the lock, B then takes it, and A's
/// `release()` afterwards (whatever it returns) must not free B's lock: a
/// third client's `try_lock` still gets `None` and B's guard is not lost;
/// after B releases, the third client gets it.
pub async fn lock_release_after_loss_keeps_new_holder(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    let ga = a.lock("r", opts.clone()).await?;
    a.close().await?;
    let gb = b
        .lock("r", opts.clone().with_timeout(opts.ttl + SLACK))
        .await?;
    check!(gb.fencing_token() > ga.fencing_token());
    let _ = ga.release().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    expect_held(&c, "r", &opts).await?;
    check!(!gb.is_lost(), "the new holder lost the lock");
    gb.release().await?;
    expect_free(&c, "r", &opts).await?.release().await?;
    Ok(())
}

/// While locks are held and waited on, lock bookkeeping is invisible:
/// `list("")`, `list` of the lock names, `get`/`exists` of plausible
/// bookkeeping names, and a `watch_tree("")` opened before locking show
/// nothing but the user's own keys.
pub async fn lock_bookkeeping_invisible(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let user = a.put("app/x", bytes("user"), PutOptions::new()).await?;
    let user = KvPair::new("app/x", "user", user);
    let mut w = if a.capabilities().watch {
        let mut w = a.watch_tree("", WatchOptions::new()).await?;
        let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
        check_eq!(initial, vec![user.clone()]);
        Some(w)
    } else {
        None
    };
    let g1 = a.lock("job", opts.clone()).await?;
    let g2 = a.lock("app/x", opts.clone()).await?;
    let g3 = b.lock("app/x/y", opts.clone()).await?;
    let waiter = spawn_lock(&b, "job", &opts);
    tokio::time::sleep(BLOCKED).await;
    check!(!waiter.is_finished(), "lock(\"job\") did not wait");
    for s in [&a, &b] {
        check_eq!(s.list("").await?, vec![user.clone()]);
        check_eq!(s.list("app").await?, vec![user.clone()]);
        for name in [
            "job",
            "app/x/y",
            "app/x/lock",
            "lock",
            "locks",
            "_lock",
            "__lock",
            "___lock",
            "_locks",
            "__locks",
            "anykv",
            "_anykv",
            "__anykv",
            "job/lock",
            "job/_lock",
            "job/___lock",
            "locks/job",
            "__locks/job",
            "lock/job",
            "job.lock",
        ] {
            check_eq!(s.get(name).await?, None, "get({name:?})");
            check!(!s.exists(name).await?, "exists({name:?}) is true");
            check_eq!(s.list(name).await?, Vec::<KvPair>::new(), "list({name:?})");
        }
    }
    g1.release().await?;
    let g4 = waiter
        .join(EVENT_TIMEOUT, "the waiter's lock(\"job\")")
        .await??;
    check_eq!(a.list("").await?, vec![user.clone()]);
    g2.release().await?;
    g3.release().await?;
    g4.release().await?;
    check_eq!(b.list("").await?, vec![user]);
    if let Some(w) = &mut w {
        let end = a.put("zz", bytes("sentinel"), PutOptions::new()).await?;
        check_eq!(
            next_event(w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(KvPair::new("zz", "sentinel", end)),
            "the first event after locking (lock bookkeeping must not show)"
        );
    }
    Ok(())
}

/// Locks respect segment boundaries and are independent: `a`, `a/b` and
/// `ab` are held at once by three clients, while each is still exclusive.
pub async fn lock_names_are_independent(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    let d = ctx.store().await?;
    let ga = expect_free(&a, "a", &opts).await?;
    let gb = expect_free(&b, "a/b", &opts).await?;
    let gc = expect_free(&c, "ab", &opts).await?;
    let gd = expect_free(&d, "b", &opts).await?;
    for name in ["a", "a/b", "ab", "b"] {
        expect_held(&d, name, &opts).await?;
    }
    check!(!ga.is_lost() && !gb.is_lost() && !gc.is_lost());
    ga.release().await?;
    expect_held(&d, "a/b", &opts).await?;
    expect_held(&d, "ab", &opts).await?;
    expect_free(&d, "a", &opts).await?.release().await?;
    gb.release().await?;
    gc.release().await?;
    gd.release().await?;
    Ok(())
}

/// Locks live in a namespace of their own: holding lock `k` creates no key
/// `k`; key `k` can be put, read and deleted (and `delete_tree("")` run)
/// while lock `k` is held, and none of that frees the lock; locking a name
/// that is also a key leaves the key untouched.
pub async fn lock_and_key_namespaces_separate(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let existing = a.put("e", bytes("value"), PutOptions::new()).await?;
    let ge = a.lock("e", opts.clone()).await?;
    check_eq!(a.get("e").await?, Some(KvPair::new("e", "value", existing)));
    let gk = a.lock("k", opts.clone()).await?;
    check_eq!(b.get("k").await?, None);
    check!(!b.exists("k").await?);
    check_eq!(b.list("").await?, vec![KvPair::new("e", "value", existing)]);
    let rev = b.put("k", bytes("key"), PutOptions::new()).await?;
    check_eq!(b.get("k").await?, Some(KvPair::new("k", "key", rev)));
    expect_held(&b, "k", &opts).await?;
    check!(b.delete("k").await?, "delete of the key k returned false");
    expect_held(&b, "k", &opts).await?;
    check_eq!(b.delete_tree("").await?, 1);
    expect_held(&b, "k", &opts).await?;
    expect_held(&b, "e", &opts).await?;
    check!(
        !gk.is_lost() && !ge.is_lost(),
        "a key operation made a lock lost"
    );
    gk.release().await?;
    ge.release().await?;
    check_eq!(b.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// Lock names are canonicalised like keys: `lock("/j/k/")` and
/// `try_lock("j/k")` are the same lock, the guard's `key()` is `j/k`;
/// invalid names are rejected with `InvalidKey`.
pub async fn lock_key_is_canonical(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let b = ctx.store().await?;
    let g = a.lock("/j/k/", opts.clone()).await?;
    check_eq!(g.key(), "j/k");
    expect_held(&b, "j/k", &opts).await?;
    expect_held(&b, "/j/k", &opts).await?;
    check_err!(b.lock("", opts.clone()).await, InvalidKey);
    check_err!(b.lock("a//b", opts.clone()).await, InvalidKey);
    check_err!(b.try_lock("a/../b", opts.clone()).await, InvalidKey);
    check_err!(b.try_lock("x\u{7f}", opts.clone()).await, InvalidKey);
    g.release().await?;
    expect_free(&b, "j/k", &opts).await?.release().await?;
    Ok(())
}

/// Locks belong to the store's root, like keys: lock `x` held on this root
/// does not block lock `x` on a sibling root or on a root whose name
/// extends this one's, while it still blocks another client on this root.
pub async fn lock_scoped_to_root(ctx: &Ctx) -> CaseResult {
    let (a, opts) = lock_store(ctx).await?;
    let same = ctx.store().await?;
    let sibling = ctx.store_with_root_suffix("-other").await?;
    let longer = ctx.store_with_root_suffix("b").await?;
    let g = a.lock("x", opts.clone()).await?;
    expect_held(&same, "x", &opts).await?;
    let gs = expect_free(&sibling, "x", &opts).await?;
    let gl = expect_free(&longer, "x", &opts).await?;
    expect_held(&same, "x", &opts).await?;
    gs.release().await?;
    gl.release().await?;
    g.release().await?;
    Ok(())
}

/// A lock's TTL is more than zero and at most ten years: outside that,
/// `lock` and `try_lock` fail with `InvalidArgument` on every backend
/// (never silently raised or ignored), and the lock stays free.
pub async fn lock_ttl_limits_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    for ttl in [Duration::ZERO, anykv_core::MAX_TTL + Duration::from_secs(1)] {
        let options = LockOptions::new().with_ttl(ttl);
        check_err!(s.lock("l", options.clone()).await, InvalidArgument);
        check_err!(s.try_lock("l", options).await, InvalidArgument);
    }
    let other = ctx.store().await?;
    let free = other.try_lock("l", LockOptions::new()).await?;
    check!(free.is_some(), "the lock is taken after refused calls");
    Ok(())
}
