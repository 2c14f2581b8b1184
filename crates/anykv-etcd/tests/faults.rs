//! The backend's own fault tests: server restarts and freezes, leases
//! across outages, TTL lease bookkeeping, long resumes and events that
//! share a revision. Each test starts a server of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_conformance::StoreFactory;
use anykv_core::{ErrorKind, PutOptions, WatchEvent, WatchOptions};
use anykv_testserver::etcd::EtcdServer;
use common::{events_until, next, open, own_factory, put_retrying};
use futures::StreamExt;

/// etcd is stopped and started while a watch is open: calls during the
/// outage fail with `Unavailable` or `Timeout` within the request timeout,
/// the same store works again after the restart, and the watch delivers
/// every write made after the restart (and before it) without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_store_survive_a_server_restart() {
    let server = Arc::new(Mutex::new(EtcdServer::start_new()));
    let factory = own_factory(&server, "?request_timeout=1s&connect_timeout=1s");
    let store = factory.open("w").await.unwrap();
    let writer = factory.open("w").await.unwrap();
    let mut w = store
        .watch_tree("", WatchOptions::new())
        .await
        .expect("watch");
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    let before = writer
        .put("k/0", "before".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.revision(), before);

    // A restart through the factory's hook while the watch is open:
    // writes after it arrive.
    factory.restart_server().await.unwrap();
    let mut after_hook = Vec::new();
    for i in 0..5 {
        after_hook.push(put_retrying(&*writer, &format!("h/{i}")).await);
    }
    let before = *after_hook.last().unwrap();
    let seen = events_until(&mut w, before).await;
    for rev in &after_hook {
        assert!(
            seen.iter().any(|e| e.revision() == *rev),
            "{rev} missing: {seen:?}"
        );
    }

    let stop = server.clone();
    tokio::task::spawn_blocking(move || stop.lock().unwrap().stop())
        .await
        .unwrap();
    for call in 0..3 {
        let started = Instant::now();
        let err = match call {
            0 => store.get("k/0").await.map(|_| ()).unwrap_err(),
            1 => store
                .put("k/x", "x".into(), PutOptions::new())
                .await
                .map(|_| ())
                .unwrap_err(),
            _ => store.list("").await.map(|_| ()).unwrap_err(),
        };
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "call {call} during the outage: {err}"
        );
        assert!(err.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "call {call} took {:?}",
            started.elapsed()
        );
    }
    let start = server.clone();
    tokio::task::spawn_blocking(move || start.lock().unwrap().start())
        .await
        .unwrap();

    // The same store works again without being reopened.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match writer.put("k/1", "after".into(), PutOptions::new()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    let mut expected = Vec::new();
    for i in 2..50 {
        expected.push(
            writer
                .put(&format!("k/{i}"), format!("v{i}").into(), PutOptions::new())
                .await
                .unwrap(),
        );
    }
    let got = store.get("k/1").await.expect("get after restart");
    assert_eq!(got.map(|p| p.value), Some("after".into()));

    // Every write after the restart arrives, in order, exactly once
    // (k/x and a retried k/1 may or may not have been applied).
    let last = *expected.last().unwrap();
    let seen = events_until(&mut w, last).await;
    let revs: Vec<u64> = seen
        .iter()
        .filter(|e| e.key().is_some_and(|k| k != "k/x" && k != "k/1"))
        .map(|e| e.revision())
        .collect();
    assert_eq!(revs, expected);
    assert!(seen.iter().any(|e| e.key() == Some("k/1")));
    store.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A lease survives a restart shorter than its TTL, a lock works after
/// it, and an outage longer than a lease's TTL fires its lost signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_a_short_restart_and_lock_works_after() {
    let mut server = EtcdServer::start_new();
    let url = format!("{}/fault2?request_timeout=1s", server.url());
    let store = open(&url).await;
    let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!lease.is_lost(), "a lease was lost across a short restart");
    let guard = store
        .lock("l", Default::default())
        .await
        .expect("lock after restart");
    assert!(guard.fencing_token() > 0);
    guard.release().await.unwrap();
    lease.revoke().await.unwrap();

    // An outage longer than a lease's TTL: its lost signal fires.
    let short = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    server.stop();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), short.lost())
        .await
        .expect("lost() did not fire while the server was down");
    assert!(started.elapsed() >= Duration::from_secs(1));
    server.start();
    let mut recovered = false;
    for _ in 0..50 {
        if store.get("k").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the store did not recover");
    store.close().await.unwrap();
}

fn lease_count(server: &EtcdServer) -> usize {
    server
        .lease_count()
        .unwrap_or_else(|e| panic!("cannot list leases: {e}"))
}

/// How many TTL marker keys (`\0anykv/ttl/...`) the server holds.
fn marker_count(server: &EtcdServer) -> usize {
    // key "\0anykv/ttl/", range_end "\0anykv/ttl0" (base64), count only.
    let body = server
        .gateway(
            "/v3/kv/range",
            r#"{"key":"AGFueWt2L3R0bC8=","range_end":"AGFueWt2L3R0bDA=","count_only":true}"#,
        )
        .unwrap_or_else(|e| panic!("cannot count markers: {e}"));
    // proto3 JSON leaves out a zero count.
    body.split("\"count\":")
        .nth(1)
        .map(|c| {
            c.trim_start_matches([' ', '"'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .map_or(0, |c| c.parse().unwrap_or(0))
}

/// A key rewritten a thousand times with a TTL leaves one live lease, not
/// a thousand; rewriting it without a TTL leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_rewrites_do_not_leak_leases() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/ttl", server.url())).await;
    for i in 0..1000 {
        store
            .put(
                "k",
                format!("{i}").into(),
                PutOptions::new().with_ttl(Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 1, "leases after 1000 TTL rewrites");
    store
        .put("k", "plain".into(), PutOptions::new())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 0, "leases after a plain rewrite");
    assert_eq!(
        store.get("k").await.unwrap().map(|p| p.value),
        Some("plain".into())
    );
    // Deleting a TTL key (alone, in a tree, or by compare-and-delete)
    // retires its lease (and its marker) too.
    let ttl = PutOptions::new().with_ttl(Duration::from_secs(60));
    store.put("k", "t".into(), ttl.clone()).await.unwrap();
    store.put("t/a", "t".into(), ttl.clone()).await.unwrap();
    store.put("t/b", "t".into(), ttl.clone()).await.unwrap();
    let rev = store.put("c", "t".into(), ttl).await.unwrap();
    assert_eq!(marker_count(&server), 4, "TTL markers of four TTL keys");
    assert!(store.delete("k").await.unwrap());
    assert_eq!(store.delete_tree("t").await.unwrap(), 2);
    store.atomic_delete("c", rev).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 0, "leases after deleting TTL keys");
    assert_eq!(
        marker_count(&server),
        0,
        "TTL markers after deleting TTL keys"
    );
    store.close().await.unwrap();
}

/// A server that stops answering (paused, so keep-alives hang instead of
/// failing) fires `lost()` of a lease and of a lock before the lease can
/// have expired on the server, not after the (much longer) request
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_lease_expires_when_keep_alives_hang() {
    let server = EtcdServer::start_new();
    let url = format!("{}/hang?request_timeout=30s", server.url());
    let store = open(&url).await;
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let guard = store
        .lock(
            "l",
            anykv_core::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    // Let a few keep-alives succeed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!lease.is_lost() && !guard.is_lost());
    server.pause();
    let paused = Instant::now();
    // Every successful keep-alive was sent before the pause, so the server
    // holds each lease at most until `paused + 2 s`; `lost()` must fire
    // by then (a little scheduling slack allowed).
    let both = async {
        lease.lost().await;
        guard.lost().await;
    };
    let fired = tokio::time::timeout(Duration::from_millis(2300), both).await;
    let elapsed = paused.elapsed();
    server.resume();
    fired.unwrap_or_else(|_| panic!("lost() had not fired {elapsed:?} after the pause"));
    assert!(
        elapsed >= Duration::from_millis(900),
        "lost() fired too early: {elapsed:?}"
    );
    drop(guard);
    drop(lease);
    store.close().await.unwrap();
}

/// A resumed watch replays more history than its buffer without lagging
/// (the replay is read before the buffer counts); once caught up, a
/// consumer that falls more than the buffer behind still lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_more_than_the_buffer() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/resume", server.url())).await;
    let r0 = store.put("k", "0".into(), PutOptions::new()).await.unwrap();
    let mut last = r0;
    for i in 1..=100 {
        last = store
            .put("k", format!("{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = store
        .watch("k", WatchOptions::from_revision(r0).with_buffer(8))
        .await
        .unwrap();
    // Let the whole replay arrive before reading any of it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = events_until(&mut w, last).await;
    let puts: Vec<u64> = seen
        .iter()
        .filter(|e| matches!(e, WatchEvent::Put(_)))
        .map(WatchEvent::revision)
        .collect();
    assert_eq!(puts.len(), 100, "replayed puts: {puts:?}");
    assert_eq!(puts.last(), Some(&last));
    // Caught up: a burst of more than the buffer, unread, lags.
    for i in 0..40 {
        store
            .put("k", format!("b{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut lagged = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        if let Err(e) = item {
            assert_eq!(e.kind(), ErrorKind::WatchLagged, "{e}");
            lagged = true;
            break;
        }
    }
    assert!(lagged, "a live burst beyond the buffer did not lag");
    store.close().await.unwrap();
}

/// Events that share one revision all arrive: a raw lease expiring
/// deletes all its keys at one revision, and a raw multi-key txn puts all
/// its keys at one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sharing_a_revision_all_arrive() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/same", server.url())).await;
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    // A multi-key txn from a raw client.
    server
        .txn_put(
            &[("same/t/a", "1"), ("same/t/b", "2"), ("same/t/c", "3")],
            0,
        )
        .unwrap();
    // Three keys on a 2 s lease nobody keeps alive.
    let lease = server.grant_lease(2).unwrap();
    let granted = Instant::now();
    server
        .txn_put(
            &[("same/e/a", "1"), ("same/e/b", "2"), ("same/e/c", "3")],
            lease,
        )
        .unwrap();
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    let deadline = granted + Duration::from_secs(2 + 5);
    while deletes.len() < 3 {
        let ev = match tokio::time::timeout_at(deadline.into(), w.next()).await {
            Ok(Some(Ok(ev))) => ev,
            other => panic!("puts {puts:?} deletes {deletes:?}, then {other:?}"),
        };
        match ev {
            WatchEvent::Put(kv) => puts.push((kv.key, kv.revision)),
            WatchEvent::Delete { key, revision } => deletes.push((key, revision)),
            WatchEvent::Synced { .. } => {}
        }
    }
    let keys = |v: &[(String, u64)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys(&puts),
        ["t/a", "t/b", "t/c", "e/a", "e/b", "e/c"],
        "every put of both txns"
    );
    assert_eq!(keys(&deletes), ["e/a", "e/b", "e/c"], "every expired key");
    assert!(puts[..3].iter().all(|p| p.1 == puts[0].1));
    assert!(puts[3..].iter().all(|p| p.1 == puts[3].1));
    assert!(deletes.iter().all(|d| d.1 == deletes[0].1));
    store.close().await.unwrap();
}
