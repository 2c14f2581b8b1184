//! The background counters of the backend (`anykv_reconnects_total`,
//! `anykv_keepalive_failures_total`, `anykv_watch_resumes_total`, each
//! labelled `backend = "zookeeper"`) across a server restart, recorded by
//! a `metrics` recorder local to this test's thread (a current-thread
//! runtime, so the client's and the store's background tasks run on it).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_testserver::zookeeper::ZkServer;
use anykv_zookeeper::ZkStore;
use common::{next, Follower};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// The zookeeper counters seen so far (a snapshot drains the recorder's
/// counters, so they are summed here).
struct Counters {
    snapshotter: Snapshotter,
    totals: HashMap<String, u64>,
}

impl Counters {
    /// Counter `name` with `backend = "zookeeper"` so far (0 when it was
    /// never incremented).
    fn get(&mut self, name: &str) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let ours = key
                .key()
                .labels()
                .any(|l| l.key() == "backend" && l.value() == "zookeeper");
            if let (MetricKind::Counter, true, DebugValue::Counter(n)) = (key.kind(), ours, value) {
                *self.totals.entry(key.key().name().to_owned()).or_default() += n;
            }
        }
        self.totals.get(name).copied().unwrap_or(0)
    }
}

#[test]
fn a_server_restart_counts_reconnects_keepalive_failures_and_watch_resumes() {
    let recorder = DebuggingRecorder::new();
    let mut counters = Counters {
        snapshotter: recorder.snapshotter(),
        totals: HashMap::new(),
    };
    let server = Arc::new(Mutex::new(ZkServer::start()));
    let address = server.lock().unwrap().address();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!(
                "zk://{address}/{}?request_timeout=2s&connect_timeout=1s&session_timeout=20s",
                anykv_testserver::unique_name("metrics")
            );
            let store = ZkStore::open_url(&url).await.unwrap();
            let held = store
                .lock("l", LockOptions::new().with_ttl(Duration::from_secs(20)))
                .await
                .unwrap();
            let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
            let mut f = Follower::new();
            while !f.synced {
                f.apply(next(&mut w).await);
            }
            for name in [
                "anykv_reconnects_total",
                "anykv_keepalive_failures_total",
                "anykv_watch_resumes_total",
            ] {
                assert_eq!(counters.get(name), 0, "{name} before the restart");
            }

            // Stop and start the server again (same port and data: the
            // sessions live on).
            let s = server.clone();
            tokio::task::spawn_blocking(move || {
                let mut s = s.lock().unwrap();
                s.stop();
                std::thread::sleep(Duration::from_millis(500));
                s.start_again();
            })
            .await
            .unwrap();

            // The watch goes on: a write after the restart reaches it.
            let deadline = Instant::now() + Duration::from_secs(30);
            let rev = loop {
                match store.put("after", "x".into(), PutOptions::new()).await {
                    Ok(rev) => break rev,
                    Err(e) if Instant::now() < deadline => {
                        assert!(common::retryable(&e), "{e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("no put within 30 s of the restart: {e}"),
                }
            };
            loop {
                match next(&mut w).await {
                    WatchEvent::Put(kv) if kv.key == "after" => {
                        assert_eq!(kv.revision, rev);
                        break;
                    }
                    _ => {}
                }
            }
            // The lock's session reconnects on its own schedule.
            let deadline = Instant::now() + Duration::from_secs(30);
            while counters.get("anykv_reconnects_total") == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!held.is_lost(), "the lock survived the restart");
            held.release().await.unwrap();
            store.close().await.unwrap();
        });
    });
    assert!(counters.get("anykv_reconnects_total") >= 1, "reconnects");
    assert!(
        counters.get("anykv_keepalive_failures_total") >= 1,
        "keep-alive failures"
    );
    assert!(
        counters.get("anykv_watch_resumes_total") >= 1,
        "watch resumes"
    );
}
