//! The backend's own security and configuration tests on the shared
//! server: digest ACLs, several servers with one down, and reads without
//! `sync` on a standalone server. They hold the suite's shared-server
//! guard.

mod common;

use std::time::Duration;

use anykv_core::{ErrorKind, KvPair, ListOptions, PutOptions, Store, WatchOptions};
use anykv_testserver::zookeeper::shared_url;
use anykv_zookeeper::ZkStore;
use common::open;
use futures::StreamExt;

/// With digest auth our nodes carry ACLs: a client without credentials, or
/// with a wrong password, gets `PermissionDenied`; the password never shows
/// in errors or Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_protects_nodes() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_url();
    let root = anykv_testserver::unique_name("secure");
    let host = url.trim_start_matches("zk://");
    let owner = open(&format!("zk://alice:s3cret-pw@{host}/{root}"))
        .await
        .unwrap();
    owner.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert!(!format!("{owner:?}").contains("s3cret-pw"));

    let anon = open(&format!("zk://{host}/{root}")).await.unwrap();
    let e = anon.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = anon
        .put("k", "x".into(), PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    let mut w = anon.watch_tree("", WatchOptions::new()).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        other => panic!("a watch without credentials gave {other:?}"),
    }

    let wrong = open(&format!("zk://alice:wrong@{host}/{root}"))
        .await
        .unwrap();
    let e = wrong.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!e.to_string().contains("s3cret-pw"));
    let e = wrong.delete("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    assert_eq!(
        owner.get("k").await.unwrap().map(|p| p.value),
        Some("v".into())
    );
    owner.delete_tree("").await.unwrap();
    owner.close().await.unwrap();
}

/// Several servers: a dead one in the list does not stop the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_one_down() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_url();
    let host = url.trim_start_matches("zk://");
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let store = open(&format!(
        "zk://{dead},{host}/{}?connect_timeout=500ms",
        anykv_testserver::unique_name("multi")
    ))
    .await
    .unwrap();
    let zk = store.as_any().downcast_ref::<ZkStore>().unwrap();
    assert!(zk.syncs_reads(), "several servers: reads must sync");
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().map(|p| p.revision), Some(rev));
    assert_eq!(store.list("").await.unwrap().len(), 1);
    assert!(store.exists("k").await.unwrap());
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// `open_url` with two servers in the host list, a dead one (nothing
/// listens on its port) first and the live one second, and no timeouts
/// set: the store opens with both servers in its configuration, and a
/// write is read back exactly, through `get`, `list` and `list_with`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_with_a_dead_server_first() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_url();
    let live = url.trim_start_matches("zk://").to_owned();
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let root = anykv_testserver::unique_name("deadfirst");
    let store = ZkStore::open_url(&format!("zk://{dead},{live}/{root}"))
        .await
        .unwrap();
    assert_eq!(store.config().servers, vec![dead, live]);
    assert_eq!(store.config().root, root);
    assert!(store.syncs_reads(), "several servers: reads must sync");

    let rev = store
        .put("a/k", "value".into(), PutOptions::new())
        .await
        .unwrap();
    let pair = KvPair::new("a/k", "value", rev);
    assert_eq!(store.get("a/k").await.unwrap(), Some(pair.clone()));
    assert_eq!(store.list("a").await.unwrap(), vec![pair.clone()]);
    assert_eq!(
        store
            .list_with("", ListOptions::new().with_limit(1))
            .await
            .unwrap(),
        vec![pair]
    );
    assert!(store.delete("a/k").await.unwrap());
    assert_eq!(store.get("a/k").await.unwrap(), None);
    store.close().await.unwrap();
}

/// One standalone server (`srvr` says so): reads skip the sync. Through a
/// second store, a write completed by one store is seen by the other's
/// very next read, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_reads_without_sync_see_completed_writes() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = format!(
        "{}/{}",
        shared_url(),
        anykv_testserver::unique_name("standalone")
    );
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    for s in [&a, &b] {
        let zk = s.as_any().downcast_ref::<ZkStore>().unwrap();
        assert!(!zk.syncs_reads(), "the test server is standalone");
    }
    for i in 0..50u32 {
        let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let value = format!("v{i}");
        let rev = w
            .put("k", value.clone().into(), PutOptions::new())
            .await
            .unwrap();
        let got = r.get("k").await.unwrap().unwrap();
        assert_eq!((got.value.as_ref(), got.revision), (value.as_bytes(), rev));
    }
    a.delete_tree("").await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}
