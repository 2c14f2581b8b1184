//! The node layout, seen through a raw ZooKeeper client: values in `@v`
//! children, implicit parents as container nodes that the server reaps,
//! escaped segments, and compare-and-swap across a re-created value node.

use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, PutOptions, Store};
use anykv_zookeeper::{ZkConfig, ZkStore};
use zookeeper_client as zk;

async fn open(root: &str) -> (ZkStore, zk::Client) {
    let url = anykv_testserver::zookeeper::shared_url();
    let host = url.trim_start_matches("zk://").to_owned();
    let store = ZkStore::open(ZkConfig::new([host.clone()]).with_root(root))
        .await
        .unwrap();
    let raw = zk::Client::connect(&host).await.unwrap();
    (store, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_live_in_value_nodes_and_parents_are_reaped() {
    let root = anykv_testserver::unique_name("layout");
    let (store, raw) = open(&root).await;
    store
        .put("a/b/c", "deep".into(), PutOptions::new())
        .await
        .unwrap();
    store.put("e", "".into(), PutOptions::new()).await.unwrap();
    let (data, _) = raw.get_data(&format!("/{root}/a/b/c/@v")).await.unwrap();
    assert_eq!(data, b"deep");
    let (data, _) = raw.get_data(&format!("/{root}/e/@v")).await.unwrap();
    assert!(data.is_empty(), "the empty value is stored as is");
    assert!(
        store.get("e").await.unwrap().is_some(),
        "an empty value is a key"
    );
    assert_eq!(
        store.get("a").await.unwrap(),
        None,
        "an implicit parent is no key"
    );
    assert_eq!(store.get("a/b").await.unwrap(), None);
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, vec!["a/b/c".to_owned(), "e".to_owned()]);

    assert!(store.delete("a/b/c").await.unwrap());
    let start = Instant::now();
    while raw
        .check_stat(&format!("/{root}/a"))
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the empty parents were not reaped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_escaped() {
    let root = anykv_testserver::unique_name("escape");
    let (store, raw) = open(&root).await;
    for k in ["@v", "@locks/x", "🦀/zookeeper", "a/@@b"] {
        store.put(k, k.into(), PutOptions::new()).await.unwrap();
        assert_eq!(
            store.get(k).await.unwrap().map(|p| p.value),
            Some(k.into()),
            "{k}"
        );
    }
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    let mut want = vec!["@locks/x", "@v", "a/@@b", "🦀/zookeeper"];
    want.sort();
    assert_eq!(keys, want);
    assert!(raw
        .check_stat(&format!("/{root}/@@v/@v"))
        .await
        .unwrap()
        .is_some());
    // A lock is no key, whatever its name.
    let g = store.lock("@v", Default::default()).await.unwrap();
    assert_eq!(store.list("").await.unwrap().len(), 4);
    g.release().await.unwrap();
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_fails_after_the_value_node_was_recreated() {
    let root = anykv_testserver::unique_name("cas");
    let (store, _raw) = open(&root).await;
    let ttl = PutOptions::new().with_ttl(Duration::from_secs(30));
    let r1 = store.put("k", "1".into(), ttl.clone()).await.unwrap();
    let r2 = store.put("k", "2".into(), ttl).await.unwrap();
    assert!(r2 > r1);
    let e = store
        .atomic_put("k", "x".into(), Some(r1), PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyModified);
    let r3 = store
        .atomic_put("k", "3".into(), Some(r2), PutOptions::new())
        .await
        .unwrap();
    assert!(r3 > r2);
    // Now permanent: no TTL flag left on the key's node.
    let e = store.atomic_delete("k", r2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyModified);
    store.atomic_delete("k", r3).await.unwrap();
    store.close().await.unwrap();
}
