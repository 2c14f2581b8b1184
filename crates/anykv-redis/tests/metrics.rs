//! The counters of background work (`anykv_reconnects_total`,
//! `anykv_keepalive_failures_total`, `anykv_watch_resumes_total`) while
//! the server stops and starts under an open store with a watch and a
//! lease: `cargo test -p anykv-redis --test metrics`. A test binary of its
//! own, with one test: the recorder it installs is the process's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anykv_core::{PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use anykv_redis::RedisStore;
use anykv_testserver::redis::RedisServer;
use futures::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

async fn next(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// The counters `name{backend="redis"}` counted since the last call (a
/// snapshot resets them), by name.
fn counters(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(k, _, _, v)| {
            let labelled = k
                .key()
                .labels()
                .any(|l| l.key() == "backend" && l.value() == "redis");
            match v {
                DebugValue::Counter(n) if k.kind() == MetricKind::Counter && labelled => {
                    Some((k.key().name().to_owned(), n))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn background_work_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut server = RedisServer::start_new();
        let url = format!(
            "{}/0/{}?request_timeout=500ms&connect_timeout=500ms",
            server.url(),
            anykv_testserver::unique_name("metrics")
        );
        let store = RedisStore::open_url(&url).await.unwrap();
        let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
        assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
        let _lease = store.grant_lease(Duration::from_secs(3)).await.unwrap();
        let before = counters(&snapshotter);
        for name in [
            "anykv_reconnects_total",
            "anykv_keepalive_failures_total",
            "anykv_watch_resumes_total",
        ] {
            assert_eq!(before.get(name).copied().unwrap_or(0), 0, "{name}");
        }

        // Down for longer than a keep-alive interval (1 s for a 3 s TTL).
        server.stop();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        server.start();

        // The store comes back by itself; the watch goes on.
        let deadline = Instant::now() + Duration::from_secs(15);
        let rev = loop {
            match store.put("k", "after".into(), PutOptions::new()).await {
                Ok(rev) => break rev,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("the store did not recover: {e}"),
            }
        };
        loop {
            match next(&mut w).await {
                WatchEvent::Put(kv) if kv.revision == rev => break,
                _ => {}
            }
        }
        let after = counters(&snapshotter);
        for name in [
            "anykv_reconnects_total",
            "anykv_keepalive_failures_total",
            "anykv_watch_resumes_total",
        ] {
            assert!(
                after.get(name).copied().unwrap_or(0) >= 1,
                "{name}: {after:?}"
            );
        }
        store.close().await.unwrap();
    });
}
