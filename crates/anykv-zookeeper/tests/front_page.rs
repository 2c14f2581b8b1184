//! The example on the crate's front page (the `# Example` section of
//! `src/lib.rs`, which is `no_run` there) run against a real ZooKeeper
//! server: the same code, only the URL is the test server's. A second test
//! checks that the two copies have not drifted apart.

mod common;

/// The front page's example, with `url` for its literal URL.
async fn example(url: &str) -> anykv_core::Result<()> {
    // front page: start
    use anykv_core::{LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
    use anykv_zookeeper::ZkStore;
    use futures::StreamExt;
    use std::time::Duration;

    let store = ZkStore::open_url(url).await?;

    // Put and get: a pair's revision is the zxid of its last write.
    let rev = store
        .put("config/mode", "fast".into(), PutOptions::new())
        .await?;
    let pair = store.get("config/mode").await?;
    assert_eq!(
        pair.map(|p| (p.value, p.revision)),
        Some(("fast".into(), rev))
    );

    // A watch: the current state, `Synced`, then every change.
    let mut watch = store.watch_tree("config", WatchOptions::new()).await?;
    while let Some(event) = watch.next().await {
        if let WatchEvent::Synced { .. } = event? {
            break;
        }
    }
    let rev = store
        .put("config/mode", "safe".into(), PutOptions::new())
        .await?;
    while let Some(event) = watch.next().await {
        if let WatchEvent::Put(pair) = event? {
            assert_eq!((pair.key.as_str(), pair.revision), ("config/mode", rev));
            break;
        }
    }

    // A lock: one holder at a time, with a fencing token for what it guards.
    let options = LockOptions::new().with_timeout(Duration::from_secs(10));
    let guard = store.lock("jobs/nightly", options).await?;
    assert!(guard.fencing_token() > 0);
    guard.release().await?;
    store.close().await?;
    // front page: end
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_page_example_runs() {
    let url = format!("{}?request_timeout=2s", common::shared_root("front-page"));
    tokio::time::timeout(std::time::Duration::from_secs(60), example(&url))
        .await
        .expect("the example hung")
        .unwrap();
}

/// The lines of the front page's example as `src/lib.rs` has them, the
/// hidden ones (`# `) left out and the URL literal written `url`.
fn front_page_lines() -> Vec<String> {
    let lib = include_str!("../src/lib.rs");
    let docs: Vec<&str> = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = docs.iter().position(|l| *l == "# Example").unwrap();
    let open = start
        + docs[start..]
            .iter()
            .position(|l| *l == "```no_run")
            .unwrap();
    let close = open + 1 + docs[open + 1..].iter().position(|l| *l == "```").unwrap();
    docs[open + 1..close]
        .iter()
        .filter(|l| !l.starts_with("# "))
        .map(|l| l.replace("\"zk://127.0.0.1:2181/app?request_timeout=2s\"", "url"))
        .collect()
}

/// The lines of [`example`] between its markers, unindented.
fn test_lines() -> Vec<String> {
    let me = include_str!("front_page.rs");
    let lines: Vec<&str> = me.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "// front page: start")
        .unwrap();
    let end = lines
        .iter()
        .position(|l| l.trim() == "// front page: end")
        .unwrap();
    lines[start + 1..end]
        .iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned())
        .collect()
}

#[test]
fn the_test_runs_the_front_page_code() {
    assert_eq!(test_lines(), front_page_lines());
}
