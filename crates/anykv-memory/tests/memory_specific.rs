//! Behaviour of the memory backend beyond the shared conformance suite.

use std::time::Duration;

use anykv_core::{ErrorKind, LockOptions, PutOptions, Store, Url, WatchEvent, WatchOptions};
use anykv_memory::{MemoryConfig, MemoryStore};
use futures::StreamExt;

async fn next(s: &mut anykv_core::WatchStream) -> anykv_core::Result<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
}

#[test]
fn urls_parse_into_configs() {
    let c =
        MemoryConfig::from_url(&Url::parse("memory://n/a/b?history=7&max_value_size=9").unwrap())
            .unwrap();
    assert_eq!(
        c,
        MemoryConfig::named("n")
            .with_root("a/b")
            .with_history(7)
            .with_max_value_size(9)
    );
    assert_eq!(
        MemoryConfig::from_url(&Url::parse("memory://").unwrap()).unwrap(),
        MemoryConfig::new()
    );
    for bad in [
        "memory://n/?colour=red",
        "memory://n/?history=lots",
        "memory://n/?history=1&history=2",
        "memory://user:hunter2@n/",
        "memory://n:1234/",
        "memory://n/a//b",
        "etcd://n/",
    ] {
        let e = MemoryConfig::from_url(&Url::parse(bad).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[tokio::test]
async fn named_stores_are_shared_and_private_ones_are_not() {
    let a = MemoryStore::open_url("memory://specific-shared/x").unwrap();
    let b = MemoryStore::open_url("memory://specific-shared/x").unwrap();
    let rev = a.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().unwrap().revision, rev);

    let p = MemoryStore::open_url("memory://").unwrap();
    let q = MemoryStore::open_url("memory://").unwrap();
    p.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(q.get("k").await.unwrap(), None);
}

#[test]
fn a_named_store_outlives_the_runtime_that_made_it() {
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        let s = MemoryStore::named("specific-runtimes");
        s.put(
            "short",
            "lived".into(),
            PutOptions::new().with_ttl(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
        std::mem::forget(s);
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let s = MemoryStore::named("specific-runtimes");
        let mut w = s.watch("short", WatchOptions::new()).await.unwrap();
        assert!(matches!(next(&mut w).await.unwrap(), WatchEvent::Put(_)));
        assert!(matches!(
            next(&mut w).await.unwrap(),
            WatchEvent::Synced { .. }
        ));
        match next(&mut w).await.unwrap() {
            WatchEvent::Delete { key, .. } => assert_eq!(key, "short"),
            other => panic!("expected the TTL delete, got {other:?}"),
        }
    });
}

#[tokio::test]
async fn history_is_bounded() {
    let s = MemoryStore::open(MemoryConfig::new().with_history(3)).unwrap();
    let first = s.put("k", "1".into(), PutOptions::new()).await.unwrap();
    for i in 2..=5 {
        s.put("k", i.to_string().into(), PutOptions::new())
            .await
            .unwrap();
    }
    for from in [first - 1, first] {
        let mut w = s
            .watch("k", WatchOptions::from_revision(from))
            .await
            .unwrap();
        assert_eq!(next(&mut w).await.unwrap_err().kind(), ErrorKind::Compacted);
        assert!(w.next().await.is_none(), "the stream ends after Compacted");
    }
    // The last three changes are still there.
    let mut ok = s
        .watch("k", WatchOptions::from_revision(first + 1))
        .await
        .unwrap();
    match next(&mut ok).await.unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.value, "3"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cancelled_lock_wait_does_not_block_the_next_waiter() {
    let s = MemoryStore::open_url("memory://specific-locks").unwrap();
    let held = s.lock("l", LockOptions::new()).await.unwrap();
    // A waiter whose future is dropped while queued.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(50), s.lock("l", LockOptions::new())).await;
    assert!(cancelled.is_err());
    // A waiter that times out.
    let e = s
        .lock(
            "l",
            LockOptions::new().with_timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.lock("l", LockOptions::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first_token = held.fencing_token();
    held.release().await.unwrap();
    let next_guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the live waiter gets the lock")
        .unwrap()
        .unwrap();
    assert!(next_guard.fencing_token() > first_token);
}

#[tokio::test]
async fn dropping_the_last_handle_gives_everything_back() {
    let observer = MemoryStore::open_url("memory://specific-drop").unwrap();
    let holder = MemoryStore::open_url("memory://specific-drop").unwrap();
    let lease = holder.grant_lease(Duration::from_secs(60)).await.unwrap();
    holder
        .put(
            "leased",
            "x".into(),
            PutOptions::new().with_lease(lease.id()),
        )
        .await
        .unwrap();
    let guard = holder.lock("l", LockOptions::new()).await.unwrap();
    let lost = guard.lost();
    std::mem::forget(lease);
    std::mem::forget(guard);
    drop(holder);
    tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .expect("the lock's loss signal fires");
    assert_eq!(observer.get("leased").await.unwrap(), None);
    assert!(observer
        .try_lock("l", LockOptions::new())
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn stats_count_what_a_handle_holds() {
    let s = MemoryStore::new();
    let w = s.watch_tree("", WatchOptions::new()).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    let guard = s.lock("l", LockOptions::new()).await.unwrap();
    let st = s.stats();
    assert_eq!(
        (st.watches, st.leases, st.locks, st.connections),
        (1, 1, 1, 0)
    );
    drop(w);
    lease.revoke().await.unwrap();
    guard.release().await.unwrap();
    let st = s.stats();
    assert_eq!((st.watches, st.leases, st.locks), (0, 0, 0));
}

#[tokio::test]
async fn closing_a_store_never_hands_its_lock_to_its_own_waiter() {
    let a = MemoryStore::open_url("memory://specific-close-lock").unwrap();
    let b = MemoryStore::open_url("memory://specific-close-lock").unwrap();
    let _held = a.lock("l", LockOptions::new()).await.unwrap();
    let own_waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.lock("l", LockOptions::new()).await })
    };
    let other_waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("l", LockOptions::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.close().await.unwrap();
    let own = own_waiter.await.unwrap();
    assert_eq!(own.unwrap_err().kind(), ErrorKind::Closed);
    let other = tokio::time::timeout(Duration::from_secs(5), other_waiter)
        .await
        .expect("the other store's waiter gets the lock")
        .unwrap();
    assert!(other.is_ok());
}

#[tokio::test]
async fn nothing_outlives_a_close_it_raced_with() {
    for _ in 0..200 {
        let s = MemoryStore::open_url("memory://specific-close-race").unwrap();
        let closer = {
            let s = s.clone();
            tokio::spawn(async move { s.close().await })
        };
        let lease = s.grant_lease(Duration::from_secs(60)).await;
        let watch = s.watch("k", WatchOptions::new()).await;
        let lock = s.try_lock("l", LockOptions::new()).await;
        closer.await.unwrap().unwrap();
        if let Ok(lease) = lease {
            assert!(
                lease.is_lost(),
                "a lease granted before the close is revoked by it"
            );
        }
        if let Ok(Some(guard)) = lock {
            assert!(
                guard.is_lost(),
                "a lock taken before the close is released by it"
            );
        }
        if let Ok(mut w) = watch {
            while let Some(item) = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .expect("a watch opened before the close ends with it")
            {
                item.unwrap();
            }
        }
        assert_eq!(s.stats().watches + s.stats().leases + s.stats().locks, 0);
    }
}

#[tokio::test]
async fn resuming_ahead_of_the_store_skips_changes_up_to_that_revision() {
    let s = MemoryStore::new();
    let now = s.put("k", "1".into(), PutOptions::new()).await.unwrap();
    let mut w = s
        .watch("k", WatchOptions::from_revision(now + 2))
        .await
        .unwrap();
    s.put("k", "2".into(), PutOptions::new()).await.unwrap();
    s.put("k", "3".into(), PutOptions::new()).await.unwrap();
    let fourth = s.put("k", "4".into(), PutOptions::new()).await.unwrap();
    match next(&mut w).await.unwrap() {
        WatchEvent::Put(kv) => assert_eq!((kv.value.as_ref(), kv.revision), (&b"4"[..], fourth)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn extreme_arguments_are_errors_not_panics() {
    let s = MemoryStore::new();
    for ttl in [Duration::MAX, anykv_core::MAX_TTL + Duration::from_secs(1)] {
        let e = s
            .put("k", "v".into(), PutOptions::new().with_ttl(ttl))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = s.grant_lease(ttl).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
    assert_eq!(s.revision(), 0, "nothing was written");
    s.put(
        "k",
        "v".into(),
        PutOptions::new().with_ttl(anykv_core::MAX_TTL),
    )
    .await
    .unwrap();
    let mut opts = WatchOptions::new();
    opts.buffer = usize::MAX;
    let e = s.watch("k", opts).await.map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let w = s
        .watch("k", WatchOptions::new().with_buffer(usize::MAX))
        .await;
    assert!(w.is_ok(), "with_buffer clamps");
    let mut w = s
        .watch("k", WatchOptions::from_revision(u64::MAX))
        .await
        .unwrap();
    s.put("k", "w".into(), PutOptions::new()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), w.next())
            .await
            .is_err(),
        "nothing is after revision u64::MAX"
    );
}

#[tokio::test]
async fn history_is_bounded_in_bytes_too() {
    let s = MemoryStore::open(MemoryConfig::new().with_history_bytes(4_000_000)).unwrap();
    let first = s
        .put("big", vec![1u8; 1_000_000].into(), PutOptions::new())
        .await
        .unwrap();
    for _ in 0..10 {
        s.put("big", vec![2u8; 1_000_000].into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = s
        .watch("big", WatchOptions::from_revision(first))
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.unwrap_err().kind(), ErrorKind::Compacted);
}

#[tokio::test]
async fn passwords_never_reach_errors() {
    for url in [
        "memory://user:hun/ter2@n/",
        "memory://user:hun#ter2@n/",
        "memory://user:hun?ter2@n/",
        "memory://user:hunter2@n/",
        "memory://n/r?password=hunter2",
    ] {
        let e = MemoryStore::open_url(url).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{url}");
        assert!(!e.to_string().contains("ter2"), "{e}");
    }
}

/// A loop of calls that never wait still gives other tasks of its thread
/// their turn: on a one-thread runtime, a task spawned before a loop of
/// 20,000 reads runs before the loop ends.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_calls_lets_other_tasks_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let store = anykv_memory::MemoryStore::new();
    store
        .put("k", "v".into(), anykv_core::PutOptions::new())
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut seen_at = None;
    for i in 0..20_000 {
        assert!(store.get("k").await.unwrap().is_some());
        if seen_at.is_none() && ran.load(Ordering::SeqCst) {
            seen_at = Some(i);
        }
    }
    other.await.unwrap();
    let at = seen_at.expect("the other task never ran during the loop");
    assert!(at < 2_100, "the other task ran only after {at} calls");
}
