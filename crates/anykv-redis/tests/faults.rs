//! The server stops, restarts, or restarts without persistence under an
//! open store and its watches: `cargo test -p anykv-redis --test faults`.
//! Each test starts a redis-server of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, PutOptions, Result, Store, WatchEvent, WatchOptions, WatchStream};
use anykv_redis::RedisStore;
use anykv_testserver::redis::RedisServer;
use futures::StreamExt;

/// Opens a Redis store as `anykv::open` would, without the facade.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(RedisStore::open_url(url).await?))
}

async fn next(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// The server restarts (append-only persistence on) while a watch is open:
/// calls during the outage fail with `Unavailable` or `Timeout` within the
/// configured timeout, the store recovers without being reopened, the data
/// survived, and the watch delivers every write made after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_watch_and_data() {
    let mut server = RedisServer::start_new();
    let url = format!(
        "{}/0/{}?request_timeout=1s",
        server.url(),
        anykv_testserver::unique_name("restart")
    );
    let store = open(&url).await.unwrap();
    let before = store
        .put("k", "before".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == before));
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let e = store
            .put("k", "during".into(), PutOptions::new())
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "a call during the outage took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let e = store.get("k").await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_millis(2500));
    }
    server.start();

    // The store recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let kv = loop {
        match store.get("k").await {
            Ok(kv) => break kv,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    let kv = kv.expect("the data survived the restart");
    assert_eq!(kv.revision, before);
    assert_eq!(&kv.value[..], b"before");

    let mut revs = Vec::new();
    for i in 0..20 {
        let r = loop {
            match store
                .put(
                    &format!("after/{i}"),
                    format!("v{i}").into(),
                    PutOptions::new(),
                )
                .await
            {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline && e.is_retryable() => {
                    // An unknown outcome: the write may have been applied,
                    // so the watch may show it; the retry is a new revision.
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        revs.push((format!("after/{i}"), r));
    }
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        match next(&mut w).await {
            WatchEvent::Put(kv) => {
                if let Some(last) = seen.last() {
                    let last: &(String, u64) = last;
                    assert!(kv.revision > last.1, "out of order");
                }
                if revs.iter().any(|(k, r)| *k == kv.key && *r == kv.revision) {
                    seen.push((kv.key, kv.revision));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, revs);
    store.close().await.unwrap();
}

/// The server restarts without persistence while a watch is open: the
/// namespace (and its revision counter) is gone, so revisions would be
/// handed out again. The watch yields `Compacted` and ends instead of
/// staying silent, and the store goes on working with new watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_ends_watches() {
    let mut server = RedisServer::start_without_persistence();
    let url = format!(
        "{}/0/{}?request_timeout=1s",
        server.url(),
        anykv_testserver::unique_name("lossy")
    );
    let store = open(&url).await.unwrap();
    let mut last = 0;
    for i in 0..5 {
        last = store
            .put("k", format!("{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == last));
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    server.restart();
    match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Compacted, "{e}"),
        other => panic!("expected Err(Compacted), got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .is_none());
    // A new watch sees new writes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut w = loop {
        match store.watch("k", WatchOptions::new()).await {
            Ok(w) => break w,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    let r = store
        .put("k", "new".into(), PutOptions::new())
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    store.close().await.unwrap();
}

/// A watch resumed from a revision after a restart replays what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_restart() {
    let mut server = RedisServer::start_new();
    let url = format!(
        "{}/0/{}",
        server.url(),
        anykv_testserver::unique_name("resume")
    );
    let store = open(&url).await.unwrap();
    let a = store.put("a", "1".into(), PutOptions::new()).await.unwrap();
    let b = store.put("b", "2".into(), PutOptions::new()).await.unwrap();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut w = loop {
        match store.watch_tree("", WatchOptions::from_revision(a)).await {
            Ok(w) => break w,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == b && kv.key == "b"));
    store.close().await.unwrap();
}
