//! Credentials, ACLs and TLS against servers of their own:
//! `cargo test -p anykv-redis --test security`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{
    ErrorKind, KvPair, PutOptions, Result, Store, WatchEvent, WatchOptions, WatchStream,
};
use anykv_redis::{RedisConfig, RedisStore};
use anykv_testserver::redis::{shared_url, AclUser, RedisServer};
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

/// `requirepass`: the right password works, a wrong one or none is
/// `Unauthenticated`, and no message shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass() {
    let server = RedisServer::with_requirepass("s3cret-pass");
    let base = server.url().replace("redis://", "");
    let ok = open(&format!("redis://:s3cret-pass@{base}/0/app"))
        .await
        .unwrap();
    ok.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert!(!format!("{ok:?}").contains("s3cret-pass"));
    for url in [
        format!("redis://:wrong-pass@{base}/0/app"),
        format!("redis://{base}/0/app"),
    ] {
        let e = open(&url).await.unwrap_err();
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
                    +time +incr +get +mget +getrange +set +pttl +pexpire +del +zadd \
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
    let s = open(&format!("redis://app:app-pass@{base}/0/r"))
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
    let e = open(&format!("redis://app:bad-pass@{base}/0/r"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!e.to_string().contains("bad-pass"));
    let e = open(&format!("redis://other:other-pass@{base}/0/r"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // A user that may not XREAD the change stream: open fails loudly
    // instead of watches staying silent.
    let e = open(&format!("redis://noxread:noxread-pass@{base}/0/r"))
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
    let s = open(&url).await.unwrap();
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
    assert!(open(&untrusted).await.is_err());
}

/// A config's Debug never shows the password; a store's errors on a server
/// that is not there are `Unavailable` or `Timeout`, without it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_never_shown() {
    let _server = anykv_conformance::shared_server_guard().await;
    let cfg = RedisConfig::new("h", 1).with_user("u", "topsecret");
    assert!(!format!("{cfg:?}").contains("topsecret"));
    let port = anykv_testserver::free_port();
    let e = open(&format!(
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
    let s: Arc<dyn Store> = open(&url).await.unwrap();
    s.close().await.unwrap();
    assert_eq!(s.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
}

/// The backend talks to one server, so `open_url` with several hosts (a
/// dead one first and the live server second, or the other way round) is
/// refused as a `Config` error saying so and naming the Sentinel and
/// Cluster forms, before anything connects, and
/// without the password; the live server alone opens and round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_with_several_hosts_is_refused() {
    let _server = anykv_conformance::shared_server_guard().await;
    let live = shared_url().replace("redis://", "");
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let root = anykv_testserver::unique_name("severalhosts");
    for hosts in [format!("{dead},{live}"), format!("{live},{dead}")] {
        let url = format!("redis://:multi-secret@{hosts}/0/{root}");
        let e = RedisStore::open_url(&url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("names several servers; a redis:// URL talks to one")
                && msg.contains("use redis+sentinel:// or redis+cluster:// for several"),
            "{msg}"
        );
        assert!(!msg.contains("multi-secret"), "{msg}");
    }
    let store = RedisStore::open_url(&format!("redis://{live}/0/{root}"))
        .await
        .unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(KvPair::new("k", "v", rev))
    );
    assert!(store.delete("k").await.unwrap());
    store.close().await.unwrap();
}

/// Messages carry the server's or the system's text, never the client
/// library's `Debug` names, and never the password: a connection refused
/// and a refused password, word for word where the text is ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_are_clean() {
    let port = anykv_testserver::free_port();
    let e = RedisStore::open_url(&format!(
        "redis://u:topsecret@127.0.0.1:{port}/0/x?connect_timeout=500ms&request_timeout=500ms"
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.starts_with(&format!(
            "redis: unavailable: connect to 127.0.0.1:{port}: Connection refused"
        )),
        "{msg}"
    );
    for debug in ["topsecret", "Kind", "Io", "Repr", "{", "\""] {
        assert!(!msg.contains(debug), "{debug:?} in {msg}");
    }

    let server = RedisServer::with_requirepass("s3cret-pass");
    let base = server.url().replace("redis://", "");
    let e = RedisStore::open_url(&format!("redis://:wrong-pass@{base}/0/app"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    let msg = e.to_string();
    println!("{msg}");
    assert_eq!(
        msg,
        format!("redis: authentication failed: connect to {base}: Password authentication failed")
    );
    let e = RedisStore::open_url(&format!("redis://{base}/0/app"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    let msg = e.to_string();
    println!("{msg}");
    assert_eq!(
        msg,
        "redis: authentication failed: open: NOAUTH Authentication required."
    );
    for debug in ["s3cret-pass", "Kind", "Repr", "\""] {
        assert!(!msg.contains(debug), "{debug:?} in {msg}");
    }
}
