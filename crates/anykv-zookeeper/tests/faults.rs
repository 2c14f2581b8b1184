//! The backend's own fault tests: server restarts and freezes, session
//! expiry, connecting to a server that refuses or does not answer, a
//! server with the stock `tickTime`, and one without TTL nodes. Each test
//! starts a server of its own.

mod common;

use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, PutOptions, WatchEvent, WatchOptions};
use anykv_testserver::zookeeper::ZkServer;
use common::{next, open, retryable, Follower};
use futures::StreamExt;

/// The server restarts while a watch is open: calls during the outage fail
/// with `Unavailable` or `Timeout` within the configured timeout, and the
/// watch converges to every key's final state and says `Synced` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_watch_converges_and_resyncs() {
    let mut server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("restart")
    );
    // A session timeout well beyond the restart: a watch that is out of
    // touch until its session could expire ends with an error instead.
    let url = format!("{base}?request_timeout=1s&session_timeout=60s");
    let store = open(&url).await.unwrap();
    store
        .put("k/a", "1".into(), PutOptions::new())
        .await
        .unwrap();
    store
        .put("k/b", "1".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = store.watch_tree("k", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));

    server.stop();
    let started = Instant::now();
    let e = store
        .put("k/c", "x".into(), PutOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "a put during the outage: {e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let e = store.get("k/a").await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    server.start_again();
    // Another client changes everything while the watcher may still be
    // reconnecting.
    let other = loop {
        match open(&url).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut ok = false;
    for _ in 0..50 {
        if other.delete("k/a").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the server did not come back");
    let b = other
        .put("k/b", "2".into(), PutOptions::new())
        .await
        .unwrap();
    let d = other
        .put("k/d", "new".into(), PutOptions::new())
        .await
        .unwrap();

    let mut state = std::collections::BTreeMap::new();
    state.insert("k/a".to_string(), 0u64);
    state.insert("k/b".to_string(), 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut synced_again = false;
    loop {
        let want: std::collections::BTreeMap<String, u64> =
            [("k/b".to_string(), b), ("k/d".to_string(), d)]
                .into_iter()
                .collect();
        if state == want && synced_again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch did not converge: {state:?}, synced again: {synced_again}"
        );
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => {
                state.insert(kv.key, kv.revision);
            }
            Ok(Some(Ok(WatchEvent::Delete { key, .. }))) => {
                state.remove(&key);
            }
            Ok(Some(Ok(WatchEvent::Synced { .. }))) => synced_again = true,
            other => panic!("the watch ended or failed: {other:?}"),
        }
    }
    assert_eq!(store.get("k/b").await.unwrap().map(|p| p.revision), Some(b));
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Sessions that expire (the server is away for longer than the lease's
/// and the lock's session timeouts, then comes back): the lease's and the
/// lock's `lost()` fire, the lease's ephemeral key vanishes for everyone
/// else, and another client gets the lock with a greater fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_fires_lost_and_removes_keys() {
    let mut server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("expiry")
    );
    let url = format!("{base}?request_timeout=1s&session_timeout=30s");
    let store = open(&url).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    store
        .put("eph", "v".into(), PutOptions::new().with_lease(lease.id()))
        .await
        .unwrap();
    store
        .put("keep", "v".into(), PutOptions::new())
        .await
        .unwrap();
    let guard = store
        .lock(
            "l",
            anykv_core::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let token = guard.fencing_token();

    server.stop();
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the lease's lost() fires");
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("the lock's lost() fires");
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again();

    let other = loop {
        match open(&url).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let start = Instant::now();
    loop {
        match other.get("eph").await {
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "the ephemeral key stayed"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        other.get("keep").await.unwrap().is_some(),
        "a permanent key vanished"
    );
    let g2 = other
        .lock(
            "l",
            anykv_core::LockOptions::new().with_timeout(Duration::from_secs(15)),
        )
        .await
        .expect("the lock is free after the holder's session expired");
    assert!(g2.fencing_token() > token);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !g2.is_lost(),
        "releasing the lost guard touched the new holder"
    );
    g2.release().await.unwrap();
    drop(lease);
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Against a server without `extendedTypesEnabled`, a TTL write fails with
/// `Unsupported` naming the server settings, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_without_extended_types_is_unsupported() {
    let server = ZkServer::start_without_ttl();
    let store = open(&format!("{}/ttl", server.url())).await.unwrap();
    let e = store
        .put(
            "k",
            "v".into(),
            PutOptions::new().with_ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("extendedTypesEnabled"), "{e}");
    assert!(e.to_string().contains("checkIntervalMs"), "{e}");
    assert_eq!(store.get("k").await.unwrap(), None);
    store.close().await.unwrap();
}

/// The server is frozen (SIGSTOP): every call fails within the request
/// timeout (plus slack) with `Timeout` or `Unavailable`, a waiting lock
/// honours its timeout, an open watch does not end with a generic error,
/// a lock holder's `lost()` fires before anyone else can take the lock,
/// and the same store works again once the server resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_calls_fail_retryable_and_recover() {
    let server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("pause")
    );
    let url = format!("{base}?request_timeout=1s&connect_timeout=1s&session_timeout=30s");
    let store = open(&url).await.unwrap();
    let other = open(&url).await.unwrap();
    store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    let mut f = Follower::new();
    while !f.synced {
        f.apply(next(&mut w).await);
    }
    let held = other
        .lock(
            "held",
            anykv_core::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    // A waiter without a timeout of its own.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let r = store.lock("held", anykv_core::LockOptions::new()).await;
            (r.map(|_| ()), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.pause();
    let paused = Instant::now();
    let limit = Duration::from_secs(1) + Duration::from_secs(3);
    macro_rules! fails_in_time {
        ($what:expr, $call:expr) => {{
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), $call)
                .await
                .unwrap_or_else(|_| panic!("{} hung", $what));
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{} succeeded while paused", $what));
            assert!(retryable(&e), "{}: {e} ({:?})", $what, e.kind());
            assert!(
                started.elapsed() < limit,
                "{} took {:?}",
                $what,
                started.elapsed()
            );
        }};
    }
    fails_in_time!("put", store.put("k", "x".into(), PutOptions::new()));
    fails_in_time!("get", store.get("k"));
    fails_in_time!("list", store.list(""));
    fails_in_time!("exists", store.exists("k"));
    fails_in_time!("delete", store.delete("k"));
    fails_in_time!("grant_lease", store.grant_lease(Duration::from_secs(2)));
    fails_in_time!(
        "lock with a timeout",
        store.lock(
            "held",
            anykv_core::LockOptions::new().with_timeout(Duration::from_secs(1))
        )
    );
    fails_in_time!(
        "try_lock",
        store.try_lock("free", anykv_core::LockOptions::new())
    );
    let (r, failed_at) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiting lock hung")
        .unwrap();
    let e = r.unwrap_err();
    assert!(retryable(&e), "the waiting lock: {e}");
    assert!(
        failed_at.duration_since(paused) < limit,
        "the waiting lock failed {:?} after the pause",
        failed_at.duration_since(paused)
    );
    // The holder cannot know it still holds the lock.
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("the holder's lost() fires while the server is away");
    // Stay away past the lock's session timeout.
    let away = Duration::from_secs(4).saturating_sub(paused.elapsed());
    tokio::time::sleep(away).await;
    server.resume();

    // The same stores recover.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rev = loop {
        match store.put("k", "back".into(), PutOptions::new()).await {
            Ok(rev) => break rev,
            Err(e) => {
                assert!(retryable(&e), "after resume: {e}");
                assert!(Instant::now() < deadline, "the store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(store.get("k").await.unwrap().map(|p| p.revision), Some(rev));
    // The watch saw it too (after a Synced if it re-read), never a
    // generic error.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the watch missed the put after resume"
        );
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) if kv.revision == rev => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                assert!(retryable(&e), "the watch ended with {e}");
                break;
            }
            other => panic!("the watch: {other:?}"),
        }
    }
    // Whoever takes the lock now, the old holder knew it was lost first.
    let g = store
        .lock(
            "held",
            anykv_core::LockOptions::new().with_timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert!(held.is_lost());
    g.release().await.unwrap();
    drop(held);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Connecting: a refused port fails promptly with `Unavailable`; a server
/// that does not answer fails with `Timeout` naming the real timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_prompt_and_honest() {
    let port = anykv_testserver::free_port();
    let started = Instant::now();
    let e = open(&format!("zk://127.0.0.1:{port}/x?connect_timeout=5s"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let server = ZkServer::start();
    server.pause();
    let started = Instant::now();
    let e = open(&format!("{}/x?connect_timeout=1500ms", server.url()))
        .await
        .unwrap_err();
    server.resume();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("1.5s"), "{e}");
    assert!(!e.to_string().contains("0ns"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// On a server with the stock `tickTime` (2000 ms) ZooKeeper raises any
/// session timeout to at least 4 s: a lease asked for 1 s reports the
/// 4 s it really has, leases whose TTLs the server raises to the same
/// value share one session, and their keys still vanish on revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tick_lease_ttl_is_reported_honestly() {
    let server = ZkServer::start_stock();
    let store = open(&format!("{}/stock", server.url())).await.unwrap();
    let l1 = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let l3 = store.grant_lease(Duration::from_secs(3)).await.unwrap();
    assert_eq!(l1.ttl(), Duration::from_secs(4));
    assert_eq!(l3.ttl(), Duration::from_secs(4));
    assert_eq!(store.stats().connections, 2, "one session for both leases");
    store
        .put("k", "v".into(), PutOptions::new().with_lease(l1.id()))
        .await
        .unwrap();
    store
        .put("k3", "v".into(), PutOptions::new().with_lease(l3.id()))
        .await
        .unwrap();
    l1.revoke().await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(store.get("k3").await.unwrap().is_some());
    l3.revoke().await.unwrap();
    assert_eq!(store.get("k3").await.unwrap(), None);
    store.close().await.unwrap();
}
