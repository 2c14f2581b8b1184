//! Cases: rules of the contract that are easy to get almost right, each
//! checked two independent ways — compare-and-swap on revisions (never
//! values), create-only on empty values, revision 0, fractional TTLs,
//! `try_lock` and locks of one store, renewed locks, chained CAS across a
//! reopen, TTL deadlines that must not outlive their key, lock names that
//! nest with roots, and roots with dot segments.

use std::sync::Arc;
use std::time::Duration;

use anykv_core::{ErrorKind, LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, check_err, expect_silence, is_gone, next_event, put_with, read_initial,
    wait_gone, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_rules {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args rules: [
            rules_cas_compares_revisions_not_values,
            rules_cas_delete_compares_revisions_not_values,
            rules_cas_future_revision_fails,
            rules_cas_delete_future_revision_fails,
            rules_create_only_fails_on_empty_value,
            rules_create_only_fails_on_created_empty_value,
            rules_cas_revision_zero_absent_creates_nothing,
            rules_cas_delete_revision_zero_absent_is_not_found,
            rules_ttl_fractional_honoured,
            rules_ttl_fractional_refresh_honoured,
            rules_try_lock_held_returns_promptly,
            rules_try_lock_with_waiter_returns_promptly,
            rules_lock_same_store_excludes,
            rules_try_lock_same_store_refused,
            rules_lock_renewed_blocks_try_lock,
            rules_lock_renewed_times_out_waiter,
            rules_cas_chain_survives_reopen,
            rules_cas_old_revision_fails_after_reopen,
            rules_ttl_recreated_without_ttl_survives,
            rules_ttl_recreated_longer_ttl_survives_old_deadline,
            rules_ttl_keys_outlive_writer_close,
            rules_ttl_keys_outlive_writer_drop,
            rules_lock_names_nest_with_roots,
            rules_lock_names_nest_with_roots_reversed,
            rules_root_dot_segments_refused,
            rules_root_dotted_names_not_parent,
            rules_value_too_large_names_canonical_key,
            rules_stats_count_own_handles,
            rules_lock_wait_cancelled_at_handover_leaves_lock_free,
            rules_ttl_from_short_lived_runtime_expires,
        ] }
    };
}

/// Writes `x`, `y`, `x` to one key; returns the three revisions.
async fn x_y_x(s: &Arc<dyn Store>) -> Result<[u64; 3], Failure> {
    let r1 = s.put("k", bytes("x"), PutOptions::new()).await?;
    let r2 = s.put("k", bytes("y"), PutOptions::new()).await?;
    let r3 = s.put("k", bytes("x"), PutOptions::new()).await?;
    check!(
        r1 < r2 && r2 < r3,
        "revisions {r1}, {r2}, {r3} do not increase"
    );
    Ok([r1, r2, r3])
}

/// CAS compares revisions, never values: after `x`, `y`, `x`, a CAS with
/// the first `x`'s revision fails with `KeyModified` naming the current
/// revision, although the value it expected is there again.
pub async fn rules_cas_compares_revisions_not_values(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let [r1, _, r3] = x_y_x(&s).await?;
    let e = check_err!(
        s.atomic_put("k", bytes("z"), Some(r1), PutOptions::new())
            .await,
        KeyModified
    );
    if let anykv_core::Error::KeyModified {
        expected, actual, ..
    } = &e
    {
        check_eq!((*expected, *actual), (r1, r3), "KeyModified's revisions");
    }
    check_eq!(
        s.get("k").await?.map(|p| (p.value, p.revision)),
        Some((bytes("x"), r3))
    );
    Ok(())
}

/// The same rule for compare-and-delete: after `x`, `y`, `x`,
/// `atomic_delete` with the first `x`'s revision fails and the key stays.
pub async fn rules_cas_delete_compares_revisions_not_values(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let [r1, _, r3] = x_y_x(&s).await?;
    check_err!(s.atomic_delete("k", r1).await, KeyModified);
    check_eq!(s.get("k").await?.map(|p| p.revision), Some(r3));
    s.atomic_delete("k", r3).await?;
    check!(
        is_gone(&s, "k").await?,
        "the key is still there after its CAS delete"
    );
    Ok(())
}

/// A CAS with the current revision + 1 fails (`KeyModified`, the current
/// revision reported) and changes nothing.
pub async fn rules_cas_future_revision_fails(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let kv = put_with(&s, "k", "v", PutOptions::new()).await?;
    let e = check_err!(
        s.atomic_put("k", bytes("w"), Some(kv.revision + 1), PutOptions::new())
            .await,
        KeyModified
    );
    if let anykv_core::Error::KeyModified { actual, .. } = e {
        check_eq!(actual, kv.revision, "KeyModified's current revision");
    }
    check_eq!(s.get("k").await?, Some(kv));
    Ok(())
}

/// A compare-and-delete with the current revision + 1 fails and keeps
/// the key.
pub async fn rules_cas_delete_future_revision_fails(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let kv = put_with(&s, "k", "v", PutOptions::new()).await?;
    check_err!(s.atomic_delete("k", kv.revision + 1).await, KeyModified);
    check_err!(s.atomic_delete("k", u64::MAX).await, KeyModified);
    check_eq!(s.get("k").await?, Some(kv));
    Ok(())
}

/// Create-only fails with `KeyExists` on a key whose value is empty (an
/// empty value is a value, not an absent key).
pub async fn rules_create_only_fails_on_empty_value(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let kv = put_with(&s, "k", "", PutOptions::new()).await?;
    check_err!(
        s.atomic_put("k", bytes("x"), None, PutOptions::new()).await,
        KeyExists
    );
    check_eq!(s.get("k").await?, Some(kv));
    Ok(())
}

/// A key created empty by create-only exists: a second create-only fails,
/// and another client sees the empty value.
pub async fn rules_create_only_fails_on_created_empty_value(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let other = ctx.store().await?;
    let rev = s
        .atomic_put("k", bytes(""), None, PutOptions::new())
        .await?;
    check_err!(
        other
            .atomic_put("k", bytes("x"), None, PutOptions::new())
            .await,
        KeyExists
    );
    check!(other.exists("k").await?, "an empty key does not exist");
    check_eq!(
        other.get("k").await?.map(|p| (p.value, p.revision)),
        Some((bytes(""), rev))
    );
    Ok(())
}

/// `atomic_put` with revision 0 on an absent key is `KeyNotFound` and
/// creates nothing: no key, no listing, no watch event.
pub async fn rules_cas_revision_zero_absent_creates_nothing(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut w = if s.capabilities().watch {
        let mut w = s.watch_tree("", WatchOptions::new()).await?;
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        Some(w)
    } else {
        None
    };
    check_err!(
        s.atomic_put("k", bytes("v"), Some(0), PutOptions::new())
            .await,
        KeyNotFound
    );
    check!(is_gone(&s, "k").await?, "a failed CAS created the key");
    check_eq!(s.list("").await?, vec![]);
    if let Some(w) = w.as_mut() {
        expect_silence(w, Duration::from_millis(300)).await?;
    }
    Ok(())
}

/// `atomic_delete` with revision 0 on an absent key is `KeyNotFound`, and
/// a later create-only of that key succeeds (nothing was left behind).
pub async fn rules_cas_delete_revision_zero_absent_is_not_found(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    check_err!(s.atomic_delete("k", 0).await, KeyNotFound);
    check!(
        is_gone(&s, "k").await?,
        "a failed compare-and-delete created the key"
    );
    s.atomic_put("k", bytes("v"), None, PutOptions::new())
        .await?;
    check_err!(s.atomic_delete("k", 0).await, KeyModified);
    Ok(())
}

/// A fractional TTL, raised to the backend's minimum plus 500 ms when that
/// is larger than 1.5 s.
fn fractional_ttl(s: &Arc<dyn Store>) -> Duration {
    Duration::from_millis(1500).max(s.capabilities().min_ttl + Duration::from_millis(500))
}

/// A fractional TTL (1.5 s) is honoured, not truncated: the key is alive
/// at 73 % of it and gone soon after it.
pub async fn rules_ttl_fractional_honoured(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = fractional_ttl(&s);
    let start = Instant::now();
    put_with(&s, "k", "v", PutOptions::new().with_ttl(ttl)).await?;
    tokio::time::sleep_until(start + ttl.mul_f64(0.73)).await;
    check!(
        s.exists("k").await?,
        "a key with a {ttl:?} TTL was gone after {:?}: the TTL was truncated",
        start.elapsed()
    );
    wait_gone(&s, &["k"], ttl + SLACK).await
}

/// A fractional TTL refreshed by a second put counts from that put: a key
/// put with 1.5 s, rewritten with 1.5 s at 1 s, is alive at 2.1 s.
pub async fn rules_ttl_fractional_refresh_honoured(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = fractional_ttl(&s);
    put_with(&s, "k", "v1", PutOptions::new().with_ttl(ttl)).await?;
    tokio::time::sleep(ttl.mul_f64(0.66)).await;
    let rewritten = Instant::now();
    put_with(&s, "k", "v2", PutOptions::new().with_ttl(ttl)).await?;
    tokio::time::sleep_until(rewritten + ttl.mul_f64(0.73)).await;
    check_eq!(
        s.get("k").await?.map(|p| p.value),
        Some(bytes("v2")),
        "the refreshed key after {:?} of its second {ttl:?} TTL",
        rewritten.elapsed()
    );
    wait_gone(&s, &["k"], ttl + SLACK).await
}

/// A short lock TTL the suite uses for lock rules (the backend's minimum
/// when that is larger than 2 s).
fn lock_ttl(s: &Arc<dyn Store>) -> Duration {
    Duration::from_secs(2).max(s.capabilities().min_ttl)
}

/// How long `try_lock` may take: it never waits for the holder.
fn prompt(ctx: &Ctx) -> Duration {
    ctx.request_timeout().min(Duration::from_secs(3))
}

/// `try_lock` on a lock another client holds returns `None` promptly, not
/// after the holder's TTL.
pub async fn rules_try_lock_held_returns_promptly(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let held = a
        .lock("l", LockOptions::new().with_ttl(Duration::from_secs(30)))
        .await?;
    let started = Instant::now();
    let r = b.try_lock("l", LockOptions::new()).await?;
    check!(r.is_none(), "try_lock got a held lock");
    check!(
        started.elapsed() < prompt(ctx),
        "try_lock on a held lock took {:?}",
        started.elapsed()
    );
    held.release().await?;
    Ok(())
}

/// `try_lock` returns promptly even while another client is queued on the
/// lock, and the queued client gets it after the release.
pub async fn rules_try_lock_with_waiter_returns_promptly(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    let held = a.lock("l", LockOptions::new()).await?;
    let waiter = tokio::spawn(async move { b.lock("l", LockOptions::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    check!(
        c.try_lock("l", LockOptions::new()).await?.is_none(),
        "try_lock got a lock that is held and waited for"
    );
    check!(
        started.elapsed() < prompt(ctx),
        "try_lock took {:?}",
        started.elapsed()
    );
    check!(!waiter.is_finished(), "the waiter got a held lock");
    held.release().await?;
    let got = tokio::time::timeout(EVENT_TIMEOUT, waiter)
        .await
        .map_err(|_| Failure::failed("the waiter did not get the released lock"))?
        .map_err(|e| Failure::failed(format!("the waiter panicked: {e}")))??;
    got.release().await?;
    Ok(())
}

/// Two `lock` calls of one store on one name exclude each other: the
/// second waits until the first is released.
pub async fn rules_lock_same_store_excludes(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    let first = s.lock("l", LockOptions::new()).await?;
    let s2 = s.clone();
    let second = tokio::spawn(async move { s2.lock("l", LockOptions::new()).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    check!(
        !second.is_finished(),
        "a second lock call of the same store got a held lock"
    );
    let t1 = first.fencing_token();
    first.release().await?;
    let got = tokio::time::timeout(EVENT_TIMEOUT, second)
        .await
        .map_err(|_| Failure::failed("the second lock call never got the released lock"))?
        .map_err(|e| Failure::failed(format!("the second lock call panicked: {e}")))??;
    check!(
        got.fencing_token() > t1,
        "fencing tokens {t1} then {}",
        got.fencing_token()
    );
    got.release().await?;
    Ok(())
}

/// `try_lock` of the store that holds the lock returns `None`: a lock is
/// not re-entrant.
pub async fn rules_try_lock_same_store_refused(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    let held = s.lock("l", LockOptions::new()).await?;
    check!(
        s.try_lock("l", LockOptions::new()).await?.is_none(),
        "the holder's own store took its lock a second time"
    );
    held.release().await?;
    let again = s.try_lock("l", LockOptions::new()).await?;
    check!(again.is_some(), "the released lock could not be taken");
    Ok(())
}

/// A lock kept by renewal past several TTLs keeps everyone else out:
/// `try_lock` at 3 × TTL still gets `None`, and the holder is not lost.
pub async fn rules_lock_renewed_blocks_try_lock(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let ttl = lock_ttl(&a);
    let held = a.lock("l", LockOptions::new().with_ttl(ttl)).await?;
    for _ in 0..3 {
        tokio::time::sleep(ttl).await;
        check!(
            b.try_lock("l", LockOptions::new()).await?.is_none(),
            "another client took a lock whose holder keeps it alive"
        );
    }
    check!(!held.is_lost(), "a lock kept alive says it is lost");
    held.release().await?;
    Ok(())
}

/// A waiter whose timeout spans 2.5 lock TTLs of a renewed lock times out
/// with `LockTimeout`, and the holder still holds.
pub async fn rules_lock_renewed_times_out_waiter(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let ttl = lock_ttl(&a);
    let held = a.lock("l", LockOptions::new().with_ttl(ttl)).await?;
    let started = Instant::now();
    check_err!(
        b.lock("l", LockOptions::new().with_timeout(ttl.mul_f64(2.5)))
            .await,
        LockTimeout
    );
    check!(
        started.elapsed() >= ttl.mul_f64(2.5) - Duration::from_millis(100),
        "the waiter gave up after {:?}",
        started.elapsed()
    );
    check!(!held.is_lost(), "the renewed lock says it is lost");
    held.release().await?;
    Ok(())
}

/// A chain of CAS writes goes on across a close and reopen of the client:
/// the revision read before the close is the one the new client compares.
pub async fn rules_cas_chain_survives_reopen(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut rev = s
        .atomic_put("k", bytes("0"), None, PutOptions::new())
        .await?;
    for i in 1..=3u32 {
        rev = s
            .atomic_put("k", bytes(i.to_string()), Some(rev), PutOptions::new())
            .await?;
    }
    s.close().await?;
    let s = ctx.store().await?;
    let kv = s.get("k").await?;
    check_eq!(kv.map(|p| (p.value, p.revision)), Some((bytes("3"), rev)));
    let next = s
        .atomic_put("k", bytes("4"), Some(rev), PutOptions::new())
        .await?;
    check!(
        next > rev,
        "CAS after reopen returned {next}, not above {rev}"
    );
    Ok(())
}

/// After a close and reopen, a CAS with a revision older than the last
/// write still fails: the new client does not start from scratch.
pub async fn rules_cas_old_revision_fails_after_reopen(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("k", bytes("a"), PutOptions::new()).await?;
    let r2 = s
        .atomic_put("k", bytes("b"), Some(r1), PutOptions::new())
        .await?;
    s.close().await?;
    let s = ctx.store().await?;
    check_err!(
        s.atomic_put("k", bytes("c"), Some(r1), PutOptions::new())
            .await,
        KeyModified
    );
    check_err!(s.atomic_delete("k", r1).await, KeyModified);
    check_eq!(s.get("k").await?.map(|p| p.revision), Some(r2));
    Ok(())
}

/// The TTL the suite uses for the TTL-deadline rules.
fn ttl_of(s: &Arc<dyn Store>) -> Duration {
    Duration::from_secs(2).max(s.capabilities().min_ttl)
}

/// A TTL key deleted and re-created without a TTL is not removed by the
/// old TTL: it is there, unchanged, well after the old deadline.
pub async fn rules_ttl_recreated_without_ttl_survives(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = ttl_of(&s);
    let start = Instant::now();
    put_with(&s, "k", "old", PutOptions::new().with_ttl(ttl)).await?;
    check!(s.delete("k").await?, "delete of the TTL key returned false");
    let kv = put_with(&s, "k", "new", PutOptions::new()).await?;
    tokio::time::sleep_until(start + ttl + SLACK).await;
    check_eq!(
        s.get("k").await?,
        Some(kv),
        "the re-created key after the old deadline"
    );
    Ok(())
}

/// A TTL key deleted and re-created with a longer TTL lives to its new
/// deadline, not the old one.
pub async fn rules_ttl_recreated_longer_ttl_survives_old_deadline(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().ttl, "ttl")?;
    let ttl = ttl_of(&s);
    let start = Instant::now();
    put_with(&s, "k", "old", PutOptions::new().with_ttl(ttl)).await?;
    check!(s.delete("k").await?, "delete of the TTL key returned false");
    let kv = put_with(&s, "k", "new", PutOptions::new().with_ttl(ttl * 4 + SLACK)).await?;
    tokio::time::sleep_until(start + ttl + SLACK).await;
    check_eq!(
        s.get("k").await?,
        Some(kv),
        "the re-created key after the old deadline"
    );
    Ok(())
}

/// TTL keys are not leases of their writer: they outlive its `close()`
/// and then expire on time.
pub async fn rules_ttl_keys_outlive_writer_close(ctx: &Ctx) -> CaseResult {
    ttl_keys_outlive_writer(ctx, true).await
}

/// TTL keys outlive their writer's last handle being dropped, and then
/// expire on time.
pub async fn rules_ttl_keys_outlive_writer_drop(ctx: &Ctx) -> CaseResult {
    ttl_keys_outlive_writer(ctx, false).await
}

async fn ttl_keys_outlive_writer(ctx: &Ctx, close: bool) -> CaseResult {
    let reader = ctx.store().await?;
    ctx.require(reader.capabilities().ttl, "ttl")?;
    let ttl = Duration::from_secs(3).max(reader.capabilities().min_ttl + SLACK);
    let start = Instant::now();
    {
        let writer = ctx.unmanaged_store().await?;
        for k in ["a", "b"] {
            writer
                .put(k, bytes("v"), PutOptions::new().with_ttl(ttl))
                .await?;
        }
        if close {
            writer.close().await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    if start.elapsed() < ttl.mul_f64(0.6) {
        check_eq!(
            reader.list("").await?.len(),
            2,
            "TTL keys vanished with their writer after {:?}",
            start.elapsed()
        );
    }
    let remaining = (start + ttl + SLACK).saturating_duration_since(Instant::now());
    wait_gone(&reader, &["a", "b"], remaining + SLACK).await
}

/// Lock names nest with roots, as keys do: root `{r}/sub` holding lock `L`
/// is lock `sub/L` of root `{r}`.
pub async fn rules_lock_names_nest_with_roots(ctx: &Ctx) -> CaseResult {
    let outer = ctx.store().await?;
    ctx.require(outer.capabilities().locks, "locks")?;
    let inner = ctx.open_root(&format!("{}/sub", ctx.root())).await?;
    let held = inner.lock("L", LockOptions::new()).await?;
    check!(
        outer.try_lock("sub/L", LockOptions::new()).await?.is_none(),
        "lock sub/L of the outer root was free while lock L of root sub was held"
    );
    held.release().await?;
    let got = outer.try_lock("sub/L", LockOptions::new()).await?;
    check!(
        got.is_some(),
        "lock sub/L could not be taken after the release"
    );
    Ok(())
}

/// The same rule the other way round: the outer root's lock `sub/L` keeps
/// the inner root's `L` taken, and a waiter on the inner root gets it when
/// the outer holder releases it.
pub async fn rules_lock_names_nest_with_roots_reversed(ctx: &Ctx) -> CaseResult {
    let outer = ctx.store().await?;
    ctx.require(outer.capabilities().locks, "locks")?;
    let inner = ctx.open_root(&format!("{}/sub", ctx.root())).await?;
    let held = outer.lock("sub/L", LockOptions::new()).await?;
    check!(
        inner.try_lock("L", LockOptions::new()).await?.is_none(),
        "lock L of root sub was free while lock sub/L of the outer root was held"
    );
    let t = held.fencing_token();
    let waiter = tokio::spawn(async move { inner.lock("L", LockOptions::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    check!(!waiter.is_finished(), "the inner waiter got a held lock");
    held.release().await?;
    let got = tokio::time::timeout(EVENT_TIMEOUT, waiter)
        .await
        .map_err(|_| Failure::failed("the inner waiter did not get the released lock"))?
        .map_err(|e| Failure::failed(format!("the inner waiter panicked: {e}")))??;
    check!(
        got.fencing_token() > t,
        "fencing tokens {t} then {}",
        got.fencing_token()
    );
    Ok(())
}

/// A root with a `.` or `..` segment is refused with `Config` (it would
/// otherwise name another root, a tenant's parent), and nothing is
/// written to the parent.
pub async fn rules_root_dot_segments_refused(ctx: &Ctx) -> CaseResult {
    let parent = ctx.store().await?;
    let mine = put_with(&parent, "tenant/k", "mine", PutOptions::new()).await?;
    for bad in [
        format!("{}/tenant/..", ctx.root()),
        format!("{}/tenant/../other", ctx.root()),
        format!("{}/./tenant", ctx.root()),
        format!("{}/..", ctx.root()),
    ] {
        match ctx.factory().open(&bad).await {
            Err(e) if e.kind() == ErrorKind::Config => {}
            Err(e) => {
                return Err(Failure::failed(format!(
                    "opening root {bad:?}: expected a Config error, got {:?}: {e}",
                    e.kind()
                )))
            }
            Ok(s) => {
                let _ = s.put("escaped", bytes("x"), PutOptions::new()).await;
                let _ = s.close().await;
                return Err(Failure::failed(format!(
                    "root {bad:?} was opened instead of refused"
                )));
            }
        }
    }
    check_eq!(parent.list("").await?, vec![mine], "the parent root's keys");
    Ok(())
}

/// Names that only look like dots are ordinary segments: root
/// `{r}/a..b/...` opens, and its keys are the parent's keys under
/// `a..b/...`, never the parent's own.
pub async fn rules_root_dotted_names_not_parent(ctx: &Ctx) -> CaseResult {
    let parent = ctx.store().await?;
    let child = ctx.open_root(&format!("{}/a..b/...", ctx.root())).await?;
    let kv = put_with(&child, "k", "v", PutOptions::new()).await?;
    check_eq!(
        parent.list("").await?,
        vec![anykv_core::KvPair::new("a..b/.../k", "v", kv.revision)]
    );
    check!(
        parent.get("k").await?.is_none(),
        "the child root wrote its parent's key"
    );
    if parent.capabilities().watch {
        let mut w = child.watch("k", WatchOptions::new()).await?;
        match next_event(&mut w, EVENT_TIMEOUT).await? {
            WatchEvent::Put(p) => check_eq!(p, kv),
            other => return Err(Failure::failed(format!("expected the key, got {other:?}"))),
        }
    }
    Ok(())
}

/// `ValueTooLarge` names the canonical key (however the key was spelt), the
/// value's size and the backend's maximum, and nothing is written.
pub async fn rules_value_too_large_names_canonical_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let max = s.capabilities().max_value_size;
    let big = anykv_core::Bytes::from(vec![7u8; max + 1]);
    match s.put("/a/b/", big, PutOptions::new()).await {
        Err(anykv_core::Error::ValueTooLarge {
            key, size, max: m, ..
        }) => {
            check_eq!((key.as_str(), size, m), ("a/b", max + 1, max));
        }
        other => {
            return Err(Failure::failed(format!(
                "a value of max + 1 bytes: expected ValueTooLarge, got {:?}",
                other.map_err(|e| e.kind())
            )))
        }
    }
    check!(is_gone(&s, "a/b").await?, "the refused value was written");
    Ok(())
}

/// `stats()` counts this store's own watches, leases and locks only:
/// another client's on the same root do not show, and a dropped watch,
/// a revoked lease and a released lock leave the count.
pub async fn rules_stats_count_own_handles(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    let b = ctx.store().await?;
    let caps = a.capabilities().clone();
    let base_a = a.stats();
    let base_b = b.stats();
    let w1 = if caps.watch {
        Some(a.watch("k", WatchOptions::new()).await?)
    } else {
        None
    };
    let w2 = if caps.watch {
        Some(a.watch_tree("", WatchOptions::new()).await?)
    } else {
        None
    };
    let lease = if caps.leases {
        Some(a.grant_lease(Duration::from_secs(30)).await?)
    } else {
        None
    };
    let lock = if caps.locks {
        Some(a.lock("l", LockOptions::new()).await?)
    } else {
        None
    };
    let wb = if caps.watch {
        Some(b.watch("k", WatchOptions::new()).await?)
    } else {
        None
    };
    let n = |x: bool, k: usize| if x { k } else { 0 };
    let sa = a.stats();
    check_eq!(
        (sa.watches, sa.leases, sa.locks),
        (
            base_a.watches + n(caps.watch, 2),
            base_a.leases + n(caps.leases, 1),
            base_a.locks + n(caps.locks, 1)
        ),
        "the store's own watches, leases and locks"
    );
    let sb = b.stats();
    check_eq!(
        (sb.watches, sb.leases, sb.locks),
        (
            base_b.watches + n(caps.watch, 1),
            base_b.leases,
            base_b.locks
        ),
        "another client's stats count only its own"
    );
    drop(w1);
    drop(w2);
    if let Some(l) = lease {
        l.revoke().await?;
    }
    if let Some(l) = lock {
        l.release().await?;
    }
    crate::wait_until(SLACK, "the counts go back when handles go", || {
        let a = a.clone();
        async move {
            let s = a.stats();
            Ok((s.watches, s.leases, s.locks) == (base_a.watches, base_a.leases, base_a.locks))
        }
    })
    .await?;
    drop(wb);
    Ok(())
}

/// A `lock()` call dropped in the instant the lock is handed to it (its
/// task aborted right after the holder's release) leaves the lock free or
/// gives it back: another client gets it promptly, five times over with
/// different delays.
pub async fn rules_lock_wait_cancelled_at_handover_leaves_lock_free(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().locks, "locks")?;
    let b = ctx.store().await?;
    let c = ctx.store().await?;
    for (round, delay_us) in [0u64, 100, 1000, 5000, 20_000].into_iter().enumerate() {
        let name = format!("l{round}");
        let held = a.lock(&name, LockOptions::new()).await?;
        check!(
            c.try_lock(&name, LockOptions::new()).await?.is_none(),
            "round {round}: a held lock was free"
        );
        let (b2, n2) = (b.clone(), name.clone());
        let waiter = tokio::spawn(async move { b2.lock(&n2, LockOptions::new()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await?;
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        waiter.abort();
        let _ = waiter.await;
        let got = c
            .lock(&name, LockOptions::new().with_timeout(EVENT_TIMEOUT))
            .await
            .map_err(|e| {
                Failure::failed(format!(
                    "round {round}: the lock stayed taken after its waiter was cancelled \
                     at the handover ({:?}): {e}",
                    e.kind()
                ))
            })?;
        got.release().await?;
    }
    Ok(())
}

/// A TTL key written by a store whose Tokio runtime then ends (a CLI, a
/// test's runtime) still expires on time: nothing the TTL needs dies with
/// that runtime.
pub async fn rules_ttl_from_short_lived_runtime_expires(ctx: &Ctx) -> CaseResult {
    let reader = ctx.store().await?;
    ctx.require(reader.capabilities().ttl, "ttl")?;
    let ttl = Duration::from_secs(2).max(reader.capabilities().min_ttl);
    let factory = ctx.factory().clone();
    let root = ctx.root().to_owned();
    let written = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no runtime: {e}"))?;
        let rev = rt.block_on(async {
            let s = factory.open(&root).await.map_err(|e| e.to_string())?;
            s.put(
                "k",
                anykv_core::Bytes::from("v"),
                PutOptions::new().with_ttl(ttl),
            )
            .await
            .map_err(|e| e.to_string())
        })?;
        drop(rt);
        Ok(rev)
    })
    .await
    .map_err(|e| Failure::failed(format!("the short-lived runtime panicked: {e}")))?
    .map_err(Failure::failed)?;
    let start = Instant::now();
    check!(written > 0, "the put returned revision 0");
    check!(
        reader.exists("k").await?,
        "the key is missing right after its put"
    );
    wait_gone(&reader, &["k"], ttl + SLACK).await?;
    check!(
        start.elapsed() <= ttl + SLACK * 2,
        "the key outlived its TTL"
    );
    Ok(())
}
