//! The counters of the store's background work: a server restart under an
//! open watch and a kept-alive lease counts a reconnect, the watch's
//! resume and the keep-alive attempts that failed during the outage.
//!
//! The recorder is installed for the whole process, so this file holds a
//! single test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anykv_core::{PutOptions, Store, WatchEvent, WatchOptions};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd::EtcdServer;
use common::{events_until, next, put_retrying};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// The counters with `backend="etcd"`, by name, from one snapshot (a
/// snapshot takes the counts it reads).
fn counters(snapshotter: &Snapshotter) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let etcd = key
            .key()
            .labels()
            .any(|l| l.key() == "backend" && l.value() == "etcd");
        if let (MetricKind::Counter, true, DebugValue::Counter(n)) = (key.kind(), etcd, value) {
            *out.entry(key.key().name().to_owned()).or_insert(0) += n;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_counts_reconnects_resumes_and_keepalive_failures() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");

    let mut server = EtcdServer::start_new();
    let store = EtcdStore::open_url(&format!(
        "{}/metrics?request_timeout=1s&connect_timeout=1s",
        server.url()
    ))
    .await
    .unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    // A 2 s lease is kept alive every few hundred milliseconds, so an
    // outage of two seconds fails some of its keep-alives.
    let _lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let before = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), before);
    assert_eq!(counters(&snapshotter), HashMap::new(), "before the outage");

    let s = tokio::task::spawn_blocking(move || {
        server.stop();
        std::thread::sleep(Duration::from_secs(2));
        server.start();
        server
    })
    .await
    .unwrap();
    let after = put_retrying(&store, "k").await;
    let seen = events_until(&mut w, after).await;
    assert_eq!(seen.last().map(WatchEvent::revision), Some(after));

    let counted = counters(&snapshotter);
    eprintln!("after the restart: {counted:?}");
    for name in [
        "anykv_reconnects_total",
        "anykv_keepalive_failures_total",
        "anykv_watch_resumes_total",
    ] {
        assert!(
            counted.get(name).is_some_and(|n| *n >= 1),
            "{name}: {counted:?}"
        );
    }
    store.close().await.unwrap();
    drop(s);
}
