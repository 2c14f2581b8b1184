//! The crate documentation's example, run against a real redis-server:
//! `cargo test -p anykv-redis --test front_page`. The code between the
//! markers below is the example, line for line; a test checks that the
//! crate documentation still shows exactly it.

// front page: begin
use std::time::Duration;

use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_redis::RedisStore;
use futures::StreamExt;

async fn front_page(url: &str) -> anykv_core::Result<()> {
    let store = RedisStore::open_url(url).await?;

    // Every write returns the revision it made; reads return it too.
    let first = store
        .put("config/mode", "fast".into(), PutOptions::new())
        .await?;
    let pair = store.get("config/mode").await?.expect("just written");
    assert_eq!((&pair.value[..], pair.revision), (&b"fast"[..], first));

    // A watch of a tree: its current keys, `Synced`, then every change.
    let mut changes = store.watch_tree("config", WatchOptions::new()).await?;
    assert!(matches!(changes.next().await, Some(Ok(WatchEvent::Put(kv))) if kv.revision == first));
    assert!(matches!(
        changes.next().await,
        Some(Ok(WatchEvent::Synced { .. }))
    ));
    let second = store
        .put("config/mode", "safe".into(), PutOptions::new())
        .await?;
    match changes.next().await {
        Some(Ok(WatchEvent::Put(kv))) => {
            assert_eq!((kv.key.as_str(), kv.revision), ("config/mode", second))
        }
        other => panic!("expected the change, got {other:?}"),
    }

    // A lock: held (and kept alive) until released; waiting at most 5 s.
    let options = LockOptions::new()
        .with_ttl(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(5));
    let guard = store.lock("jobs/nightly", options).await?;
    assert!(store
        .try_lock("jobs/nightly", LockOptions::new())
        .await?
        .is_none());
    guard.release().await?;

    store.close().await
}
// front page: end

/// The example, against the shared server, on a root of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_page_example_runs() {
    let url = format!(
        "{}/0/{}?request_timeout=2s",
        anykv_testserver::redis::shared_url(),
        anykv_testserver::unique_name("frontpage")
    );
    front_page(&url).await.unwrap();
}

/// The crate documentation's example is the code above.
#[test]
fn front_page_is_this_code() {
    let this = include_str!("front_page.rs");
    let ours = this
        .split_once("// front page: begin\n")
        .and_then(|(_, rest)| rest.split_once("// front page: end"))
        .map(|(code, _)| code)
        .expect("markers");
    let lib = include_str!("../src/lib.rs");
    let block = lib
        .split_once("//! ```no_run\n")
        .and_then(|(_, rest)| rest.split_once("//! ```\n"))
        .map(|(code, _)| code)
        .expect("the example");
    let shown: String = block
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(shown.trim_end(), ours.trim_end());
}
