//! Cases: what a backend declares in its `Capabilities` is true, in both
//! directions, and its errors say who and what.

use std::time::Duration;

use anykv_core::{Error, LockOptions, PutOptions, WatchEvent, WatchOptions};

use crate::{bytes, check, check_eq, next_item, read_initial, CaseResult, Ctx, EVENT_TIMEOUT};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_capabilities {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args capabilities: [
            capabilities_are_honest,
            capabilities_errors_name_backend_and_key,
        ] }
    };
}

fn is_unsupported<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Unsupported { .. }))
}

/// Every capability a backend declares holds, and every one it denies is
/// refused with `Unsupported` and writes nothing: values of at least
/// 1,000,000 bytes; `watch` (a written key shows in the initial state);
/// `watch_resume` (a resumed watch replays a change, or is refused by the
/// call or as the stream's first item); `ttl`; `leases`; `locks`.
pub async fn capabilities_are_honest(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let caps = s.capabilities().clone();
    check!(!caps.backend.is_empty(), "the backend has no name");
    check!(
        caps.max_value_size >= 1_000_000,
        "max_value_size is {}, below the 1,000,000 bytes every backend stores",
        caps.max_value_size
    );
    let rev = s.put("k", bytes("v"), PutOptions::new()).await?;

    // watch
    let watched = s.watch("k", WatchOptions::new()).await;
    if caps.watch {
        let mut w = watched?;
        let (pairs, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
        check_eq!(
            pairs.len(),
            1,
            "the initial state of a watch on a written key"
        );
        check_eq!(pairs[0].revision, rev);
    } else {
        check!(
            is_unsupported(&watched),
            "watch = false, but watch was not refused with Unsupported"
        );
        check!(
            is_unsupported(&s.watch_tree("", WatchOptions::new()).await),
            "watch = false, but watch_tree was not refused with Unsupported"
        );
    }

    // watch_resume
    if caps.watch {
        let resumed = s.watch("k", WatchOptions::from_revision(rev - 1)).await;
        if caps.watch_resume {
            let mut w = resumed?;
            match next_item(&mut w, EVENT_TIMEOUT).await? {
                Some(Ok(WatchEvent::Put(kv))) => check_eq!(kv.revision, rev, "the replayed change"),
                other => {
                    return Err(crate::Failure::failed(format!(
                        "watch_resume = true, but resuming before the last write gave {other:?}"
                    )))
                }
            }
        } else {
            let refused = match resumed {
                Err(Error::Unsupported { .. }) => true,
                Err(_) => false,
                Ok(mut w) => matches!(
                    next_item(&mut w, EVENT_TIMEOUT).await?,
                    Some(Err(Error::Unsupported { .. }))
                ),
            };
            check!(
                refused,
                "watch_resume = false, but a resumed watch was not refused with Unsupported"
            );
        }
    }

    // ttl
    let ttl_put = s
        .put(
            "ttl",
            bytes("t"),
            PutOptions::new().with_ttl(Duration::from_secs(30)),
        )
        .await;
    if caps.ttl {
        ttl_put?;
        check!(s.exists("ttl").await?, "a TTL put did not write the key");
    } else {
        check!(
            is_unsupported(&ttl_put),
            "ttl = false, but a TTL put was not refused with Unsupported"
        );
        check!(!s.exists("ttl").await?, "a refused TTL put wrote the key");
    }

    // leases
    let lease = s.grant_lease(Duration::from_secs(30)).await;
    if caps.leases {
        let lease = lease?;
        s.put(
            "leased",
            bytes("l"),
            PutOptions::new().with_lease(lease.id()),
        )
        .await?;
        check!(
            s.exists("leased").await?,
            "a put with a lease did not write the key"
        );
        lease.revoke().await?;
        check!(
            !s.exists("leased").await?,
            "revoking the lease left its key"
        );
    } else {
        check!(
            is_unsupported(&lease),
            "leases = false, but grant_lease was not refused with Unsupported"
        );
    }

    // locks
    let guard = s.try_lock("l", LockOptions::new()).await;
    if caps.locks {
        let guard = guard?;
        check!(
            guard.is_some(),
            "locks = true, but a free lock could not be taken"
        );
        let other = ctx.store().await?;
        check!(
            other.try_lock("l", LockOptions::new()).await?.is_none(),
            "locks = true, but a second client took a held lock"
        );
        if let Some(g) = guard {
            g.release().await?;
        }
    } else {
        check!(
            is_unsupported(&guard),
            "locks = false, but try_lock was not refused with Unsupported"
        );
        check!(
            is_unsupported(&s.lock("l", LockOptions::new()).await),
            "locks = false, but lock was not refused with Unsupported"
        );
    }
    Ok(())
}

/// Error messages name the backend and the key: `KeyExists`,
/// `KeyModified` and `KeyNotFound` carry both in their text, and
/// `InvalidKey` (raised before any backend is involved) names the key.
pub async fn capabilities_errors_name_backend_and_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let backend = s.capabilities().backend;
    let rev = s.put("named/key", bytes("v"), PutOptions::new()).await?;
    let errors = [
        s.atomic_put("named/key", bytes("x"), None, PutOptions::new())
            .await
            .map(|_| ()),
        s.atomic_put(
            "named/key",
            bytes("x"),
            Some(rev + 1_000),
            PutOptions::new(),
        )
        .await
        .map(|_| ()),
        s.atomic_delete("named/absent", rev).await,
    ];
    for (r, key) in errors
        .iter()
        .zip(["named/key", "named/key", "named/absent"])
    {
        match r {
            Ok(()) => {
                return Err(crate::Failure::failed(format!(
                    "a failing CAS on {key} succeeded"
                )))
            }
            Err(e) => {
                let text = e.to_string();
                check!(
                    text.contains(backend),
                    "{text:?} does not name the backend {backend:?}"
                );
                check!(text.contains(key), "{text:?} does not name the key {key:?}");
            }
        }
    }
    let e = match s.get("bad//key").await {
        Ok(v) => {
            return Err(crate::Failure::failed(format!(
                "get of bad//key gave Ok({v:?})"
            )))
        }
        Err(e) => e,
    };
    check!(
        e.to_string().contains("bad//key"),
        "{e} does not name the key"
    );
    check_eq!(
        s.get("named/key").await?.map(|kv| kv.revision),
        Some(rev),
        "nothing changed"
    );
    Ok(())
}
