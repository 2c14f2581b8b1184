//! Cases: keys written with a TTL — expiry, the `Delete` watchers see,
//! refreshing, making a key permanent again, and invalid TTL arguments.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, PutOptions, Store, WatchEvent, WatchOptions};
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, check_err, expect_delete, expect_silence, is_gone, next_event,
    put_with, read_initial, wait_gone, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_ttl {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args ttl: [
            ttl_key_expires,
            ttl_expiry_emits_delete,
            ttl_refreshed_by_put,
            ttl_put_without_ttl_makes_permanent,
            ttl_atomic_put_expires,
            ttl_short_raised_to_minimum,
            ttl_zero_rejected,
            ttl_and_lease_rejected,
        ] }
    };
}

/// How much earlier than its TTL a key may vanish: clock and timer
/// granularity, and the time between the server starting the TTL and the
/// client's clock reading.
const EARLY_TOLERANCE: Duration = Duration::from_millis(400);

/// A client on the case's root and the TTL the suite uses (2 s, raised to
/// the backend's minimum), or "unsupported" unless TTLs work.
async fn ttl_store(ctx: &Ctx) -> Result<(Arc<dyn Store>, Duration), Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = Duration::from_secs(2).max(s.capabilities().min_ttl);
    Ok((s, ttl))
}

/// A key put with a 2 s TTL is present right after the put (to this and
/// another client, in `get`, `exists` and `list`) and still there 400 ms
/// before its TTL runs out (it never vanishes early), and gone from all of
/// them within TTL + [`SLACK`] of the put; a permanent key beside it stays.
pub async fn ttl_key_expires(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    let other = ctx.store().await?;
    let keep = put_with(&s, "keep", "permanent", PutOptions::new()).await?;
    let start = Instant::now();
    let k = put_with(&s, "k", "short-lived", PutOptions::new().with_ttl(ttl)).await?;
    check_eq!(s.get("k").await?, Some(k.clone()));
    check!(s.exists("k").await?, "exists is false right after the put");
    check_eq!(s.list("").await?, vec![k.clone(), keep.clone()]);
    check_eq!(other.get("k").await?, Some(k.clone()));
    // Not early: still there shortly before its TTL has run (the put's
    // reply came after the server started the TTL, so this is safe).
    let almost = ttl.saturating_sub(EARLY_TOLERANCE);
    tokio::time::sleep_until(start + almost).await;
    check_eq!(
        s.get("k").await?,
        Some(k.clone()),
        "the key {almost:?} after the put, before its TTL of {ttl:?} ran out"
    );
    let remaining = (ttl + SLACK).saturating_sub(start.elapsed());
    wait_gone(&s, &["k"], remaining).await?;
    check!(
        is_gone(&other, "k").await?,
        "another client still sees the key"
    );
    check_eq!(s.get("keep").await?, Some(keep.clone()));
    check_eq!(s.list("").await?, vec![keep]);
    Ok(())
}

/// TTL expiry is a `Delete` for watchers, never before the TTL has run: a
/// key watcher and a tree watcher
/// each get one `Delete` per expired key, with the same revision on both
/// streams, greater than the expired pair's and than `Synced`, strictly
/// increasing on the tree; permanent keys get nothing, and re-creating the
/// key gives it a still greater revision.
pub async fn ttl_expiry_emits_delete(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let opts = PutOptions::new().with_ttl(ttl);
    let before_puts = Instant::now();
    let a = put_with(&s, "t/a", "a", opts.clone()).await?;
    let b = put_with(&s, "t/b", "b", opts).await?;
    let p = put_with(&s, "t/p", "permanent", PutOptions::new()).await?;
    let start = Instant::now();
    let mut wt = s.watch_tree("t", WatchOptions::new()).await?;
    let mut wk = s.watch("t/a", WatchOptions::new()).await?;
    let (initial, synced_t) = read_initial(&mut wt, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![a.clone(), b.clone(), p.clone()]);
    let (initial, synced_k) = read_initial(&mut wk, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![a.clone()]);

    // No expiry Delete before the TTL (less a tolerance) has run.
    let early = ttl
        .saturating_sub(EARLY_TOLERANCE)
        .saturating_sub(before_puts.elapsed());
    expect_silence(&mut wt, early).await?;
    let within = (ttl + SLACK).saturating_sub(start.elapsed()) + Duration::from_millis(500);
    let mut last = synced_t.max(p.revision);
    let mut a_deleted = None;
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next_event(&mut wt, within).await? {
            WatchEvent::Delete { key, revision } => {
                let pair = if key == "t/a" { &a } else { &b };
                check!(
                    key == "t/a" || key == "t/b",
                    "Delete of {key:?}, which has no TTL"
                );
                check!(!seen.contains(&key), "Delete of {key:?} twice");
                check!(
                    revision > last && revision > pair.revision,
                    "expiry Delete of {key:?} has revision {revision}, after {last} (pair {})",
                    pair.revision
                );
                last = revision;
                if key == "t/a" {
                    a_deleted = Some(revision);
                }
                seen.push(key);
            }
            other => {
                return Err(Failure::failed(format!(
                    "expected the expiry Deletes of t/a and t/b, got {other:?}"
                )))
            }
        }
    }
    let a_deleted = a_deleted.unwrap_or(0);
    check_eq!(
        expect_delete(&mut wk, "t/a", synced_k.max(a.revision), EVENT_TIMEOUT).await?,
        a_deleted,
        "revision of the expiry Delete of t/a on the key watch and on the tree watch"
    );
    check_eq!(s.get("t/a").await?, None);
    let again = put_with(&s, "t/a", "again", PutOptions::new()).await?;
    check!(
        again.revision > last,
        "re-created key got revision {}, not after the expiry's {last}",
        again.revision
    );
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Put(again.clone())
    );
    check_eq!(
        next_event(&mut wk, EVENT_TIMEOUT).await?,
        WatchEvent::Put(again)
    );
    check_eq!(s.get("t/p").await?, Some(p));
    Ok(())
}

/// Writing a TTL key again with a TTL before it expires extends it: a key
/// re-put every half TTL stays (each read returns the latest write) for
/// well past its first deadline plus [`SLACK`], a watcher sees no `Delete`
/// meanwhile, and once the re-puts stop it expires within TTL + SLACK.
pub async fn ttl_refreshed_by_put(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    let caps = s.capabilities().clone();
    let mut w = if caps.watch {
        let mut w = s.watch("k", WatchOptions::new()).await?;
        check_eq!(
            read_initial(&mut w, EVENT_TIMEOUT).await?.0,
            Vec::<KvPair>::new()
        );
        Some(w)
    } else {
        None
    };
    let opts = PutOptions::new().with_ttl(ttl);
    let start = Instant::now();
    let mut written = vec![put_with(&s, "k", "v0", opts.clone()).await?];
    let mut last_put = Instant::now();
    while start.elapsed() < 2 * ttl + SLACK {
        tokio::time::sleep_until(last_put + ttl / 2).await;
        check_eq!(
            s.get("k").await?.as_ref(),
            written.last(),
            "the key half its TTL of {ttl:?} after its last write, {:?} after the first",
            start.elapsed()
        );
        let v = format!("v{}", written.len());
        written.push(put_with(&s, "k", &v, opts.clone()).await?);
        last_put = Instant::now();
    }
    let last = written
        .last()
        .cloned()
        .unwrap_or_else(|| KvPair::new("k", "", 0));
    match &mut w {
        Some(w) => {
            let within = ttl + SLACK + Duration::from_millis(500);
            let mut previous = 0;
            loop {
                match next_event(w, within).await? {
                    WatchEvent::Put(kv) => {
                        check!(
                            written.contains(&kv),
                            "event {kv:?} matches none of the writes"
                        );
                        check!(kv.revision > previous, "events out of order");
                        if caps.watch_every_revision {
                            check_eq!(
                                Some(&kv),
                                written.iter().find(|p| p.revision > previous),
                                "the next put"
                            );
                        }
                        previous = kv.revision;
                    }
                    WatchEvent::Delete { key, revision } => {
                        check_eq!(
                            previous,
                            last.revision,
                            "the key expired (Delete at {revision}) before its last write was seen"
                        );
                        check_eq!(key, "k");
                        check!(revision > last.revision);
                        break;
                    }
                    other => return Err(Failure::failed(format!("unexpected event {other:?}"))),
                }
            }
            wait_gone(&s, &["k"], SLACK).await?;
        }
        None => {
            let remaining = (ttl + SLACK).saturating_sub(last_put.elapsed());
            wait_gone(&s, &["k"], remaining).await?;
        }
    }
    Ok(())
}

/// A plain `put` after a TTL `put` makes the key permanent: it is still
/// there, with the plain write's value and revision, after TTL + [`SLACK`]
/// and after a TTL key written after it has expired.
pub async fn ttl_put_without_ttl_makes_permanent(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    let opts = PutOptions::new().with_ttl(ttl);
    let start = Instant::now();
    put_with(&s, "k", "with ttl", opts.clone()).await?;
    put_with(&s, "ctl", "with ttl", opts).await?;
    let k = put_with(&s, "k", "permanent", PutOptions::new()).await?;
    wait_gone(&s, &["ctl"], ttl + SLACK).await?;
    tokio::time::sleep_until(start + ttl + SLACK).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_eq!(s.get("k").await?, Some(k.clone()));
    check_eq!(s.list("").await?, vec![k]);
    Ok(())
}

/// `atomic_put` honours a TTL like `put`: a key created with
/// `atomic_put(.., None, ttl)` is there right after and gone within TTL +
/// [`SLACK`], and a create-only `atomic_put` then succeeds again.
pub async fn ttl_atomic_put_expires(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    let start = Instant::now();
    let rev = s
        .atomic_put("k", bytes("v1"), None, PutOptions::new().with_ttl(ttl))
        .await?;
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v1", rev)));
    let remaining = (ttl + SLACK).saturating_sub(start.elapsed());
    wait_gone(&s, &["k"], remaining).await?;
    let rev2 = s
        .atomic_put("k", bytes("v2"), None, PutOptions::new())
        .await?;
    check!(rev2 > rev, "re-created key has revision {rev2} after {rev}");
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v2", rev2)));
    Ok(())
}

/// A TTL below the backend's `min_ttl` (here 1 ms) is raised to it, not
/// refused: the key is written, a watcher sees its `Put` and then its
/// `Delete` no earlier than `min_ttl` and within `min_ttl` plus slack, and
/// it is gone for every read after that.
pub async fn ttl_short_raised_to_minimum(ctx: &Ctx) -> CaseResult {
    let (s, _) = ttl_store(ctx).await?;
    let min = s.capabilities().min_ttl;
    let tiny = Duration::from_millis(1);
    let mut w = if s.capabilities().watch {
        let mut w = s.watch("k", WatchOptions::new()).await?;
        let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
        check_eq!(
            initial,
            Vec::<KvPair>::new(),
            "the key is absent before the put"
        );
        Some(w)
    } else {
        None
    };
    let start = Instant::now();
    let k = put_with(&s, "k", "v", PutOptions::new().with_ttl(tiny)).await?;
    if min >= Duration::from_millis(500) {
        check_eq!(
            s.get("k").await?,
            Some(k.clone()),
            "a key with a TTL of 1 ms right after the put (min_ttl {min:?})"
        );
    }
    if let Some(w) = w.as_mut() {
        check_eq!(
            next_event(w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(k.clone())
        );
        expect_delete(w, "k", k.revision, min.max(tiny) + SLACK).await?;
        // 100 ms of tolerance for clocks and timer granularity.
        check!(
            start.elapsed() + Duration::from_millis(100) >= min,
            "the key expired after {:?}, before min_ttl {min:?}",
            start.elapsed()
        );
    }
    let remaining = (min.max(tiny) + SLACK).saturating_sub(start.elapsed());
    wait_gone(&s, &["k"], remaining).await?;
    Ok(())
}

/// A TTL of zero is an `InvalidArgument` for `put` and `atomic_put`, and
/// writes nothing: an absent key stays absent, a present key keeps its
/// value and revision.
pub async fn ttl_zero_rejected(ctx: &Ctx) -> CaseResult {
    let (s, _) = ttl_store(ctx).await?;
    let zero = PutOptions::new().with_ttl(Duration::ZERO);
    check_err!(s.put("k", bytes("v"), zero.clone()).await, InvalidArgument);
    check_err!(
        s.atomic_put("k", bytes("v"), None, zero.clone()).await,
        InvalidArgument
    );
    check_eq!(s.get("k").await?, None);
    check!(!s.exists("k").await?);
    let e = put_with(&s, "e", "v1", PutOptions::new()).await?;
    check_err!(s.put("e", bytes("v2"), zero.clone()).await, InvalidArgument);
    check_err!(
        s.atomic_put("e", bytes("v2"), Some(e.revision), zero).await,
        InvalidArgument
    );
    check_eq!(s.get("e").await?, Some(e.clone()));
    check_eq!(s.list("").await?, vec![e]);
    Ok(())
}

/// A write with both a TTL and a lease is an `InvalidArgument` and writes
/// nothing, for an absent and for a present key; the same lease alone
/// works.
pub async fn ttl_and_lease_rejected(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = ttl_store(ctx).await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let lease = s.grant_lease(ttl).await?;
    let both = PutOptions::new().with_ttl(ttl).with_lease(lease.id());
    check_err!(s.put("k", bytes("v"), both.clone()).await, InvalidArgument);
    check_err!(
        s.atomic_put("k", bytes("v"), None, both.clone()).await,
        InvalidArgument
    );
    check_eq!(s.get("k").await?, None);
    let e = put_with(&s, "e", "v1", PutOptions::new()).await?;
    check_err!(s.put("e", bytes("v2"), both).await, InvalidArgument);
    check_eq!(s.get("e").await?, Some(e.clone()));
    let l = put_with(&s, "l", "leased", PutOptions::new().with_lease(lease.id())).await?;
    check_eq!(s.list("").await?, vec![e, l]);
    lease.revoke().await?;
    check_eq!(s.get("l").await?, None);
    Ok(())
}
