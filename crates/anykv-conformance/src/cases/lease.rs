//! Cases: leases — keys that vanish with their lease (revoked, dropped,
//! store closed), keep-alive, loss notification, and independence.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, LeaseId, PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use tokio::time::Instant;

use crate::{
    bytes, check, check_eq, check_err, is_gone, next_event, put_with, read_initial, wait_gone,
    wait_until, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_lease {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args lease: [
            lease_revoke_removes_keys,
            lease_drop_removes_keys,
            lease_close_removes_keys,
            lease_kept_alive,
            lease_independent_of_each_other,
            lease_lost_fires,
            lease_put_with_lost_lease_rejected,
            lease_key_rewritten_without_lease_is_permanent,
            lease_key_rewritten_with_other_lease_follows_it,
            lease_bookkeeping_invisible,
            lease_ttl_limits_rejected,
        ] }
    };
}

/// A client on the case's root and the lease TTL the suite uses (2 s,
/// raised to the backend's minimum), or "unsupported" unless leases work.
async fn lease_store(ctx: &Ctx) -> Result<(Arc<dyn Store>, Duration), Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let ttl = Duration::from_secs(2).max(s.capabilities().min_ttl);
    Ok((s, ttl))
}

/// Options binding a write to `lease`.
fn leased(lease: LeaseId) -> PutOptions {
    PutOptions::new().with_lease(lease)
}

/// A tree watch on `prefix` with its initial state read, if the backend
/// can watch.
async fn maybe_watch(
    s: &Arc<dyn Store>,
    prefix: &str,
) -> Result<Option<(WatchStream, Vec<KvPair>, u64)>, Failure> {
    if !s.capabilities().watch {
        return Ok(None);
    }
    let mut w = s.watch_tree(prefix, WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    Ok(Some((w, initial, synced)))
}

/// Reads one `Delete` per pair in `pairs` (in any key order): revisions
/// strictly increasing, each above `after` and its pair's; then writes
/// `sentinel` and requires it to be the next event, so nothing else was
/// deleted.
async fn expect_deletes(
    s: &Arc<dyn Store>,
    w: &mut WatchStream,
    pairs: &[&KvPair],
    after: u64,
    within: Duration,
    sentinel: &str,
) -> CaseResult {
    let mut last = after;
    let mut seen = BTreeSet::new();
    for _ in pairs {
        match next_event(w, within).await? {
            WatchEvent::Delete { key, revision } => {
                let Some(pair) = pairs.iter().find(|p| p.key == key) else {
                    return Err(Failure::failed(format!(
                        "Delete of {key:?}, which is not bound to the lease"
                    )));
                };
                check!(seen.insert(key.clone()), "Delete of {key:?} twice");
                check!(
                    revision > last && revision > pair.revision,
                    "Delete of {key:?} at revision {revision}: not after {last} and {}",
                    pair.revision
                );
                last = revision;
            }
            other => {
                return Err(Failure::failed(format!(
                    "expected a Delete of a leased key, got {other:?}"
                )))
            }
        }
    }
    let end = put_with(s, sentinel, "sentinel", PutOptions::new()).await?;
    check_eq!(next_event(w, EVENT_TIMEOUT).await?, WatchEvent::Put(end));
    Ok(())
}

/// Revoking a lease removes exactly its keys, at once (when `revoke`
/// returns) and for every client; keys without it stay; its lost signal
/// fires; a watcher sees one `Delete` per leased key.
pub async fn lease_revoke_removes_keys(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let other = ctx.store().await?;
    let lease = s.grant_lease(ttl).await?;
    check!(!lease.is_lost(), "a fresh lease is reported lost");
    let signal = lease.lost_signal();
    let a = put_with(&s, "l/a", "a", leased(lease.id())).await?;
    let bc = put_with(&s, "l/b/c", "bc", leased(lease.id())).await?;
    let p = put_with(&s, "l/p", "plain", PutOptions::new()).await?;
    check_eq!(
        other.list("l").await?,
        vec![a.clone(), bc.clone(), p.clone()]
    );
    let watch = maybe_watch(&other, "l").await?;
    if let Some((_, initial, _)) = &watch {
        check_eq!(initial, &vec![a.clone(), bc.clone(), p.clone()]);
    }
    lease.revoke().await?;
    for k in ["l/a", "l/b/c"] {
        check_eq!(s.get(k).await?, None, "{k} after revoke returned");
        check_eq!(
            other.get(k).await?,
            None,
            "{k} after revoke returned, other client"
        );
    }
    check_eq!(other.list("l").await?, vec![p.clone()]);
    check_eq!(s.list("").await?, vec![p.clone()]);
    wait_until(SLACK, "the revoked lease's lost signal fires", || {
        let lost = signal.is_lost();
        async move { Ok(lost) }
    })
    .await?;
    if let Some((mut w, _, synced)) = watch {
        expect_deletes(&s, &mut w, &[&a, &bc], synced, EVENT_TIMEOUT, "l/z").await?;
    }
    check_eq!(s.get("l/p").await?, Some(p));
    Ok(())
}

/// Dropping the `Lease` handle removes its keys within [`SLACK`] (for every
/// client) and returns `stats().leases` to its baseline; other keys stay.
pub async fn lease_drop_removes_keys(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let other = ctx.store().await?;
    let base = s.stats().leases;
    let lease = s.grant_lease(ttl).await?;
    check_eq!(
        s.stats().leases,
        base + 1,
        "stats().leases with one more lease"
    );
    let k = put_with(&s, "k", "leased", leased(lease.id())).await?;
    let p = put_with(&s, "p", "plain", PutOptions::new()).await?;
    check_eq!(other.get("k").await?, Some(k));
    drop(lease);
    wait_gone(&other, &["k"], SLACK).await?;
    check!(is_gone(&s, "k").await?);
    wait_until(SLACK, "stats().leases returns to its baseline", || {
        let n = s.stats().leases;
        async move { Ok(n == base) }
    })
    .await?;
    check_eq!(other.list("").await?, vec![p]);
    Ok(())
}

/// Closing the store that granted a lease removes the lease's keys: another
/// client sees them vanish within [`SLACK`] (and a watcher there gets a
/// `Delete` for each), while its own keys stay.
pub async fn lease_close_removes_keys(ctx: &Ctx) -> CaseResult {
    let (a, ttl) = lease_store(ctx).await?;
    let b = ctx.store().await?;
    let lease = a.grant_lease(ttl).await?;
    let k1 = put_with(&a, "t/k1", "leased", leased(lease.id())).await?;
    let k2 = put_with(&a, "t/k2", "leased", leased(lease.id())).await?;
    let p = put_with(&b, "t/p", "plain", PutOptions::new()).await?;
    let watch = maybe_watch(&b, "t").await?;
    if let Some((_, initial, _)) = &watch {
        check_eq!(initial, &vec![k1.clone(), k2.clone(), p.clone()]);
    }
    a.close().await?;
    wait_gone(&b, &["t/k1", "t/k2"], SLACK).await?;
    if let Some((mut w, _, synced)) = watch {
        expect_deletes(&b, &mut w, &[&k1, &k2], synced, EVENT_TIMEOUT, "t/z").await?;
    }
    check_eq!(b.get("t/p").await?, Some(p));
    drop(lease);
    Ok(())
}

/// While its handle lives, a lease is kept alive: its TTL is at least the
/// one asked for, and its key is still there, with its value and revision,
/// for twice the TTL plus [`SLACK`] (when a lease that is not kept alive
/// would long have expired); the lease is never reported lost meanwhile.
pub async fn lease_kept_alive(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let other = ctx.store().await?;
    let lease = s.grant_lease(ttl).await?;
    check!(
        lease.ttl() >= ttl,
        "a lease asked for {ttl:?} was granted {:?}",
        lease.ttl()
    );
    let k = put_with(&s, "k", "leased", leased(lease.id())).await?;
    let start = Instant::now();
    while start.elapsed() < 2 * ttl + SLACK {
        tokio::time::sleep(Duration::from_millis(500)).await;
        check_eq!(
            other.get("k").await?,
            Some(k.clone()),
            "the leased key {:?} after it was written (lease TTL {ttl:?})",
            start.elapsed()
        );
        check!(!lease.is_lost(), "the live lease is reported lost");
    }
    lease.revoke().await?;
    check_eq!(other.get("k").await?, None);
    Ok(())
}

/// Revoking one lease leaves the keys of every other lease, of the same
/// store or another client, and those leases stay live; revoking the
/// second then removes its keys.
pub async fn lease_independent_of_each_other(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let b = ctx.store().await?;
    let l1 = s.grant_lease(ttl).await?;
    let l2 = s.grant_lease(ttl).await?;
    let l3 = b.grant_lease(ttl).await?;
    check!(
        l1.id() != l2.id(),
        "two leases of one store share the id {}",
        l1.id()
    );
    let l1_signal = l1.lost_signal();
    let x = put_with(&s, "x", "l1", leased(l1.id())).await?;
    let y = put_with(&s, "y", "l2", leased(l2.id())).await?;
    let z = put_with(&b, "z", "l3", leased(l3.id())).await?;
    check_eq!(s.list("").await?, vec![x, y.clone(), z.clone()]);
    l1.revoke().await?;
    check_eq!(s.get("x").await?, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_eq!(s.list("").await?, vec![y, z.clone()]);
    check!(
        l1_signal.is_lost(),
        "the revoked lease is not reported lost"
    );
    check!(!l2.is_lost(), "revoking one lease made another lost");
    check!(
        !l3.is_lost(),
        "revoking one lease made another client's lost"
    );
    l2.revoke().await?;
    check_eq!(s.list("").await?, vec![z]);
    l3.revoke().await?;
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// `Lease::lost()` does not complete while the lease lives (`is_lost` is
/// false) and completes within [`SLACK`] once the store that granted it
/// is closed; then `is_lost` and the signal taken earlier say lost.
pub async fn lease_lost_fires(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let lease = s.grant_lease(ttl).await?;
    put_with(&s, "k", "leased", leased(lease.id())).await?;
    check!(!lease.is_lost(), "a live lease is reported lost");
    let signal = lease.lost_signal();
    let lost = lease.lost();
    check!(
        tokio::time::timeout(Duration::from_millis(300), lease.lost())
            .await
            .is_err(),
        "lost() completed while the lease was live"
    );
    s.close().await?;
    tokio::time::timeout(SLACK, lost).await.map_err(|_| {
        Failure::failed(format!(
            "Lease::lost() did not complete within {SLACK:?} of closing its store"
        ))
    })?;
    check!(lease.is_lost(), "is_lost() is false after lost() completed");
    check!(signal.is_lost(), "the lost signal is not fired");
    drop(lease);
    Ok(())
}

/// After a lease is revoked, a `put` or `atomic_put` with its id fails
/// with `LeaseLost` and writes nothing (a new key stays absent, an
/// existing key keeps its value and revision); so does a lease id that was
/// never granted.
pub async fn lease_put_with_lost_lease_rejected(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let lease = s.grant_lease(ttl).await?;
    let id = lease.id();
    put_with(&s, "k1", "leased", leased(id)).await?;
    let e = put_with(&s, "e", "v1", PutOptions::new()).await?;
    lease.revoke().await?;
    check_err!(s.put("k2", bytes("v"), leased(id)).await, LeaseLost);
    check_err!(s.put("e", bytes("v2"), leased(id)).await, LeaseLost);
    check_err!(
        s.atomic_put("k3", bytes("v"), None, leased(id)).await,
        LeaseLost
    );
    check_err!(
        s.atomic_put("e", bytes("v2"), Some(e.revision), leased(id))
            .await,
        LeaseLost
    );
    let never = LeaseId(0x0dea_dbee_f0dd_ba11);
    check_err!(s.put("k4", bytes("v"), leased(never)).await, LeaseLost);
    check_eq!(s.get("e").await?, Some(e.clone()));
    check_eq!(s.list("").await?, vec![e]);
    Ok(())
}

/// A key put with a lease and then put again without one is permanent:
/// revoking the lease removes the lease's other key but leaves this one
/// with the plain write's value and revision.
pub async fn lease_key_rewritten_without_lease_is_permanent(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let lease = s.grant_lease(ttl).await?;
    put_with(&s, "k", "leased", leased(lease.id())).await?;
    put_with(&s, "c", "leased", leased(lease.id())).await?;
    let k = put_with(&s, "k", "plain", PutOptions::new()).await?;
    lease.revoke().await?;
    check_eq!(
        s.get("c").await?,
        None,
        "the lease's other key after revoke"
    );
    check_eq!(s.get("k").await?, Some(k.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_eq!(s.list("").await?, vec![k]);
    Ok(())
}

/// A key put with one lease and then with another follows the second:
/// revoking the first leaves it, revoking the second removes it.
pub async fn lease_key_rewritten_with_other_lease_follows_it(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let l1 = s.grant_lease(ttl).await?;
    let l2 = s.grant_lease(ttl).await?;
    put_with(&s, "k", "first", leased(l1.id())).await?;
    let k = put_with(&s, "k", "second", leased(l2.id())).await?;
    l1.revoke().await?;
    check_eq!(s.get("k").await?, Some(k));
    l2.revoke().await?;
    check_eq!(s.get("k").await?, None);
    Ok(())
}

/// Lease bookkeeping is invisible: while leases exist, `list("")` and a
/// `watch_tree("")` opened before granting them show only the user's keys,
/// and `get` of plausible bookkeeping names finds nothing.
pub async fn lease_bookkeeping_invisible(ctx: &Ctx) -> CaseResult {
    let (s, ttl) = lease_store(ctx).await?;
    let watch = maybe_watch(&s, "").await?;
    if let Some((_, initial, _)) = &watch {
        check_eq!(initial, &Vec::<KvPair>::new());
    }
    let l1 = s.grant_lease(ttl).await?;
    let l2 = s.grant_lease(ttl).await?;
    let a = put_with(&s, "a", "leased", leased(l1.id())).await?;
    let bc = put_with(&s, "b/c", "plain", PutOptions::new()).await?;
    check_eq!(s.list("").await?, vec![a.clone(), bc.clone()]);
    let mut names = vec![
        "lease".to_owned(),
        "leases".to_owned(),
        "_lease".to_owned(),
        "__lease".to_owned(),
        "__leases".to_owned(),
        "anykv".to_owned(),
        "__anykv".to_owned(),
        "_anykv".to_owned(),
    ];
    for id in [l1.id(), l2.id()] {
        for name in [
            format!("{id}"),
            format!("{}", id.0),
            format!("leases/{id}"),
            format!("__leases/{id}"),
            format!("lease/{}", id.0),
        ] {
            names.push(name);
        }
    }
    for name in &names {
        check_eq!(s.get(name).await?, None, "get({name:?})");
        check_eq!(s.list(name).await?, Vec::<KvPair>::new(), "list({name:?})");
    }
    l1.revoke().await?;
    drop(l2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    check_eq!(s.list("").await?, vec![bc.clone()]);
    if let Some((mut w, _, _)) = watch {
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(a.clone())
        );
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(bc)
        );
        expect_deletes(&s, &mut w, &[&a], 0, EVENT_TIMEOUT, "zz").await?;
    }
    Ok(())
}

/// A lease's TTL is more than zero and at most ten years, as a key's is:
/// outside that, `grant_lease` fails with `InvalidArgument` on every
/// backend and nothing is granted.
pub async fn lease_ttl_limits_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let before = s.stats().leases;
    check_err!(s.grant_lease(Duration::ZERO).await, InvalidArgument);
    check_err!(
        s.grant_lease(anykv_core::MAX_TTL + Duration::from_secs(1))
            .await,
        InvalidArgument
    );
    check_eq!(
        s.stats().leases,
        before,
        "leases held after two refused grants"
    );
    let ok = s.grant_lease(Duration::from_secs(30)).await?;
    check!(!ok.is_lost(), "a fresh lease is lost");
    ok.revoke().await?;
    Ok(())
}
