//! The conformance suite against a real ZooKeeper 3.8 (at
//! `ANYKV_ZOOKEEPER_URL`, or started on a free loopback port with TTL nodes
//! enabled), plus fault and security tests:
//! `cargo test --test zookeeper --features zookeeper`.

use std::time::{Duration, Instant};

use anykv::zookeeper::ZkStore;
use anykv::{ErrorKind, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_conformance::{conformance_tests, UrlFactory};
use anykv_testserver::zookeeper::{shared_url, ZkServer};
use futures::StreamExt;

fn factory() -> UrlFactory {
    UrlFactory::new(shared_url(), |url| async move { anykv::open(&url).await })
}

// ZooKeeper keeps no history (watch_resume = false), so resuming a watch is
// refused with Unsupported; its watches carry no data, so
// watch_every_revision is false, which the watch cases allow for.
conformance_tests!(
    factory(),
    unsupported = [
        watch_resume_from_revision,
        watch_tree_resume_from_revision,
        watch_resume_compacted,
    ]
);

async fn next(w: &mut anykv::WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

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
    let url = format!("{base}?request_timeout=1s&session_timeout=20s");
    let store = anykv::open(&url).await.unwrap();
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
        match anykv::open(&url).await {
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
    let store = anykv::open(&url).await.unwrap();
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
            anykv::LockOptions::new().with_ttl(Duration::from_secs(2)),
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
        match anykv::open(&url).await {
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
            anykv::LockOptions::new().with_timeout(Duration::from_secs(15)),
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
    let store = anykv::open(&format!("{}/ttl", server.url())).await.unwrap();
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

/// With digest auth our nodes carry ACLs: a client without credentials, or
/// with a wrong password, gets `PermissionDenied`; the password never shows
/// in errors or Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_protects_nodes() {
    let url = shared_url();
    let root = anykv_testserver::unique_name("secure");
    let host = url.trim_start_matches("zk://");
    let owner = anykv::open(&format!("zk://alice:s3cret-pw@{host}/{root}"))
        .await
        .unwrap();
    owner.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert!(!format!("{owner:?}").contains("s3cret-pw"));

    let anon = anykv::open(&format!("zk://{host}/{root}")).await.unwrap();
    let e = anon.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = anon
        .put("k", "x".into(), PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    let mut w = anon.watch_tree("", WatchOptions::new()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        other => panic!("a watch without credentials gave {other:?}"),
    }

    let wrong = anykv::open(&format!("zk://alice:wrong@{host}/{root}"))
        .await
        .unwrap();
    let e = wrong.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.to_string().contains("s3cret-pw"));
    let e = wrong.delete("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    assert_eq!(
        owner.get("k").await.unwrap().map(|p| p.value),
        Some("v".into())
    );
    owner.delete_tree("").await.unwrap();
    owner.close().await.unwrap();
}

/// Several servers: a dead one in the list does not stop the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_one_down() {
    let url = shared_url();
    let host = url.trim_start_matches("zk://");
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let store = anykv::open(&format!(
        "zk://{dead},{host}/{}?connect_timeout=500ms",
        anykv_testserver::unique_name("multi")
    ))
    .await
    .unwrap();
    let zk = store.as_any().downcast_ref::<ZkStore>().unwrap();
    assert!(zk.syncs_reads(), "several servers: reads must sync");
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().map(|p| p.revision), Some(rev));
    assert_eq!(store.list("").await.unwrap().len(), 1);
    assert!(store.exists("k").await.unwrap());
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// One standalone server (`srvr` says so): reads skip the sync. Through a
/// second store, a write completed by one store is seen by the other's
/// very next read, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_reads_without_sync_see_completed_writes() {
    let url = format!(
        "{}/{}",
        shared_url(),
        anykv_testserver::unique_name("standalone")
    );
    let a = anykv::open(&url).await.unwrap();
    let b = anykv::open(&url).await.unwrap();
    for s in [&a, &b] {
        let zk = s.as_any().downcast_ref::<ZkStore>().unwrap();
        assert!(!zk.syncs_reads(), "the test server is standalone");
    }
    for i in 0..50u32 {
        let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let value = format!("v{i}");
        let rev = w
            .put("k", value.clone().into(), PutOptions::new())
            .await
            .unwrap();
        let got = r.get("k").await.unwrap().unwrap();
        assert_eq!((got.value.as_ref(), got.revision), (value.as_bytes(), rev));
    }
    a.delete_tree("").await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[test]
fn the_suite_has_at_least_45_cases() {
    assert!(anykv_conformance::all_cases().len() >= 45);
}

#[allow(dead_code)]
fn _store_is_object_safe(s: &dyn Store) -> &dyn Store {
    s
}
