//! Cases: every operation while other clients race it on the same keys —
//! reads during and right after writes, listings during inserts,
//! `delete_tree` against puts, large values rewritten while read, TTL
//! deadlines and lease revokes against rewrites, `close()` against writes
//! and watches, lock releases against timeouts, and thousands of TTL keys
//! due at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{Bytes, ErrorKind, LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, next_event, next_item, read_initial, wait_gone, CaseResult, Ctx,
    Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_contend {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args contend: [
            contend_list_during_inserts,
            contend_reads_after_other_clients_writes,
            contend_delete_tree_against_puts,
            contend_large_values_never_torn,
            contend_ttl_rewrite_before_deadline_survives,
            contend_lease_revoke_against_rewrite,
            contend_put_during_close_persists,
            contend_watch_opened_while_closing_ends,
            contend_lock_release_against_waiter_timeout,
            contend_many_ttl_keys_expire_together,
        ] }
    };
}

async fn join_all<T: 'static>(mut tasks: JoinSet<Result<T, Failure>>) -> Result<Vec<T>, Failure> {
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        out.push(joined.map_err(|e| Failure::failed(format!("a racing task panicked: {e}")))??);
    }
    Ok(out)
}

/// Listings taken while 4 clients insert and delete keys around 200 keys
/// that exist throughout: each listing is sorted, shows no key twice and
/// misses none of the 200.
pub async fn contend_list_during_inserts(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut stable = BTreeSet::new();
    for i in 0..200 {
        let k = format!("t/s{i:03}");
        s.put(&k, bytes("stable"), PutOptions::new()).await?;
        stable.insert(k);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for w in 0..4 {
        let c = ctx.store().await?;
        let stop = stop.clone();
        writers.spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 5000 {
                // Keys sorting before, between and after the stable ones.
                let k = format!("t/{}{w}-{i}", ["a", "s050x", "z"][i as usize % 3]);
                c.put(&k, bytes("x"), PutOptions::new()).await?;
                if i.is_multiple_of(2) {
                    c.delete(&k).await?;
                }
                i += 1;
                tokio::task::yield_now().await;
            }
            Ok(())
        });
    }
    for _ in 0..20 {
        let listed = s.list("t").await?;
        let keys: Vec<&str> = listed.iter().map(|p| p.key.as_str()).collect();
        check!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "a listing during inserts is unsorted or has a key twice"
        );
        let present: BTreeSet<&str> = keys.iter().copied().collect();
        let missing: Vec<&String> = stable
            .iter()
            .filter(|k| !present.contains(k.as_str()))
            .collect();
        check!(
            missing.is_empty(),
            "a listing during inserts missed keys that existed throughout: {:?}",
            &missing[..missing.len().min(5)]
        );
    }
    stop.store(true, Ordering::Relaxed);
    join_all(writers).await?;
    Ok(())
}

/// Once another client's write returned, `get`, `exists` and `list` of
/// every other client show it (or something newer), and once its delete
/// returned, they show the key gone: 4 writers, 4 readers, 50 rounds.
pub async fn contend_reads_after_other_clients_writes(ctx: &Ctx) -> CaseResult {
    let mut tasks = JoinSet::new();
    for w in 0..4 {
        let writer = ctx.store().await?;
        let reader = ctx.store().await?;
        tasks.spawn(async move {
            let key = format!("k{w}");
            for round in 0..50u32 {
                let value = bytes(format!("{round}"));
                let rev = writer.put(&key, value.clone(), PutOptions::new()).await?;
                let got = reader.get(&key).await?;
                check_eq!(
                    got.map(|p| (p.value, p.revision)),
                    Some((value.clone(), rev)),
                    "another client's get right after a put returned"
                );
                check!(
                    reader.exists(&key).await?,
                    "exists is false right after a put"
                );
                let listed = reader.list("").await?;
                check!(
                    listed.iter().any(|p| p.key == key && p.revision >= rev),
                    "list misses a key right after its put returned"
                );
                if round % 5 == 4 {
                    check!(
                        writer.delete(&key).await?,
                        "delete of a present key said false"
                    );
                    check!(
                        reader.get(&key).await?.is_none(),
                        "another client's get shows a key right after its delete returned"
                    );
                    check!(!reader.exists(&key).await?, "exists right after the delete");
                }
            }
            Ok(())
        });
    }
    join_all(tasks).await?;
    Ok(())
}

/// `delete_tree` while 4 clients keep rewriting keys below its prefix: a
/// watch replays to exactly `list` afterwards (a key rewritten during it
/// is either deleted with an event or kept), and with
/// `watch_every_revision` its count equals its `Delete` events.
pub async fn contend_delete_tree_against_puts(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    for i in 0..300 {
        s.put(&format!("t/k{i:03}"), bytes("0"), PutOptions::new())
            .await?;
    }
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    let mut state: BTreeMap<String, (Bytes, u64)> = initial
        .into_iter()
        .map(|p| (p.key, (p.value, p.revision)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for w in 0..4u64 {
        let c = ctx.store().await?;
        let stop = stop.clone();
        writers.spawn(async move {
            let mut i = w;
            let mut puts = 0u64;
            // At most 500 each, so the watch's buffer holds them all.
            while !stop.load(Ordering::Relaxed) && puts < 500 {
                i = (i * 7 + 13) % 300;
                c.put(
                    &format!("t/k{i:03}"),
                    bytes(format!("w{w}")),
                    PutOptions::new(),
                )
                .await?;
                puts += 1;
                tokio::task::yield_now().await;
            }
            Ok(puts)
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deleted = s.delete_tree("t").await?;
    stop.store(true, Ordering::Relaxed);
    let puts: u64 = join_all(writers).await?.into_iter().sum();
    let expected: BTreeMap<String, (Bytes, u64)> = s
        .list("t")
        .await?
        .into_iter()
        .map(|p| (p.key, (p.value, p.revision)))
        .collect();
    let mut put_events = 0u64;
    let mut delete_events = 0u64;
    let mut last = 0u64;
    let deadline = Instant::now() + EVENT_TIMEOUT * 2;
    let every = s.capabilities().watch_every_revision;
    while state != expected || (every && put_events < puts) {
        let left = deadline.saturating_duration_since(Instant::now());
        check!(
            !left.is_zero(),
            "the watch never converged after delete_tree: {} keys replayed, {} listed",
            state.len(),
            expected.len()
        );
        match next_event(&mut w, left.min(EVENT_TIMEOUT)).await? {
            WatchEvent::Put(kv) => {
                check!(
                    kv.revision > last,
                    "revisions go back: {} after {last}",
                    kv.revision
                );
                last = kv.revision;
                put_events += 1;
                state.insert(kv.key, (kv.value, kv.revision));
            }
            WatchEvent::Delete { key, revision } => {
                check!(
                    revision > last,
                    "revisions go back: {revision} after {last}"
                );
                last = revision;
                delete_events += 1;
                state.remove(&key);
            }
            WatchEvent::Synced { revision } => {
                return Err(Failure::failed(format!("a second Synced at {revision}")))
            }
        }
    }
    if every {
        check_eq!(
            delete_events,
            deleted,
            "Delete events against the count delete_tree returned"
        );
    }
    check!(deleted > 0, "delete_tree deleted nothing of 300 keys");
    Ok(())
}

/// A value this large is rewritten while read and watched.
fn large_size(s: &Arc<dyn Store>) -> usize {
    (512 * 1024).min(s.capabilities().max_value_size / 2)
}

fn uniform(value: &[u8], size: usize) -> Option<u8> {
    let first = *value.first()?;
    (value.len() == size && value.iter().all(|b| *b == first)).then_some(first)
}

/// Large values (512 KiB of one byte each) rewritten by one client while
/// 3 others read them and a watch follows: every read and every event is
/// one whole value, never a mix of two.
pub async fn contend_large_values_never_torn(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let size = large_size(&s);
    s.put("big", Bytes::from(vec![0u8; size]), PutOptions::new())
        .await?;
    let mut w = if s.capabilities().watch {
        let mut w = s.watch("big", WatchOptions::new()).await?;
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        Some(w)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    {
        let c = ctx.store().await?;
        let stop = stop.clone();
        tasks.spawn(async move {
            for b in 1..=30u8 {
                c.put("big", Bytes::from(vec![b; size]), PutOptions::new())
                    .await?;
            }
            stop.store(true, Ordering::Relaxed);
            Ok(0u32)
        });
    }
    for _ in 0..3 {
        let c = ctx.store().await?;
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) && reads < 500 {
                let kv = c
                    .get("big")
                    .await?
                    .ok_or_else(|| Failure::failed("the large key vanished while rewritten"))?;
                check!(
                    uniform(&kv.value, size).is_some(),
                    "a get returned a torn value of {} bytes",
                    kv.value.len()
                );
                reads += 1;
                tokio::task::yield_now().await;
            }
            Ok(reads)
        });
    }
    join_all(tasks).await?;
    if let Some(w) = w.as_mut() {
        loop {
            match next_event(w, EVENT_TIMEOUT).await? {
                WatchEvent::Put(kv) => {
                    let b = uniform(&kv.value, size).ok_or_else(|| {
                        Failure::failed(format!(
                            "the watch delivered a torn value of {} bytes",
                            kv.value.len()
                        ))
                    })?;
                    if b == 30 {
                        break;
                    }
                }
                other => return Err(Failure::failed(format!("unexpected event {other:?}"))),
            }
        }
    }
    Ok(())
}

/// Ten TTL keys, each rewritten without a TTL between 300 ms and 50 ms
/// before its deadline: every one survives, with the rewritten value,
/// well after the old deadline.
pub async fn contend_ttl_rewrite_before_deadline_survives(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = Duration::from_secs(2).max(s.capabilities().min_ttl);
    let mut tasks = JoinSet::new();
    for i in 0..10u64 {
        let c = ctx.store().await?;
        tasks.spawn(async move {
            let key = format!("k{i}");
            let start = Instant::now();
            c.put(&key, bytes("ttl"), PutOptions::new().with_ttl(ttl))
                .await?;
            let before = Duration::from_millis(300 - i * 25);
            tokio::time::sleep_until(start + ttl - before).await;
            let rev = c.put(&key, bytes("kept"), PutOptions::new()).await?;
            Ok((key, rev))
        });
    }
    let rewritten = join_all(tasks).await?;
    tokio::time::sleep(ttl + SLACK).await;
    for (key, rev) in rewritten {
        let got = s.get(&key).await?;
        check_eq!(
            got.map(|p| (p.value, p.revision)),
            Some((bytes("kept"), rev)),
            "{key}, rewritten without a TTL just before its deadline"
        );
    }
    Ok(())
}

/// Keys of a lease rewritten without the lease while the lease is
/// revoked: whichever lands first, every rewritten key survives (detached
/// before the revoke, or re-created after it) and every other key of the
/// lease is gone.
pub async fn contend_lease_revoke_against_rewrite(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let other = ctx.store().await?;
    let lease = s.grant_lease(Duration::from_secs(30)).await?;
    for i in 0..20 {
        s.put(
            &format!("k{i:02}"),
            bytes("leased"),
            PutOptions::new().with_lease(lease.id()),
        )
        .await?;
    }
    let mut rewrites = JoinSet::new();
    for i in (0..20).step_by(2) {
        let o = other.clone();
        rewrites.spawn(async move {
            o.put(&format!("k{i:02}"), bytes("free"), PutOptions::new())
                .await
                .map_err(Failure::from)
        });
    }
    let revoke = lease.revoke();
    let (revoked, _) = tokio::join!(revoke, join_all(rewrites));
    revoked?;
    let mut expected: Vec<String> = (0..20).step_by(2).map(|i| format!("k{i:02}")).collect();
    expected.sort();
    wait_gone(
        &s,
        &(1..20)
            .step_by(2)
            .map(|i| format!("k{i:02}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        SLACK,
    )
    .await?;
    let listed = s.list("").await?;
    let keys: Vec<String> = listed.iter().map(|p| p.key.clone()).collect();
    check_eq!(keys, expected, "the keys left after the revoke");
    check!(
        listed.iter().all(|p| p.value == bytes("free")),
        "a surviving key does not hold the rewritten value"
    );
    tokio::time::sleep(SLACK).await;
    check_eq!(s.list("").await?.len(), 10, "rewritten keys vanished later");
    Ok(())
}

/// A client writes in a loop while it is closed: every put that returned
/// a revision is there afterwards (to another client), and every call
/// after `close()` returned fails with `Closed`.
pub async fn contend_put_during_close_persists(ctx: &Ctx) -> CaseResult {
    let s = ctx.unmanaged_store().await?;
    let reader = ctx.store().await?;
    let writer = s.clone();
    let task = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..10_000u32 {
            match writer
                .put(&format!("k{i:05}"), bytes("v"), PutOptions::new())
                .await
            {
                Ok(rev) => acked.push((format!("k{i:05}"), rev)),
                Err(e) => return (acked, Some(e)),
            }
            tokio::task::yield_now().await;
        }
        (acked, None)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.close().await?;
    check_eq!(
        s.put("after", bytes("v"), PutOptions::new())
            .await
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::Closed),
        "a put after close() returned"
    );
    let (acked, err) = task
        .await
        .map_err(|e| Failure::failed(format!("the writer panicked: {e}")))?;
    if let Some(e) = err {
        check_eq!(e.kind(), ErrorKind::Closed, "the racing put's error: {e}");
    }
    check!(!acked.is_empty(), "no put returned before close()");
    let listed: BTreeMap<String, u64> = reader
        .list("")
        .await?
        .into_iter()
        .map(|p| (p.key, p.revision))
        .collect();
    for (k, rev) in &acked {
        check_eq!(
            listed.get(k),
            Some(rev),
            "{k}, acknowledged while the store closed"
        );
    }
    Ok(())
}

/// Watches opened while the store closes end: each call either fails with
/// `Closed` or returns a stream that ends (or yields an error) soon after
/// `close()` returned.
pub async fn contend_watch_opened_while_closing_ends(ctx: &Ctx) -> CaseResult {
    let s = ctx.unmanaged_store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    s.put("k", bytes("v"), PutOptions::new()).await?;
    let mut opens = JoinSet::new();
    for i in 0..20u64 {
        let s = s.clone();
        opens.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 5)).await;
            if i % 2 == 0 {
                s.watch("k", WatchOptions::new()).await
            } else {
                s.watch_tree("", WatchOptions::new()).await
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    s.close().await?;
    let closed = Instant::now();
    while let Some(joined) = opens.join_next().await {
        let opened = joined.map_err(|e| Failure::failed(format!("a watch call panicked: {e}")))?;
        match opened {
            Err(e) => check_eq!(
                e.kind(),
                ErrorKind::Closed,
                "a watch opened while closing: {e}"
            ),
            Ok(mut w) => loop {
                let left = EVENT_TIMEOUT.saturating_sub(closed.elapsed());
                match next_item(&mut w, left).await? {
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            },
        }
    }
    Ok(())
}

/// A lock released just as a waiter's timeout runs out, five times with
/// different offsets: each time the lock ends free or held by exactly one
/// client — the waiter either holds it (and a third client cannot take
/// it) or got `LockTimeout` (and a third client can).
pub async fn contend_lock_release_against_waiter_timeout(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    for round in 0..5u64 {
        let name = format!("l{round}");
        let held = a.lock(&name, LockOptions::new()).await?;
        let timeout = Duration::from_millis(600);
        let b2 = b.clone();
        let n2 = name.clone();
        let waiter =
            tokio::spawn(
                async move { b2.lock(&n2, LockOptions::new().with_timeout(timeout)).await },
            );
        tokio::time::sleep(
            timeout - Duration::from_millis(100) + Duration::from_millis(round * 50),
        )
        .await;
        held.release().await?;
        let got = waiter
            .await
            .map_err(|e| Failure::failed(format!("the waiter panicked: {e}")))?;
        // Let a release the waiter's timeout may have raced settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let third = c.try_lock(&name, LockOptions::new()).await?;
        match got {
            Ok(guard) => {
                check!(
                    third.is_none(),
                    "round {round}: the waiter holds the lock and a third client took it too"
                );
                check!(
                    !guard.is_lost(),
                    "round {round}: the waiter's fresh lock is lost"
                );
                guard.release().await?;
            }
            Err(e) => {
                check_eq!(
                    e.kind(),
                    ErrorKind::LockTimeout,
                    "round {round}: the waiter's error: {e}"
                );
                check!(
                    third.is_some(),
                    "round {round}: the waiter timed out but the lock stayed taken"
                );
            }
        }
    }
    Ok(())
}

/// 2,000 keys written by 8 clients with the same TTL, all due within a
/// moment: every one is gone within its TTL plus slack, and a watch sees a
/// `Delete` for every one of them.
pub async fn contend_many_ttl_keys_expire_together(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    const KEYS: usize = 2000;
    let ttl = Duration::from_secs(3).max(s.capabilities().min_ttl);
    let mut w = if s.capabilities().watch {
        let mut w = s.watch_tree("t", WatchOptions::new()).await?;
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        Some(w)
    } else {
        None
    };
    let mut tasks = JoinSet::new();
    for part in 0..8 {
        let c = ctx.store().await?;
        tasks.spawn(async move {
            for i in (part..KEYS).step_by(8) {
                c.put(
                    &format!("t/k{i:04}"),
                    bytes("v"),
                    PutOptions::new().with_ttl(ttl),
                )
                .await?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    join_all(tasks).await?;
    let written = started.elapsed();
    let deadline = Instant::now() + ttl + SLACK * 3;
    let mut deleted = BTreeSet::new();
    if let Some(w) = w.as_mut() {
        while deleted.len() < KEYS {
            let left = deadline.saturating_duration_since(Instant::now()) + EVENT_TIMEOUT;
            match next_event(w, left).await? {
                WatchEvent::Delete { key, .. } => {
                    deleted.insert(key);
                }
                WatchEvent::Put(_) => {}
                other => return Err(Failure::failed(format!("unexpected event {other:?}"))),
            }
        }
    }
    let left = deadline.saturating_duration_since(Instant::now()) + SLACK;
    crate::wait_until(left, "2,000 TTL keys are gone", || {
        let s = s.clone();
        async move { Ok(s.list("t").await?.is_empty()) }
    })
    .await?;
    check!(
        w.is_none() || deleted.len() == KEYS,
        "Delete events for {} of {KEYS} keys (writing took {written:?})",
        deleted.len()
    );
    Ok(())
}
