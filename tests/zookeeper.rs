//! The conformance suite against a real ZooKeeper 3.8 (at
//! `ANYKV_ZOOKEEPER_URL`, or started on a free loopback port with TTL nodes
//! enabled), plus fault and security tests:
//! `cargo test --test zookeeper --features zookeeper`.

use std::time::{Duration, Instant};

use anykv::zookeeper::ZkStore;
use anykv::{ErrorKind, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_conformance::{conformance_tests, UrlFactory};
use anykv_testserver::zookeeper::{shared_url, ZkServer};
use futures::StreamExt;

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn hook(name: &'static str, r: Result<(), String>) -> anykv::Result<()> {
    r.map_err(|e| anykv::Error::unsupported("zookeeper tests", name, e))
}

/// The shared server, with pause and restart hooks (the fault cases that
/// use them run alone).
fn factory() -> UrlFactory {
    UrlFactory::new(
        format!(
            "{}?request_timeout={}ms",
            shared_url(),
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        |url| async move { anykv::open(&url).await },
    )
    .with_pause(
        || async { hook("pause_server", anykv_testserver::zookeeper::pause_shared()) },
        || async {
            hook(
                "resume_server",
                anykv_testserver::zookeeper::resume_shared(),
            )
        },
    )
    .with_restart(|| async {
        let r = tokio::task::spawn_blocking(anykv_testserver::zookeeper::restart_shared)
            .await
            .unwrap_or_else(|e| Err(format!("the restart panicked: {e}")));
        hook("restart_server", r)
    })
    .with_request_timeout(SUITE_REQUEST_TIMEOUT)
}

// ZooKeeper keeps no history (watch_resume = false), so resuming a watch is
// refused with Unsupported; its watches carry no data, so
// watch_every_revision is false, which the watch cases allow for.
conformance_tests!(
    factory(),
    unsupported = [
        watch_resume_from_revision,
        watch_tree_resume_from_revision,
        watch_resume_compacted,
        load_watch_every_write_exactly,
        load_watch_resume_while_writing,
    ]
);

async fn next(w: &mut anykv::WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// The server restarts while a watch is open: calls during the outage fail
/// with `Unavailable` or `Timeout` within the configured timeout, and the
/// watch converges to every key's final state and says `Synced` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_watch_converges_and_resyncs() {
    let mut server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("restart")
    );
    let url = format!("{base}?request_timeout=1s&session_timeout=20s");
    let store = anykv::open(&url).await.unwrap();
    store
        .put("k/a", "1".into(), PutOptions::new())
        .await
        .unwrap();
    store
        .put("k/b", "1".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = store.watch_tree("k", WatchOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));

    server.stop();
    let started = Instant::now();
    let e = store
        .put("k/c", "x".into(), PutOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "a put during the outage: {e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let e = store.get("k/a").await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    server.start_again();
    // Another client changes everything while the watcher may still be
    // reconnecting.
    let other = loop {
        match anykv::open(&url).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut ok = false;
    for _ in 0..50 {
        if other.delete("k/a").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the server did not come back");
    let b = other
        .put("k/b", "2".into(), PutOptions::new())
        .await
        .unwrap();
    let d = other
        .put("k/d", "new".into(), PutOptions::new())
        .await
        .unwrap();

    let mut state = std::collections::BTreeMap::new();
    state.insert("k/a".to_string(), 0u64);
    state.insert("k/b".to_string(), 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut synced_again = false;
    loop {
        let want: std::collections::BTreeMap<String, u64> =
            [("k/b".to_string(), b), ("k/d".to_string(), d)]
                .into_iter()
                .collect();
        if state == want && synced_again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch did not converge: {state:?}, synced again: {synced_again}"
        );
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => {
                state.insert(kv.key, kv.revision);
            }
            Ok(Some(Ok(WatchEvent::Delete { key, .. }))) => {
                state.remove(&key);
            }
            Ok(Some(Ok(WatchEvent::Synced { .. }))) => synced_again = true,
            other => panic!("the watch ended or failed: {other:?}"),
        }
    }
    assert_eq!(store.get("k/b").await.unwrap().map(|p| p.revision), Some(b));
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Sessions that expire (the server is away for longer than the lease's
/// and the lock's session timeouts, then comes back): the lease's and the
/// lock's `lost()` fire, the lease's ephemeral key vanishes for everyone
/// else, and another client gets the lock with a greater fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_fires_lost_and_removes_keys() {
    let mut server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("expiry")
    );
    let url = format!("{base}?request_timeout=1s&session_timeout=30s");
    let store = anykv::open(&url).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    store
        .put("eph", "v".into(), PutOptions::new().with_lease(lease.id()))
        .await
        .unwrap();
    store
        .put("keep", "v".into(), PutOptions::new())
        .await
        .unwrap();
    let guard = store
        .lock(
            "l",
            anykv::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let token = guard.fencing_token();

    server.stop();
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the lease's lost() fires");
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("the lock's lost() fires");
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again();

    let other = loop {
        match anykv::open(&url).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let start = Instant::now();
    loop {
        match other.get("eph").await {
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "the ephemeral key stayed"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(
        other.get("keep").await.unwrap().is_some(),
        "a permanent key vanished"
    );
    let g2 = other
        .lock(
            "l",
            anykv::LockOptions::new().with_timeout(Duration::from_secs(15)),
        )
        .await
        .expect("the lock is free after the holder's session expired");
    assert!(g2.fencing_token() > token);
    drop(guard);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !g2.is_lost(),
        "releasing the lost guard touched the new holder"
    );
    g2.release().await.unwrap();
    drop(lease);
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Against a server without `extendedTypesEnabled`, a TTL write fails with
/// `Unsupported` naming the server settings, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_without_extended_types_is_unsupported() {
    let server = ZkServer::start_without_ttl();
    let store = anykv::open(&format!("{}/ttl", server.url())).await.unwrap();
    let e = store
        .put(
            "k",
            "v".into(),
            PutOptions::new().with_ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("extendedTypesEnabled"), "{e}");
    assert!(e.to_string().contains("checkIntervalMs"), "{e}");
    assert_eq!(store.get("k").await.unwrap(), None);
    store.close().await.unwrap();
}

/// With digest auth our nodes carry ACLs: a client without credentials, or
/// with a wrong password, gets `PermissionDenied`; the password never shows
/// in errors or Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_protects_nodes() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_url();
    let root = anykv_testserver::unique_name("secure");
    let host = url.trim_start_matches("zk://");
    let owner = anykv::open(&format!("zk://alice:s3cret-pw@{host}/{root}"))
        .await
        .unwrap();
    owner.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert!(!format!("{owner:?}").contains("s3cret-pw"));

    let anon = anykv::open(&format!("zk://{host}/{root}")).await.unwrap();
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

    let wrong = anykv::open(&format!("zk://alice:wrong@{host}/{root}"))
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
    let store = anykv::open(&format!(
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
    let a = anykv::open(&url).await.unwrap();
    let b = anykv::open(&url).await.unwrap();
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

#[test]
fn the_suite_has_at_least_45_cases() {
    assert!(anykv_conformance::all_cases().len() >= 45);
}

#[allow(dead_code)]
fn _store_is_object_safe(s: &dyn Store) -> &dyn Store {
    s
}

/// A fresh root on the shared server.
fn shared_root(name: &str) -> String {
    format!("{}/{}", shared_url(), anykv_testserver::unique_name(name))
}

/// Writers that put keys under `prefix` through their own stores (four
/// puts in flight per store) until told to stop; how many puts they made.
fn spawn_writers(
    stores: Vec<std::sync::Arc<dyn Store>>,
    prefix: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut tasks = Vec::new();
    for (w, s) in stores.into_iter().enumerate() {
        for lane in 0..4 {
            let stop = stop.clone();
            let prefix = prefix.to_owned();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("{prefix}/w{w}/k{}", lane + 4 * (n % 5));
                    s.put(&key, format!("{n}").into(), PutOptions::new())
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
    }
    tasks
}

/// Applies watch events to a map of key -> (value, revision), checking
/// that revisions strictly increase after `Synced`.
struct Follower {
    state: std::collections::BTreeMap<String, (anykv::Bytes, u64)>,
    synced: bool,
    last: u64,
    live: usize,
}

impl Follower {
    fn new() -> Self {
        Follower {
            state: Default::default(),
            synced: false,
            last: 0,
            live: 0,
        }
    }

    fn apply(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => {
                if self.synced {
                    assert!(
                        kv.revision > self.last,
                        "{} after {}",
                        kv.revision,
                        self.last
                    );
                    self.last = kv.revision;
                    self.live += 1;
                }
                self.state.insert(kv.key, (kv.value, kv.revision));
            }
            WatchEvent::Delete { key, revision } => {
                assert!(self.synced, "a delete before Synced");
                assert!(revision > self.last, "{revision} after {}", self.last);
                self.last = revision;
                self.live += 1;
                self.state.remove(&key);
            }
            WatchEvent::Synced { revision } => {
                assert!(
                    revision >= self.last,
                    "Synced {revision} after {}",
                    self.last
                );
                self.last = revision;
                self.synced = true;
            }
        }
    }

    /// Takes every event that comes within `quiet`.
    async fn take(&mut self, w: &mut anykv::WatchStream, quiet: Duration) {
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, w.next()).await {
            self.apply(ev.unwrap());
        }
    }

    fn as_list(&self) -> Vec<(String, anykv::Bytes, u64)> {
        self.state
            .iter()
            .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
            .collect()
    }
}

/// Eight stores write continuously under one prefix: an open tree watch
/// keeps delivering live events while they write, a watch opened during
/// the writes says `Synced` while they still write, and when they stop
/// both converge to exactly `list(prefix)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_keep_flowing_under_many_writers() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("flow");
    let store = anykv::open(&url).await.unwrap();
    let mut w1 = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f1 = Follower::new();
    f1.apply(next(&mut w1).await);
    assert!(f1.synced);
    let mut writers = Vec::new();
    for _ in 0..8 {
        writers.push(anykv::open(&url).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = spawn_writers(writers.clone(), "p", stop.clone());

    // Live events while the writers run.
    let start = Instant::now();
    while f1.live < 200 && start.elapsed() < Duration::from_secs(8) {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), w1.next()).await {
            f1.apply(ev.unwrap());
        }
    }
    assert!(
        f1.live >= 200,
        "only {} live events in {:?} of continuous writes",
        f1.live,
        start.elapsed()
    );

    // A watch opened during the writes says Synced while they go on.
    let mut w2 = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f2 = Follower::new();
    let opened = Instant::now();
    while !f2.synced {
        assert!(
            opened.elapsed() < Duration::from_secs(8),
            "no Synced within {:?} while the writers run",
            opened.elapsed()
        );
        let drain_w1 = async {
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), w1.next()).await {
                f1.apply(ev.unwrap());
            }
        };
        drain_w1.await;
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), w2.next()).await {
            f2.apply(ev.unwrap());
        }
    }
    assert!(
        !tasks.iter().any(|t| t.is_finished()),
        "the writers stopped before Synced"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut puts = 0;
    for t in tasks {
        puts += t.await.unwrap();
    }
    eprintln!("{puts} puts; {} live events on the first watch", f1.live);

    let want: Vec<(String, anykv::Bytes, u64)> = store
        .list("p")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value, p.revision))
        .collect();
    assert_eq!(want.len(), 8 * 20);
    for (f, w) in [(&mut f1, &mut w1), (&mut f2, &mut w2)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while f.as_list() != want && Instant::now() < deadline {
            f.take(w, Duration::from_millis(500)).await;
        }
        assert_eq!(f.as_list(), want, "the watch did not converge to list()");
    }
    for s in writers {
        s.close().await.unwrap();
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// With writers busy under the same prefix (even under the deleted key,
/// creating its children), each `Delete` a watch delivers carries the
/// revision of the delete itself: above the deleted put's, below the
/// revision of a put that started after the delete returned, and it
/// arrives before that put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_revisions_follow_the_store_order() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("delorder");
    let store = anykv::open(&url).await.unwrap();
    let mut w = store.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut f = Follower::new();
    f.apply(next(&mut w).await);
    let mut seen: Vec<WatchEvent> = Vec::new();
    let busy = vec![
        anykv::open(&url).await.unwrap(),
        anykv::open(&url).await.unwrap(),
    ];
    for i in 0..20 {
        let key = format!("p/d/k{i}");
        let put = store
            .put(&key, "v".into(), PutOptions::new())
            .await
            .unwrap();
        // Writers create children of the key while it is deleted.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = busy
            .iter()
            .enumerate()
            .map(|(b, s)| {
                let (s, stop, key) = (s.clone(), stop.clone(), key.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let k = format!("{key}/c{b}-{n}");
                        s.put(&k, "c".into(), PutOptions::new()).await.unwrap();
                        s.delete(&k).await.unwrap();
                        n += 1;
                    }
                })
            })
            .collect();
        // The watch has seen the key, so its delete must be delivered.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen
            .iter()
            .any(|e| matches!(e, WatchEvent::Put(kv) if kv.key == key))
        {
            assert!(Instant::now() < deadline, "the watch never delivered {key}");
            let ev = next(&mut w).await;
            f.apply(ev.clone());
            seen.push(ev);
        }
        assert!(store.delete(&key).await.unwrap());
        let after_key = format!("p/d/after{i}");
        let after = store
            .put(&after_key, "a".into(), PutOptions::new())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen
            .iter()
            .any(|e| matches!(e, WatchEvent::Put(kv) if kv.key == after_key))
        {
            assert!(
                Instant::now() < deadline,
                "the watch never delivered {after_key}"
            );
            let ev = next(&mut w).await;
            f.apply(ev.clone());
            seen.push(ev);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        let del = seen
            .iter()
            .position(|e| matches!(e, WatchEvent::Delete { key: k, .. } if *k == key))
            .unwrap_or_else(|| panic!("no delete of {key}"));
        let aft = seen
            .iter()
            .position(|e| matches!(e, WatchEvent::Put(kv) if kv.key == after_key))
            .unwrap();
        let WatchEvent::Delete { revision, .. } = &seen[del] else {
            unreachable!()
        };
        assert!(
            *revision > put && *revision < after,
            "delete of {key} at {revision}: put {put}, the next put {after}"
        );
        assert!(del < aft, "the delete of {key} came after the next put");
    }
    for s in busy {
        s.close().await.unwrap();
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Locks nest with roots as keys do: lock `L` of root `r/sub` is lock
/// `sub/L` of root `r`; neither shows through `list("")` nor touches key
/// `sub/L`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_nest_with_roots() {
    let _server = anykv_conformance::shared_server_guard().await;
    let base = shared_root("locknest");
    let outer = anykv::open(&base).await.unwrap();
    let inner = anykv::open(&format!("{base}/sub")).await.unwrap();
    let opts = anykv::LockOptions::new().with_ttl(Duration::from_secs(2));
    let g = inner.lock("L", opts.clone()).await.unwrap();
    assert!(
        outer
            .try_lock("sub/L", opts.clone())
            .await
            .unwrap()
            .is_none(),
        "root r key sub/L is the same lock as root r/sub key L"
    );
    assert!(outer.try_lock("L", opts.clone()).await.unwrap().is_some());
    assert_eq!(outer.list("").await.unwrap(), vec![]);
    assert_eq!(outer.get("sub/L").await.unwrap(), None);
    g.release().await.unwrap();
    let g2 = outer
        .try_lock("sub/L", opts.clone())
        .await
        .unwrap()
        .unwrap();
    assert!(inner.try_lock("L", opts.clone()).await.unwrap().is_none());
    outer
        .put("sub/L", "k".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        inner
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect::<Vec<_>>(),
        vec!["L".to_string()]
    );
    g2.release().await.unwrap();
    outer.delete_tree("").await.unwrap();
    outer.close().await.unwrap();
    inner.close().await.unwrap();
}

/// Whether `e` is what a call that could not reach the server must give.
fn retryable(e: &anykv::Error) -> bool {
    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) && e.is_retryable()
}

/// The server is frozen (SIGSTOP): every call fails within the request
/// timeout (plus slack) with `Timeout` or `Unavailable`, a waiting lock
/// honours its timeout, an open watch does not end with a generic error,
/// a lock holder's `lost()` fires before anyone else can take the lock,
/// and the same store works again once the server resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_calls_fail_retryable_and_recover() {
    let server = ZkServer::start();
    let base = format!(
        "{}/{}",
        server.url(),
        anykv_testserver::unique_name("pause")
    );
    let url = format!("{base}?request_timeout=1s&connect_timeout=1s&session_timeout=30s");
    let store = anykv::open(&url).await.unwrap();
    let other = anykv::open(&url).await.unwrap();
    store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    let mut f = Follower::new();
    while !f.synced {
        f.apply(next(&mut w).await);
    }
    let held = other
        .lock(
            "held",
            anykv::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    // A waiter without a timeout of its own.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let r = store.lock("held", anykv::LockOptions::new()).await;
            (r.map(|_| ()), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.pause();
    let paused = Instant::now();
    let limit = Duration::from_secs(1) + Duration::from_secs(3);
    macro_rules! fails_in_time {
        ($what:expr, $call:expr) => {{
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), $call)
                .await
                .unwrap_or_else(|_| panic!("{} hung", $what));
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{} succeeded while paused", $what));
            assert!(retryable(&e), "{}: {e} ({:?})", $what, e.kind());
            assert!(
                started.elapsed() < limit,
                "{} took {:?}",
                $what,
                started.elapsed()
            );
        }};
    }
    fails_in_time!("put", store.put("k", "x".into(), PutOptions::new()));
    fails_in_time!("get", store.get("k"));
    fails_in_time!("list", store.list(""));
    fails_in_time!("exists", store.exists("k"));
    fails_in_time!("delete", store.delete("k"));
    fails_in_time!("grant_lease", store.grant_lease(Duration::from_secs(2)));
    fails_in_time!(
        "lock with a timeout",
        store.lock(
            "held",
            anykv::LockOptions::new().with_timeout(Duration::from_secs(1))
        )
    );
    fails_in_time!(
        "try_lock",
        store.try_lock("free", anykv::LockOptions::new())
    );
    let (r, failed_at) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiting lock hung")
        .unwrap();
    let e = r.unwrap_err();
    assert!(retryable(&e), "the waiting lock: {e}");
    assert!(
        failed_at.duration_since(paused) < limit,
        "the waiting lock failed {:?} after the pause",
        failed_at.duration_since(paused)
    );
    // The holder cannot know it still holds the lock.
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("the holder's lost() fires while the server is away");
    // Stay away past the lock's session timeout.
    let away = Duration::from_secs(4).saturating_sub(paused.elapsed());
    tokio::time::sleep(away).await;
    server.resume();

    // The same stores recover.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rev = loop {
        match store.put("k", "back".into(), PutOptions::new()).await {
            Ok(rev) => break rev,
            Err(e) => {
                assert!(retryable(&e), "after resume: {e}");
                assert!(Instant::now() < deadline, "the store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(store.get("k").await.unwrap().map(|p| p.revision), Some(rev));
    // The watch saw it too (after a Synced if it re-read), never a
    // generic error.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the watch missed the put after resume"
        );
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) if kv.revision == rev => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                assert!(retryable(&e), "the watch ended with {e}");
                break;
            }
            other => panic!("the watch: {other:?}"),
        }
    }
    // Whoever takes the lock now, the old holder knew it was lost first.
    let g = store
        .lock(
            "held",
            anykv::LockOptions::new().with_timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert!(held.is_lost());
    g.release().await.unwrap();
    drop(held);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// Connecting: a refused port fails promptly with `Unavailable`; a server
/// that does not answer fails with `Timeout` naming the real timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_prompt_and_honest() {
    let port = anykv_testserver::free_port();
    let started = Instant::now();
    let e = anykv::open(&format!("zk://127.0.0.1:{port}/x?connect_timeout=5s"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let server = ZkServer::start();
    server.pause();
    let started = Instant::now();
    let e = anykv::open(&format!("{}/x?connect_timeout=1500ms", server.url()))
        .await
        .unwrap_err();
    server.resume();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("1.5s"), "{e}");
    assert!(!e.to_string().contains("0ns"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// One store holding 100 leases and 50 locks keeps a handful of
/// connections (the shared server allows ZooKeeper's stock 60 per
/// address), and every lease and lock still works: keys vanish with
/// their lease only, locks exclude other stores, and releasing
/// everything leaves the store's own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_and_locks_keep_connections_bounded() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = shared_root("bounded");
    let store = anykv::open(&url).await.unwrap();
    let other = anykv::open(&url).await.unwrap();
    assert_eq!(store.stats().connections, 1);
    let mut leases = Vec::new();
    for i in 0..100u64 {
        let ttl = Duration::from_secs(2 + i % 2);
        let lease = store.grant_lease(ttl).await.unwrap();
        store
            .put(
                &format!("l/{i}"),
                "v".into(),
                PutOptions::new().with_lease(lease.id()),
            )
            .await
            .unwrap();
        leases.push(lease);
    }
    let opts = anykv::LockOptions::new().with_ttl(Duration::from_secs(3));
    let mut guards = Vec::new();
    for i in 0..50 {
        guards.push(store.lock(&format!("lock{i}"), opts.clone()).await.unwrap());
    }
    let stats = store.stats();
    assert_eq!((stats.leases, stats.locks), (100, 50));
    assert!(stats.connections <= 4, "{stats:?}");
    assert_eq!(other.list("l").await.unwrap().len(), 100);
    for i in [0, 17, 49] {
        assert!(other
            .try_lock(&format!("lock{i}"), opts.clone())
            .await
            .unwrap()
            .is_none());
    }
    // Leases are independent: revoking one removes only its key.
    let revoked = leases.remove(7);
    revoked.revoke().await.unwrap();
    assert_eq!(other.get("l/7").await.unwrap(), None);
    assert_eq!(other.list("l").await.unwrap().len(), 99);
    assert!(leases.iter().all(|l| !l.is_lost()));
    // A key rewritten without its lease is permanent.
    other
        .put("l/8", "mine".into(), PutOptions::new())
        .await
        .unwrap();
    leases.remove(7).revoke().await.unwrap();
    assert_eq!(
        other.get("l/8").await.unwrap().map(|p| p.value),
        Some("mine".into())
    );
    let g = guards.remove(17);
    g.release().await.unwrap();
    other
        .try_lock("lock17", opts.clone())
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    drop(guards);
    drop(leases);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = store.stats();
        if (s.leases, s.locks, s.connections) == (0, 0, 1)
            && other.list("l").await.unwrap().len() == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "still held: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
    other.close().await.unwrap();
}

/// On a server with the stock `tickTime` (2000 ms) ZooKeeper raises any
/// session timeout to at least 4 s: a lease asked for 1 s reports the
/// 4 s it really has, leases whose TTLs the server raises to the same
/// value share one session, and their keys still vanish on revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tick_lease_ttl_is_reported_honestly() {
    let server = ZkServer::start_stock();
    let store = anykv::open(&format!("{}/stock", server.url()))
        .await
        .unwrap();
    let l1 = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    let l3 = store.grant_lease(Duration::from_secs(3)).await.unwrap();
    assert_eq!(l1.ttl(), Duration::from_secs(4));
    assert_eq!(l3.ttl(), Duration::from_secs(4));
    assert_eq!(store.stats().connections, 2, "one session for both leases");
    store
        .put("k", "v".into(), PutOptions::new().with_lease(l1.id()))
        .await
        .unwrap();
    store
        .put("k3", "v".into(), PutOptions::new().with_lease(l3.id()))
        .await
        .unwrap();
    l1.revoke().await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(store.get("k3").await.unwrap().is_some());
    l3.revoke().await.unwrap();
    assert_eq!(store.get("k3").await.unwrap(), None);
    store.close().await.unwrap();
}
