//! `Store::status` against one real redis-server: what it reports, that
//! it writes nothing, and how it fails for a closed store, a stopped
//! server and a frozen one: `cargo test -p anykv-redis --test status`.

use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, PutOptions, Store, StoreStats};
use anykv_redis::RedisStore;
use anykv_testserver::redis::{shared_url, RedisServer};

/// The value of detail `name`.
fn detail<'a>(details: &'a [(String, String)], name: &str) -> Option<&'a str> {
    details
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One server: its address, version and role, the namespace's revision
/// (read, not bumped), the stats and the details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_one_server() {
    let ns = anykv_testserver::unique_name("status");
    let url = format!("{}/0/app/x?namespace={ns}&request_timeout=2s", shared_url());
    let store = RedisStore::open_url(&url).await.unwrap();

    // A fresh namespace: revision 0.
    let before = store.status().await.unwrap();
    assert_eq!(before.backend, "redis");
    assert_eq!(before.revision, Some(0));

    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let status = store.status().await.unwrap();
    assert_eq!(status.revision, Some(rev));
    // Read, not bumped.
    assert_eq!(store.status().await.unwrap().revision, Some(rev));
    let next = store.put("k", "w".into(), PutOptions::new()).await.unwrap();
    assert_eq!(next, rev + 1);

    assert_eq!(status.servers.len(), 1, "{status:?}");
    let server = &status.servers[0];
    let address = shared_url().trim_start_matches("redis://").to_owned();
    assert_eq!(server.address, address);
    assert_eq!(server.error, None);
    assert_eq!(server.role.as_deref(), Some("primary"));
    let version = server.version.as_deref().expect("a version");
    assert!(
        version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            >= Some(7),
        "version {version:?}"
    );
    assert_eq!(status.stats, StoreStats::new(0, 0, 0, 1));

    let d = &status.details;
    assert_eq!(detail(d, "mode"), Some("standalone"));
    assert_eq!(detail(d, "redis_mode"), Some("standalone"));
    assert_eq!(detail(d, "db"), Some("0"));
    assert_eq!(detail(d, "namespace"), Some(ns.as_str()));
    assert_eq!(detail(d, "prefix"), Some("app/x"));
    assert_eq!(detail(d, "connected_replicas"), Some("0"));
    let replid = detail(d, "master_replid").expect("master_replid");
    assert_eq!(replid.len(), 40, "{replid:?}");
    assert!(replid.bytes().all(|b| b.is_ascii_hexdigit()), "{replid:?}");
    assert_eq!(detail(d, "sentinel"), None);

    store.close().await.unwrap();
    let e = store.status().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}

/// A stopped server: `Unavailable`, quickly, with the address and
/// without the password; a frozen one: `Timeout` within the request
/// timeout. Both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_stopped_and_frozen_server() {
    let mut server = RedisServer::start_new();
    let url = format!(
        "{}/0/{}?request_timeout=700ms&connect_timeout=500ms",
        server.url(),
        anykv_testserver::unique_name("status")
    );
    let store = RedisStore::open_url(&url).await.unwrap();
    assert_eq!(store.status().await.unwrap().servers[0].error, None);

    server.pause().unwrap();
    let started = Instant::now();
    let e = store.status().await.unwrap_err();
    let took = started.elapsed();
    server.resume().unwrap();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(e.to_string(), "redis: status timed out after 700ms");
    assert!(took < Duration::from_millis(1200), "status took {took:?}");

    server.stop();
    let started = Instant::now();
    let e = store.status().await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(took < Duration::from_millis(1200), "status took {took:?}");

    server.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match store.status().await {
            Ok(s) => break s,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("status did not recover: {e}"),
        }
    };
    assert_eq!(status.servers[0].error, None);
    assert_eq!(status.servers[0].role.as_deref(), Some("primary"));
    store.close().await.unwrap();
}
