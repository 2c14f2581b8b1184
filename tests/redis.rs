//! The conformance suite against a real redis-server (at `ANYKV_REDIS_URL`,
//! or started on a free loopback port), plus fault and security tests:
//! `cargo test --test redis --features redis`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::{ErrorKind, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_conformance::{conformance_tests, StoreFactory, UrlFactory};
use anykv_testserver::redis::{restart_shared, shared_url, AclUser, RedisServer};
use futures::StreamExt;

/// The suite's factory: clients on `{shared server}/0/{root}`, the compact
/// hook (`XTRIM MINID`), and a restart hook for the shared server when the
/// tests started it.
struct RedisFactory(UrlFactory);

#[anykv::async_trait]
impl StoreFactory for RedisFactory {
    async fn open(&self, root: &str) -> anykv::Result<Arc<dyn Store>> {
        self.0.open(root).await
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> anykv::Result<()> {
        anykv::redis::compact(&**store, revision).await
    }

    async fn restart_server(&self) -> anykv::Result<()> {
        match tokio::task::spawn_blocking(restart_shared).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anykv::Error::unsupported("redis", "restart_server", e)),
            Err(e) => Err(anykv::Error::Config(format!("restart failed: {e}"))),
        }
    }

    async fn pause_server(&self) -> anykv::Result<()> {
        anykv_testserver::redis::pause_shared(true)
            .map_err(|e| anykv::Error::unsupported("redis", "pause_server", e))
    }

    async fn resume_server(&self) -> anykv::Result<()> {
        anykv_testserver::redis::pause_shared(false)
            .map_err(|e| anykv::Error::unsupported("redis", "resume_server", e))
    }

    fn request_timeout(&self) -> Duration {
        SUITE_REQUEST_TIMEOUT
    }
}

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn factory() -> RedisFactory {
    RedisFactory(UrlFactory::new(
        format!(
            "{}/0?request_timeout={}ms",
            shared_url(),
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        |url| async move { anykv::open(&url).await },
    ))
}

conformance_tests!(factory());

async fn next(w: &mut anykv::WatchStream) -> WatchEvent {
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
    let store = anykv::open(&url).await.unwrap();
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
    let store = anykv::open(&url).await.unwrap();
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
    let store = anykv::open(&url).await.unwrap();
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

/// `requirepass`: the right password works, a wrong one or none is
/// `Unauthenticated`, and no message shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass() {
    let server = RedisServer::with_requirepass("s3cret-pass");
    let base = server.url().replace("redis://", "");
    let ok = anykv::open(&format!("redis://:s3cret-pass@{base}/0/app"))
        .await
        .unwrap();
    ok.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert!(!format!("{ok:?}").contains("s3cret-pass"));
    for url in [
        format!("redis://:wrong-pass@{base}/0/app"),
        format!("redis://{base}/0/app"),
    ] {
        let e = anykv::open(&url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{url}: {e}");
        assert!(!e.to_string().contains("wrong-pass"), "{e}");
    }
    ok.close().await.unwrap();
}

/// ACL users: the right password works; a wrong one is `Unauthenticated`;
/// a user whose key patterns exclude the namespace is `PermissionDenied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users() {
    let server = RedisServer::with_acl_users(&[
        AclUser {
            name: "app".into(),
            password: "app-pass".into(),
            // Exactly the commands the crate documentation lists; no
            // CONFIG, no KEYS or SCAN: the backend never needs them.
            rules: "~{anykv}:* -@all +evalsha +script|load +xread +select \
                    +time +incr +get +set +pttl +pexpire +del +hmget +hget +hset +hdel +zadd \
                    +zrem +zscore +zrangebylex +zrangebyscore +sadd +srem +smembers +xadd \
                    +xrange +xrevrange +exists"
                .into(),
        },
        AclUser {
            name: "noxread".into(),
            password: "noxread-pass".into(),
            // Everything but XREAD: watches could never see a change.
            rules: "~{anykv}:* +@all -xread".into(),
        },
        AclUser {
            name: "other".into(),
            password: "other-pass".into(),
            rules: "~other:* +@all".into(),
        },
    ]);
    let base = server.url().replace("redis://", "");
    let s = anykv::open(&format!("redis://app:app-pass@{base}/0/r"))
        .await
        .unwrap();
    let rev = s.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().unwrap().revision, rev);
    // TTL expiry works and is seen by watchers on a server where this user
    // cannot run CONFIG (no keyspace notifications involved).
    let mut w = s.watch("t", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    let t = s
        .put(
            "t",
            "x".into(),
            PutOptions::new().with_ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == t));
    let started = Instant::now();
    match next(&mut w).await {
        WatchEvent::Delete { key, revision } => {
            assert_eq!(key, "t");
            assert!(revision > t);
        }
        other => panic!("expected the expiry's Delete, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(s.get("t").await.unwrap(), None);
    let e = anykv::open(&format!("redis://app:bad-pass@{base}/0/r"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!e.to_string().contains("bad-pass"));
    let e = anykv::open(&format!("redis://other:other-pass@{base}/0/r"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // A user that may not XREAD the change stream: open fails loudly
    // instead of watches staying silent.
    let e = anykv::open(&format!("redis://noxread:noxread-pass@{base}/0/r"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    s.close().await.unwrap();
}

/// TLS with a CA made by the test: `rediss://` with `ca_file` works, and
/// without trusting that CA the connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_test_ca() {
    let Some(server) = RedisServer::start_tls() else {
        panic!("this redis-server does not support --tls-port");
    };
    let ca = server.ca_file().unwrap().display().to_string();
    let url = format!("{}/0/tls?ca_file={ca}", server.url());
    let s = anykv::open(&url).await.unwrap();
    let rev = s.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let mut w = s.watch("k", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == rev));
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    let rev2 = s.put("k", "w".into(), PutOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == rev2));
    s.close().await.unwrap();
    let untrusted = format!(
        "{}/0/tls?connect_timeout=1s&request_timeout=1s",
        server.url()
    );
    assert!(anykv::open(&untrusted).await.is_err());
}

/// A config's Debug never shows the password; a store's errors on a server
/// that is not there are `Unavailable` or `Timeout`, without it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_shown() {
    let _server = anykv_conformance::shared_server_guard().await;
    let cfg = anykv::redis::RedisConfig::new("h", 1).with_user("u", "topsecret");
    assert!(!format!("{cfg:?}").contains("topsecret"));
    let port = anykv_testserver::free_port();
    let e = anykv::open(&format!(
        "redis://u:topsecret@127.0.0.1:{port}/0/x?connect_timeout=500ms&request_timeout=500ms"
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(!e.to_string().contains("topsecret"), "{e}");
    let url = format!(
        "{}/0/{}",
        shared_url(),
        anykv_testserver::unique_name("debug")
    );
    let s: Arc<dyn Store> = anykv::open(&url).await.unwrap();
    s.close().await.unwrap();
    assert_eq!(s.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
}

/// The change stream is bounded by `history`: a watch resuming from a
/// revision that was trimmed away yields `Compacted` and ends, while one
/// resuming within the kept history replays it. (A namespace of its own,
/// so the trimming touches no other test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_bound_yields_compacted() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = format!(
        "{}/0/h?namespace={}&history=100",
        shared_url(),
        anykv_testserver::unique_name("history")
    );
    let s = anykv::open(&url).await.unwrap();
    let first = s.put("k", "0".into(), PutOptions::new()).await.unwrap();
    let mut last = first;
    for i in 1..1000 {
        last = s
            .put("k", format!("{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(first))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Compacted, "{e}"),
        other => panic!("expected Err(Compacted), got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .is_none());
    let mut w = s
        .watch("k", WatchOptions::from_revision(last - 10))
        .await
        .unwrap();
    for r in last - 9..=last {
        assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    }
    s.delete_tree("").await.unwrap();
    s.close().await.unwrap();
}

/// Resuming over more matching changes than the watch's buffer delivers
/// all of them (the catch-up comes ahead of the channel) instead of
/// lagging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_more_than_buffer() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = format!(
        "{}/0/{}",
        shared_url(),
        anykv_testserver::unique_name("resume-buffer")
    );
    let s = anykv::open(&url).await.unwrap();
    let first = s.put("k", "start".into(), PutOptions::new()).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..40 {
        revs.push(
            s.put("k", format!("{i}").into(), PutOptions::new())
                .await
                .unwrap(),
        );
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(first).with_buffer(4))
        .await
        .unwrap();
    for r in revs {
        assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    }
    let r = s.put("k", "live".into(), PutOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    s.delete_tree("").await.unwrap();
    s.close().await.unwrap();
}
