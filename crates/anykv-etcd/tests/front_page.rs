//! The crate's front-page example (in `src/lib.rs`), run against a real
//! server; a second test checks that the example there is this code.

mod common;

// front page start
use std::time::Duration;

use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_etcd::EtcdStore;
use futures::StreamExt;

async fn front_page(url: &str) -> anykv_core::Result<()> {
    // The typed store, with etcd's own extras (members, compact, config).
    let store = EtcdStore::open_url(url).await?;
    // Or any backend by its URL, as `anykv::open` does: an `Arc<dyn
    // Store>` with a tracing span and metrics around every call.
    anykv_etcd::register();
    let shared = anykv_core::open(url).await?;

    // Put and get: every write returns its revision.
    let rev = store
        .put("config/mode", "fast".into(), PutOptions::new())
        .await?;
    let pair = shared.get("config/mode").await?;
    assert_eq!(
        pair.map(|p| (p.value, p.revision)),
        Some(("fast".into(), rev))
    );

    // Watch a tree: its current state (a `Put` per key), `Synced`,
    // then every change after it.
    let mut changes = shared.watch_tree("config", WatchOptions::new()).await?;
    let first = changes.next().await;
    assert!(matches!(first, Some(Ok(WatchEvent::Put(p))) if p.key == "config/mode"));
    let synced = changes.next().await;
    assert!(matches!(synced, Some(Ok(WatchEvent::Synced { .. }))));
    let rev = store
        .put("config/mode", "safe".into(), PutOptions::new())
        .await?;
    match changes.next().await {
        Some(Ok(WatchEvent::Put(pair))) => {
            assert_eq!((pair.key.as_str(), pair.revision), ("config/mode", rev));
        }
        other => panic!("expected the put, got {other:?}"),
    }

    // A lock: held until released (or its lease is lost), exclusive
    // against every other client; its fencing token grows with each
    // holder.
    let options = LockOptions::new()
        .with_ttl(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(5));
    let guard = store.lock("jobs/nightly", options).await?;
    let other = shared.try_lock("jobs/nightly", LockOptions::new()).await?;
    assert!(other.is_none());
    let token = guard.fencing_token();
    guard.release().await?;
    let next = shared.lock("jobs/nightly", LockOptions::new()).await?;
    assert!(next.fencing_token() > token);
    next.release().await?;

    store.close().await?;
    shared.close().await
}
// front page end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_page_example_runs() {
    let url = format!(
        "{}/front_page?request_timeout=2s",
        anykv_testserver::etcd::shared_url()
    );
    front_page(&url).await.unwrap();
}

/// The example on the front page, without its hidden lines, is the code
/// between the markers of this file.
#[test]
fn the_front_page_shows_this_code() {
    let lib = include_str!("../src/lib.rs");
    let shown: Vec<&str> = lib
        .lines()
        .skip_while(|l| *l != "//! # Example")
        .skip_while(|l| *l != "//! ```no_run")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .filter(|l| *l != "#" && !l.starts_with("# "))
        .collect();
    let this = include_str!("front_page.rs");
    let code: Vec<&str> = this
        .lines()
        .skip_while(|l| *l != "// front page start")
        .skip(1)
        .take_while(|l| *l != "// front page end")
        .collect();
    assert!(!code.is_empty());
    assert_eq!(shown, code);
}
