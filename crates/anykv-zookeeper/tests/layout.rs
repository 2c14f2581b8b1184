//! The node layout, seen through a raw ZooKeeper client: values in `@v`
//! children, implicit parents as container nodes that the server reaps,
//! escaped segments, compare-and-swap across a re-created value node, and
//! pages of a listing walked in key order.

use std::time::{Duration, Instant};

use anykv_core::{Bytes, ErrorKind, KvPair, ListOptions, PutOptions, Store};
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

/// Keys whose byte order is not the order of a walk over sorted child
/// names (`a!` and `a-b/c` sort between `a` and `a/…`), keys with keys
/// under them, escaped segments, and a lock among the nodes.
const PAGED_KEYS: &[&str] = &[
    "a",
    "a!",
    "a!/x",
    "a-b/c",
    "a/b",
    "a/b/c",
    "a/b/c/d",
    "a/b/c!",
    "a/b/c-",
    "a/b0",
    "a/@v",
    "a/zookeeper",
    "a0",
    "b/🦀/x",
    "b/🦀!",
    "b/ z",
    "b/~",
    "@x",
    "z",
];

/// Every page of `prefix` under `options` equals what the whole listing
/// gives after the options are applied, and paging from the last key of
/// each full page covers the listing exactly.
async fn check_pages(store: &ZkStore, prefix: &str, starts: &[Option<String>]) {
    let all = store.list(prefix).await.unwrap();
    for keys_only in [false, true] {
        for limit in [None, Some(1), Some(2), Some(3), Some(5), Some(100)] {
            for start in starts {
                let mut options = ListOptions::new();
                options.limit = limit;
                options.start_after = start.clone();
                options.keys_only = keys_only;
                let want = options.apply(all.clone()).unwrap();
                let page = store.list_with(prefix, options.clone()).await.unwrap();
                assert_eq!(page, want, "prefix {prefix:?}, {options:?}");
            }
            let Some(limit) = limit else {
                continue;
            };
            let mut options = ListOptions::new().with_limit(limit);
            options.keys_only = keys_only;
            let mut seen = Vec::new();
            loop {
                let page = store.list_with(prefix, options.clone()).await.unwrap();
                assert!(page.len() <= limit);
                let full = page.len() == limit;
                let last = page.last().map(|p| p.key.clone());
                seen.extend(page);
                match last {
                    Some(k) if full => options = options.start_after(k),
                    _ => break,
                }
            }
            let want: Vec<KvPair> = all
                .iter()
                .map(|p| {
                    let value = if keys_only {
                        Bytes::new()
                    } else {
                        p.value.clone()
                    };
                    KvPair::new(p.key.clone(), value, p.revision)
                })
                .collect();
            assert_eq!(seen, want, "prefix {prefix:?}, pages of {limit}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_the_tree_in_key_order() {
    let root = anykv_testserver::unique_name("pages");
    let (store, _raw) = open(&root).await;
    let mut revisions = Vec::new();
    for k in PAGED_KEYS {
        let rev = store
            .put(k, format!("v:{k}").into(), PutOptions::new())
            .await
            .unwrap();
        revisions.push((k.to_string(), rev));
    }
    // One key rewritten in place, one deleted (its node stays while a
    // child is there), one under a lock only.
    let rev = store
        .put("a/b/c", "again".into(), PutOptions::new())
        .await
        .unwrap();
    assert!(store.delete("a!").await.unwrap());
    let lock = store.lock("a/b/c/d", Default::default()).await.unwrap();
    let guard = store.lock("q/r", Default::default()).await.unwrap();

    let mut want: Vec<KvPair> = revisions
        .iter()
        .filter(|(k, _)| k != "a!")
        .map(|(k, r)| {
            if k == "a/b/c" {
                KvPair::new(k.clone(), "again", rev)
            } else {
                KvPair::new(k.clone(), format!("v:{k}"), *r)
            }
        })
        .collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    let all = store.list("").await.unwrap();
    assert_eq!(all, want);
    assert_eq!(
        all.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        [
            "@x",
            "a",
            "a!/x",
            "a-b/c",
            "a/@v",
            "a/b",
            "a/b/c",
            "a/b/c!",
            "a/b/c-",
            "a/b/c/d",
            "a/b0",
            "a/zookeeper",
            "a0",
            "b/ z",
            "b/~",
            "b/🦀!",
            "b/🦀/x",
            "z",
        ]
    );

    // Every key, and keys that are none: inside a subtree ("a/b/bb",
    // "a/b/c/cz", "b/🦀/0"), past a leaf ("a/b/c/d/e"), between a key and
    // its subtree ("a.", "a/b/c."), the deleted key, before and after
    // everything, a lock's name.
    let mut starts: Vec<Option<String>> = vec![None];
    starts.extend(PAGED_KEYS.iter().map(|k| Some(k.to_string())));
    for k in [
        "a/b/bb",
        "a/b/c/cz",
        "b/🦀/0",
        "a/b/c/d/e",
        "a.",
        "a/b/c.",
        "0",
        "A",
        "zz",
        "q/r",
        "q",
    ] {
        starts.push(Some(k.to_owned()));
    }
    for prefix in ["", "a", "a/b", "b", "a/b/c/d", "q", "none"] {
        check_pages(&store, prefix, &starts).await;
    }

    // Exact pages, spelled out: a start inside a subtree, one that is no
    // key, and keys only with the revisions the listing has.
    let keys = |pairs: Vec<KvPair>| pairs.into_iter().map(|p| p.key).collect::<Vec<_>>();
    let page = store
        .list_with("", ListOptions::new().with_limit(3).start_after("a/b/bb"))
        .await
        .unwrap();
    assert_eq!(keys(page), ["a/b/c", "a/b/c!", "a/b/c-"]);
    let page = store
        .list_with(
            "a",
            ListOptions::new().with_limit(2).start_after("a/b/c/cz"),
        )
        .await
        .unwrap();
    assert_eq!(keys(page), ["a/b/c/d", "a/b0"]);
    let page = store
        .list_with("", ListOptions::new().with_limit(2).start_after("a."))
        .await
        .unwrap();
    assert_eq!(keys(page), ["a/@v", "a/b"]);
    let page = store
        .list_with(
            "a/b",
            ListOptions::new()
                .with_limit(2)
                .start_after("a/b")
                .keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(
        page,
        vec![
            KvPair::new("a/b/c", Bytes::new(), rev),
            KvPair::new("a/b/c!", Bytes::new(), want[7].revision),
        ]
    );
    assert_eq!(want[7].key, "a/b/c!");

    lock.release().await.unwrap();
    guard.release().await.unwrap();
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}
