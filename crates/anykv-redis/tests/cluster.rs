//! A Redis Cluster of three shards with a replica each
//! (`redis+cluster://`): the conformance suite, and the failover of the
//! shard that holds a namespace under load: `cargo test -p anykv-redis
//! --test cluster`. The suite shares one cluster; each failover test
//! starts its own.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anykv_conformance::{conformance_tests, UrlFactory};
use anykv_core::{
    Compare, ErrorKind, PutOptions, Txn, TxnOp, TxnOpResult, WatchEvent, WatchOptions,
};
use anykv_testserver::redis_cluster::{RedisCluster, SLOTS};
use anykv_testserver::resp::Reply;
use common::{
    cas_workload, check_no_acked_write_lost, check_no_revision_reused, check_watch, describe, open,
    unavailability,
};
use futures::StreamExt;

/// The request timeout of the suite's stores.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The suite's cluster, started on first use.
fn shared() -> &'static Mutex<RedisCluster> {
    static SHARED: OnceLock<Mutex<RedisCluster>> = OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(RedisCluster::start()))
}

/// `redis+cluster://n1,n2,...` of a cluster.
fn base_url(c: &RedisCluster) -> String {
    format!("redis+cluster://{}", c.addrs().join(","))
}

/// The suite's factory: clients on `{cluster}/{root}` and the compact
/// hook. A freeze or a restart of a shard's primary is a failover here,
/// which the failover tests below cover, so the suite's pause and restart
/// hooks are not offered.
fn factory() -> UrlFactory {
    let base = {
        let c = shared().lock().unwrap_or_else(|p| p.into_inner());
        base_url(&c)
    };
    UrlFactory::new(
        format!(
            "{base}/conformance?request_timeout={}ms",
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        |url| async move { open(&url).await },
    )
    .with_compact(|store, revision| async move { anykv_redis::compact(&*store, revision).await })
    .with_request_timeout(SUITE_REQUEST_TIMEOUT)
}

conformance_tests!(
    factory(),
    unsupported = [
        fault_pause_calls_fail_typed,
        fault_pause_store_recovers,
        fault_pause_watch_continues_or_ends,
        fault_pause_lock_lost_before_another_holds,
        fault_restart_store_and_watch_recover,
    ]
);

/// The node that serves namespace `ns` now: the primary of the shard of
/// its hash slot.
fn primary_of_namespace(c: &RedisCluster, ns: &str) -> usize {
    let slot = match c.command(0, &["CLUSTER", "KEYSLOT", &format!("{{{ns}}}:rev")]) {
        Ok(Reply::Integer(n)) => n as u16,
        other => panic!("CLUSTER KEYSLOT: {other:?}"),
    };
    let shard = SLOTS
        .iter()
        .position(|(a, b)| (*a..=*b).contains(&slot))
        .expect("a shard");
    c.primary_of(shard).expect("the shard's primary")
}

async fn start() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("start")
}

/// The failover of the namespace's shard under 8 tasks of compare-and-swap
/// increments and a tree watch, with and without waiting for a replica.
async fn failover_under_load(wait: bool) {
    let c = Arc::new(Mutex::new(start().await));
    let ns = anykv_testserver::unique_name("ns");
    let url = format!(
        "{}/app?namespace={ns}&request_timeout=2s{}",
        base_url(&c.lock().unwrap()),
        if wait {
            "&wait_replicas=1&wait_timeout=300ms"
        } else {
            ""
        }
    );
    let store = open(&url).await.unwrap();
    let killed = Arc::new(Mutex::new(None));
    let stop = {
        let (c, killed, ns) = (c.clone(), killed.clone(), ns.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let at = tokio::task::spawn_blocking(move || {
                let mut d = c.lock().unwrap();
                let old = primary_of_namespace(&d, &ns);
                let at = Instant::now();
                d.kill(old);
                d.wait_for_failover(old, Duration::from_secs(30))
                    .expect("failover");
                if wait {
                    // The promoted replica needs a replica of its own.
                    d.restart(old);
                    d.wait_for_replica(old, Duration::from_secs(60))
                        .expect("the old primary comes back as a replica");
                }
                at
            })
            .await
            .expect("failover task");
            *killed.lock().unwrap() = Some(at);
        }
    };
    let o = cas_workload(store.clone(), 8, stop, Duration::from_secs(2)).await;
    let killed = killed.lock().unwrap().expect("killed");
    let window = unavailability(&o, killed);
    println!(
        "cluster failover {}: writes succeeded again {window:?} after the kill; {}",
        if wait {
            "with wait_replicas=1 (old primary restarted at once)"
        } else {
            "without wait"
        },
        describe(&o)
    );
    assert!(window.is_some(), "no write succeeded after the failover");
    check_no_revision_reused(&o);
    if wait {
        check_no_acked_write_lost(&o, &*store).await;
    }
    check_watch(&o);
    let r = store
        .put("after", "x".into(), PutOptions::new())
        .await
        .unwrap();
    assert!(r > o.acked.last().unwrap().revision);
    store.close().await.unwrap();
}

/// Without waiting for replicas: no revision is handed out twice, and the
/// watch delivers every acknowledged change or ends with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_without_wait_reuses_no_revision() {
    failover_under_load(false).await;
}

/// Waiting for one replica: no acknowledged write is lost either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_with_wait_loses_no_acknowledged_write() {
    failover_under_load(true).await;
}

/// Every key of a namespace is in one hash slot: a namespace's scripts
/// run on one shard, whatever the keys; another namespace may live on
/// another shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_lives_in_one_slot() {
    let base = {
        let c = shared().lock().unwrap_or_else(|p| p.into_inner());
        base_url(&c)
    };
    let url = format!(
        "{base}/slots?namespace={}",
        anykv_testserver::unique_name("slot")
    );
    let store = open(&url).await.unwrap();
    for k in ["a", "b/c", "zzz/y/x", "{other}"] {
        let r = store.put(k, "v".into(), PutOptions::new()).await.unwrap();
        assert_eq!(store.get(k).await.unwrap().unwrap().revision, r);
    }
    assert_eq!(store.list("").await.unwrap().len(), 4);
    assert_eq!(store.delete_tree("").await.unwrap(), 4);
    let e = store.get("x\u{1}").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    store.close().await.unwrap();
}

/// A transaction over keys whose names alone would hash to every shard
/// runs as one script on the namespace's shard: every key it touches is
/// in the namespace's slot, on that shard's primary, and a tree watch
/// sees all of its changes at its one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_keys_share_the_namespace_slot() {
    let ns = anykv_testserver::unique_name("txn-slot");
    let base = {
        let c = shared().lock().unwrap_or_else(|p| p.into_inner());
        base_url(&c)
    };
    let store = open(&format!("{base}/txn?namespace={ns}")).await.unwrap();
    let keys: Vec<String> = (0..40)
        .map(|i| format!("k{i}"))
        .chain(["{other}".to_owned(), "a/{b}/c".to_owned()])
        .collect();
    let r0 = store
        .put("k0", "old".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Synced { .. }))) => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected the watch's snapshot, got {other:?}"),
        }
    }
    let txn = keys
        .iter()
        .fold(
            Txn::new()
                .when(Compare::revision("k0", r0))
                .when(Compare::absent("{other}")),
            |t, k| t.then(TxnOp::put(k.as_str(), "new")),
        )
        .or_else(TxnOp::get("k0"));
    let resp = store.txn(txn.clone()).await.unwrap();
    assert!(resp.succeeded);
    let rev = resp.revision.unwrap();
    assert_eq!(rev, r0 + 1);
    assert!(resp
        .results
        .iter()
        .all(|r| *r == TxnOpResult::Put { revision: rev }));
    for k in &keys {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(p)))) => {
                assert_eq!((&p.key, p.revision), (k, rev));
            }
            other => panic!("expected the put of {k}, got {other:?}"),
        }
    }
    // The same again: the compare on k0 fails, the failure branch reads.
    let again = store.txn(txn).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.failed_compare, Some(0));
    assert_eq!(again.revision, None);
    assert!(matches!(&again.results[..], [TxnOpResult::Get(Some(p))] if p.revision == rev));
    // Where the keys live.
    {
        let c = shared().lock().unwrap_or_else(|p| p.into_inner());
        let primary = primary_of_namespace(&c, &ns);
        let slot = |name: &str| match c.command(0, &["CLUSTER", "KEYSLOT", name]) {
            Ok(Reply::Integer(n)) => n,
            other => panic!("CLUSTER KEYSLOT: {other:?}"),
        };
        let ns_slot = slot(&format!("{{{ns}}}:rev"));
        for k in &keys {
            let name = format!("{{{ns}}}:k:txn/{k}");
            assert_eq!(slot(&name), ns_slot, "{name}");
            assert_eq!(
                c.command(primary, &["EXISTS", &name]),
                Ok(Reply::Integer(1)),
                "{name}"
            );
        }
    }
    assert_eq!(store.delete_tree("").await.unwrap(), keys.len() as u64);
    store.close().await.unwrap();
}

/// `status` on a Cluster: the node that serves the namespace's slot, the
/// slot, and the namespace's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_namespace_node() {
    let ns = anykv_testserver::unique_name("ns");
    let (url, node, slot) = {
        let c = shared().lock().unwrap_or_else(|p| p.into_inner());
        let slot = match c.command(0, &["CLUSTER", "KEYSLOT", &format!("{{{ns}}}:rev")]) {
            Ok(Reply::Integer(n)) => n,
            other => panic!("CLUSTER KEYSLOT: {other:?}"),
        };
        let node = c.addrs()[primary_of_namespace(&c, &ns)].clone();
        (
            format!("{}/app?namespace={ns}&request_timeout=2s", base_url(&c)),
            node,
            slot,
        )
    };
    let store = open(&url).await.unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let status = store.status().await.unwrap();
    assert_eq!(status.revision, Some(rev));
    assert_eq!(status.servers.len(), 1, "{status:?}");
    assert_eq!(status.servers[0].address, node);
    assert_eq!(status.servers[0].role.as_deref(), Some("primary"));
    assert_eq!(status.servers[0].error, None);
    let detail = |name: &str| {
        status
            .details
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("mode").as_deref(), Some("cluster"));
    assert_eq!(detail("redis_mode").as_deref(), Some("cluster"));
    assert_eq!(detail("slot"), Some(slot.to_string()));
    assert_eq!(detail("prefix").as_deref(), Some("app"));
    store.close().await.unwrap();
}
