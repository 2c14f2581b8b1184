//! The backend's own tests of many clients on the shared server: watches
//! under many writers, the revisions of deletes among concurrent writes,
//! locks nested with roots, and many leases and locks on a handful of
//! sessions. They hold the suite's shared-server guard.

mod common;

use std::time::{Duration, Instant};

use anykv_core::{PutOptions, WatchEvent, WatchOptions};
use common::{next, open, shared_root, spawn_writers, Follower};
use futures::StreamExt;

/// Eight stores write continuously under one prefix: an open tree watch
/// keeps delivering live events while they write, a watch opened during
/// the writes says `Synced` while they still write, and when they stop
/// both converge to exactly `list(prefix)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_keep_flowing_under_many_writers() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("flow");
    let store = open(&url).await.unwrap();
    let mut w1 = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f1 = Follower::new();
    f1.apply(next(&mut w1).await);
    assert!(f1.synced);
    let mut writers = Vec::new();
    for _ in 0..8 {
        writers.push(open(&url).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = spawn_writers(writers.clone(), "p", stop.clone());

    // Live events while the writers run.
    let start = Instant::now();
    while f1.live < 200 && start.elapsed() < Duration::from_secs(8) {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), w1.next()).await {
            f1.apply(ev.unwrap());
        }
    }
    assert!(
        f1.live >= 200,
        "only {} live events in {:?} of continuous writes",
        f1.live,
        start.elapsed()
    );

    // A watch opened during the writes says Synced while they go on.
    let mut w2 = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f2 = Follower::new();
    let opened = Instant::now();
    while !f2.synced {
        assert!(
            opened.elapsed() < Duration::from_secs(8),
            "no Synced within {:?} while the writers run",
            opened.elapsed()
        );
        let drain_w1 = async {
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), w1.next()).await {
                f1.apply(ev.unwrap());
            }
        };
        drain_w1.await;
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), w2.next()).await {
            f2.apply(ev.unwrap());
        }
    }
    assert!(
        !tasks.iter().any(|t| t.is_finished()),
        "the writers stopped before Synced"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut puts = 0;
    for t in tasks {
        puts += t.await.unwrap();
    }
    eprintln!("{puts} puts; {} live events on the first watch", f1.live);

    let want: Vec<(String, anykv_core::Bytes, u64)> = store
        .list("p")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value, p.revision))
        .collect();
    assert_eq!(want.len(), 8 * 20);
    for (f, w) in [(&mut f1, &mut w1), (&mut f2, &mut w2)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while f.as_list() != want && Instant::now() < deadline {
            f.take(w, Duration::from_millis(500)).await;
        }
        assert_eq!(f.as_list(), want, "the watch did not converge to list()");
    }
    for s in writers {
        s.close().await.unwrap();
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// With writers busy under the same prefix (even under the deleted key,
/// creating its children), each `Delete` a watch delivers carries the
/// revision of the delete itself: above the deleted put's, below the
/// revision of a put that started after the delete returned, and it
/// arrives before that put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_revisions_follow_the_store_order() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("delorder");
    let store = open(&url).await.unwrap();
    let mut w = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f = Follower::new();
    f.apply(next(&mut w).await);
    let mut seen: Vec<WatchEvent> = Vec::new();
    let busy = vec![open(&url).await.unwrap(), open(&url).await.unwrap()];
    for i in 0..20 {
        let key = format!("p/d/k{i}");
        let put = store
            .put(&key, "v".into(), PutOptions::new())
            .await
            .unwrap();
        // Writers create children of the key while it is deleted.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = busy
            .iter()
            .enumerate()
            .map(|(b, s)| {
                let (s, stop, key) = (s.clone(), stop.clone(), key.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let k = format!("{key}/c{b}-{n}");
                        s.put(&k, "c".into(), PutOptions::new()).await.unwrap();
                        s.delete(&k).await.unwrap();
                        n += 1;
                    }
                })
            })
            .collect();
        // The watch has seen the key, so its delete must be delivered.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen
            .iter()
            .any(|e| matches!(e, WatchEvent::Put(kv) if kv.key == key))
        {
            assert!(Instant::now() < deadline, "the watch never delivered {key}");
            let ev = next(&mut w).await;
            f.apply(ev.clone());
            seen.push(ev);
        }
        assert!(store.delete(&key).await.unwrap());
        let after_key = format!("p/d/after{i}");
        let after = store
            .put(&after_key, "a".into(), PutOptions::new())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen
            .iter()
            .any(|e| matches!(e, WatchEvent::Put(kv) if kv.key == after_key))
        {
            assert!(
                Instant::now() < deadline,
                "the watch never delivered {after_key}"
            );
            let ev = next(&mut w).await;
            f.apply(ev.clone());
            seen.push(ev);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        let del = seen
            .iter()
            .position(|e| matches!(e, WatchEvent::Delete { key: k, .. } if *k == key))
            .unwrap_or_else(|| panic!("no delete of {key}"));
        let aft = seen
            .iter()
            .position(|e| matches!(e, WatchEvent::Put(kv) if kv.key == after_key))
            .unwrap();
        let WatchEvent::Delete { revision, .. } = &seen[del] else {
            unreachable!()
        };
        assert!(
            *revision > put && *revision < after,
            "delete of {key} at {revision}: put {put}, the next put {after}"
        );
        assert!(del < aft, "the delete of {key} came after the next put");
    }
    for s in busy {
        s.close().await.unwrap();
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Locks nest with roots as keys do: lock `L` of root `r/sub` is lock
/// `sub/L` of root `r`; neither shows through `list("")` nor touches key
/// `sub/L`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_nest_with_roots() {
    let _server = anykv_conformance::shared_server_guard().await;
    let base = shared_root("locknest");
    let outer = open(&base).await.unwrap();
    let inner = open(&format!("{base}/sub")).await.unwrap();
    let opts = anykv_core::LockOptions::new().with_ttl(Duration::from_secs(2));
    let g = inner.lock("L", opts.clone()).await.unwrap();
    assert!(
        outer
            .try_lock("sub/L", opts.clone())
            .await
            .unwrap()
            .is_none(),
        "root r key sub/L is the same lock as root r/sub key L"
    );
    assert!(outer.try_lock("L", opts.clone()).await.unwrap().is_some());
    assert_eq!(outer.list("").await.unwrap(), vec![]);
    assert_eq!(outer.get("sub/L").await.unwrap(), None);
    g.release().await.unwrap();
    let g2 = outer
        .try_lock("sub/L", opts.clone())
        .await
        .unwrap()
        .unwrap();
    assert!(inner.try_lock("L", opts.clone()).await.unwrap().is_none());
    outer
        .put("sub/L", "k".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        inner
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect::<Vec<_>>(),
        vec!["L".to_string()]
    );
    g2.release().await.unwrap();
    outer.delete_tree("").await.unwrap();
    outer.close().await.unwrap();
    inner.close().await.unwrap();
}

/// One store holding 100 leases and 50 locks keeps a handful of
/// connections (the shared server allows ZooKeeper's stock 60 per
/// address), and every lease and lock still works: keys vanish with
/// their lease only, locks exclude other stores, and releasing
/// everything leaves the store's own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_and_locks_keep_connections_bounded() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("bounded");
    let store = open(&url).await.unwrap();
    let other = open(&url).await.unwrap();
    assert_eq!(store.stats().connections, 1);
    let mut leases = Vec::new();
    for i in 0..100u64 {
        let ttl = Duration::from_secs(2 + i % 2);
        let lease = store.grant_lease(ttl).await.unwrap();
        store
            .put(
                &format!("l/{i}"),
                "v".into(),
                PutOptions::new().with_lease(lease.id()),
            )
            .await
            .unwrap();
        leases.push(lease);
    }
    let opts = anykv_core::LockOptions::new().with_ttl(Duration::from_secs(3));
    let mut guards = Vec::new();
    for i in 0..50 {
        guards.push(store.lock(&format!("lock{i}"), opts.clone()).await.unwrap());
    }
    let stats = store.stats();
    assert_eq!((stats.leases, stats.locks), (100, 50));
    assert!(stats.connections <= 4, "{stats:?}");
    assert_eq!(other.list("l").await.unwrap().len(), 100);
    for i in [0, 17, 49] {
        assert!(other
            .try_lock(&format!("lock{i}"), opts.clone())
            .await
            .unwrap()
            .is_none());
    }
    // Leases are independent: revoking one removes only its key.
    let revoked = leases.remove(7);
    revoked.revoke().await.unwrap();
    assert_eq!(other.get("l/7").await.unwrap(), None);
    assert_eq!(other.list("l").await.unwrap().len(), 99);
    assert!(leases.iter().all(|l| !l.is_lost()));
    // A key rewritten without its lease is permanent.
    other
        .put("l/8", "mine".into(), PutOptions::new())
        .await
        .unwrap();
    leases.remove(7).revoke().await.unwrap();
    assert_eq!(
        other.get("l/8").await.unwrap().map(|p| p.value),
        Some("mine".into())
    );
    let g = guards.remove(17);
    g.release().await.unwrap();
    other
        .try_lock("lock17", opts.clone())
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    drop(guards);
    drop(leases);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = store.stats();
        if (s.leases, s.locks, s.connections) == (0, 0, 1)
            && other.list("l").await.unwrap().len() == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "still held: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
    other.close().await.unwrap();
}
