//! A primary, a replica and three Sentinels (`redis+sentinel://`): the
//! conformance suite, and failovers under load: `cargo test -p
//! anykv-redis --test sentinel`. The suite shares one deployment; each
//! failover test starts its own.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anykv_conformance::{conformance_tests, UrlFactory};
use anykv_core::{Compare, ErrorKind, LockOptions, PutOptions, Txn, TxnOp};
use anykv_testserver::redis_sentinel::RedisSentinel;
use common::{
    cas_workload, check_no_acked_write_lost, check_no_revision_reused, check_watch, describe, open,
    unavailability,
};

/// The request timeout of the suite's stores.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The suite's deployment, started on first use.
fn shared() -> &'static Mutex<RedisSentinel> {
    static SHARED: OnceLock<Mutex<RedisSentinel>> = OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(RedisSentinel::start()))
}

/// `redis+sentinel://s1,s2,s3/<master>` of a deployment.
fn base_url(s: &RedisSentinel) -> String {
    format!(
        "redis+sentinel://{}/{}",
        s.sentinel_addrs().join(","),
        s.master_name()
    )
}

/// The suite's factory: clients on `{deployment}/0/{root}` and the compact
/// hook. A freeze or a restart of the primary is a failover here, which
/// the failover tests below cover with the guarantees of this deployment,
/// so the suite's pause and restart hooks are not offered.
fn factory() -> UrlFactory {
    let base = {
        let s = shared().lock().unwrap_or_else(|p| p.into_inner());
        base_url(&s)
    };
    UrlFactory::new(
        format!(
            "{base}/0?request_timeout={}ms",
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

/// Starts a deployment of its own (blocking work off the runtime).
async fn start() -> RedisSentinel {
    tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("start")
}

/// Kills the primary and waits for the Sentinels to promote the replica;
/// the old primary's index, the new one's, and when the kill happened.
async fn fail_over(s: &Arc<Mutex<RedisSentinel>>) -> (usize, usize, Instant) {
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = s.lock().unwrap();
        let old = d.primary().expect("a primary");
        let killed = Instant::now();
        d.kill(old);
        let new = d
            .wait_for_failover(old, Duration::from_secs(30))
            .expect("failover");
        (old, new, killed)
    })
    .await
    .expect("failover task")
}

/// Restarts data server `i` and waits until it replicates the new
/// primary.
async fn bring_back(s: &Arc<Mutex<RedisSentinel>>, i: usize) {
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = s.lock().unwrap();
        d.restart(i);
        d.wait_for_replica(i, Duration::from_secs(60))
            .expect("the old primary comes back as a replica");
    })
    .await
    .expect("restart task")
}

/// Like [`fail_over`], but the replica lags first: it is frozen and cut
/// off while the primary goes on acknowledging writes for `lag`, so the
/// promoted replica lacks them.
async fn fail_over_lagging(s: &Arc<Mutex<RedisSentinel>>, lag: Duration) -> (usize, Instant) {
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let mut d = s.lock().unwrap();
        let old = d.primary().expect("a primary");
        let replica = 1 - old;
        d.lag_replica(replica).expect("lag the replica");
        std::thread::sleep(lag);
        let killed = Instant::now();
        d.kill(old);
        d.resume(replica).expect("resume the replica");
        d.wait_for_failover(old, Duration::from_secs(30))
            .expect("failover");
        (old, killed)
    })
    .await
    .expect("failover task")
}

/// The primary is killed under 8 tasks of compare-and-swap increments and
/// a tree watch, with writes waiting for one replica: no acknowledged
/// write is lost (the replica lagged before the kill, and the writes it
/// did not acknowledge failed with `Unavailable`), no revision is handed
/// out twice, and the watch delivers every change or ends with an error.
/// The promoted replica has no replica of its own until the old primary
/// is back (restarted at once here), so writes succeed again only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_with_wait_loses_no_acknowledged_write() {
    let s = Arc::new(Mutex::new(start().await));
    let url = format!(
        "{}/0/{}?request_timeout=2s&wait_replicas=1&wait_timeout=300ms",
        base_url(&s.lock().unwrap()),
        anykv_testserver::unique_name("wait")
    );
    let store = open(&url).await.unwrap();
    let killed = Arc::new(Mutex::new(None));
    let stop = {
        let (s, killed) = (s.clone(), killed.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (old, at) = fail_over_lagging(&s, Duration::from_millis(400)).await;
            *killed.lock().unwrap() = Some(at);
            bring_back(&s, old).await;
        }
    };
    let o = cas_workload(store.clone(), 8, stop, Duration::from_secs(2)).await;
    let killed = killed.lock().unwrap().expect("killed");
    let window = unavailability(&o, killed);
    println!(
        "sentinel failover with wait_replicas=1 (old primary restarted at once): writes succeeded again {window:?} after the \
         kill; {}",
        describe(&o)
    );
    assert!(window.is_some(), "no write succeeded after the failover");
    assert!(o
        .unknown
        .iter()
        .any(|(k, m)| *k == ErrorKind::Unavailable && m.contains("may be lost")));
    check_no_revision_reused(&o);
    check_no_acked_write_lost(&o, &*store).await;
    check_watch(&o);
    store.close().await.unwrap();
}

/// The same without waiting for replicas, the replica lagging: writes the
/// old primary acknowledged are lost, but no revision is handed out
/// twice (the new primary's counters jumped), and the watch, which saw
/// the lost revisions, ends with `Compacted` instead of going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_without_wait_reuses_no_revision() {
    let s = Arc::new(Mutex::new(start().await));
    let url = format!(
        "{}/0/{}?request_timeout=2s",
        base_url(&s.lock().unwrap()),
        anykv_testserver::unique_name("nowait")
    );
    let store = open(&url).await.unwrap();
    let killed = Arc::new(Mutex::new(None));
    let stop = {
        let (s, killed) = (s.clone(), killed.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (_, at) = fail_over_lagging(&s, Duration::from_millis(400)).await;
            *killed.lock().unwrap() = Some(at);
        }
    };
    let o = cas_workload(store.clone(), 8, stop, Duration::from_secs(2)).await;
    let killed = killed.lock().unwrap().expect("killed");
    let window = unavailability(&o, killed);
    println!(
        "sentinel failover without wait: writes succeeded again {window:?} after the kill; {}",
        describe(&o)
    );
    assert!(window.is_some(), "no write succeeded after the failover");
    check_no_revision_reused(&o);
    let before = o.acked.iter().filter(|a| a.at < killed).count();
    assert!(before > 0, "nothing was written before the kill");
    assert_eq!(
        o.watch_error,
        Some(ErrorKind::Compacted),
        "the watch saw lost revisions and must end with Compacted: {:?}",
        o.watch_end
    );
    // A compare-and-swap with a revision the failover lost fails.
    let lost = o
        .acked
        .iter()
        .filter(|a| a.at < killed)
        .map(|a| a.revision)
        .max()
        .unwrap();
    let after = o.acked.last().unwrap().revision;
    assert!(
        after > lost + (1 << 31),
        "revisions did not jump: {lost} then {after}"
    );
    let e = store
        .atomic_put("c/counter", "stale".into(), Some(lost), PutOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyModified, "{e}");
    store.close().await.unwrap();
}

/// A lock held across the primary's kill (locks waiting for one replica):
/// the holder keeps it or learns it lost it before anyone else gets it,
/// the other client gets it only then, and fencing tokens increase. Locks
/// are taken and kept only while a replica acknowledges them, so the old
/// primary is restarted to be one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_held_across_failover() {
    let s = Arc::new(Mutex::new(start().await));
    let url = format!(
        "{}/0/{}?request_timeout=2s&wait_replicas=1&wait_timeout=300ms",
        base_url(&s.lock().unwrap()),
        anykv_testserver::unique_name("lock")
    );
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let ttl = Duration::from_secs(3);
    let held = a.lock("l", LockOptions::new().with_ttl(ttl)).await.unwrap();
    let first = held.fencing_token();
    let lost = held.lost_signal();
    let held = Arc::new(parking_lot::Mutex::new(Some(held)));
    let waiter = {
        let (b, lost, held) = (b.clone(), lost.clone(), held.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                match b.try_lock("l", LockOptions::new().with_ttl(ttl)).await {
                    Ok(Some(g)) => {
                        let holder_gone = lost.is_lost() || held.lock().is_none();
                        return (g, holder_gone, Instant::now());
                    }
                    Ok(None) => {}
                    Err(e) if e.is_retryable() && Instant::now() < deadline => {}
                    Err(e) => panic!("try_lock: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (old, _, killed) = fail_over(&s).await;
    // Locks wait for a replica: bring the old primary back as one.
    let back = {
        let s = s.clone();
        tokio::spawn(async move { bring_back(&s, old).await })
    };
    // The holder either keeps the lock (its key reached the replica) or
    // learns it lost it; give it the TTL to find out.
    let settle = Instant::now() + ttl * 2;
    while !lost.is_lost() && Instant::now() < settle && !waiter.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = !lost.is_lost();
    if kept {
        assert!(
            !waiter.is_finished(),
            "another client took the lock while its holder still held it"
        );
        let g = held.lock().take().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), g.release()).await;
    } else {
        drop(held.lock().take());
    }
    let (guard, holder_gone, got_at) = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the other client never got the lock")
        .expect("waiter");
    println!(
        "lock across a sentinel failover: the holder {} it; the other client got it {:?} \
         after the kill; tokens {first} then {}",
        if kept { "kept" } else { "lost" },
        got_at - killed,
        guard.fencing_token()
    );
    assert!(
        holder_gone,
        "two holders believed they held the lock at once"
    );
    assert!(guard.fencing_token() > first);
    back.await.expect("restart");
    guard.release().await.ok();
    a.close().await.ok();
    b.close().await.ok();
}

/// The first Sentinel of the URL is dead when the store opens: it opens
/// anyway, about as fast, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sentinel_dead_at_open() {
    let s = start().await;
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let mut sentinels = vec![dead];
    sentinels.extend(s.sentinel_addrs());
    // The deployment's own first Sentinel is shut down too.
    let _ = s.sentinel_command(0, &["SHUTDOWN", "NOSAVE"]);
    let url = format!(
        "redis+sentinel://{}/{}/0/{}?request_timeout=2s",
        sentinels.join(","),
        s.master_name(),
        anykv_testserver::unique_name("dead")
    );
    let started = Instant::now();
    let store = open(&url).await.unwrap();
    let took = started.elapsed();
    println!("open with the first two Sentinels dead took {took:?}");
    assert!(took < Duration::from_secs(2), "open took {took:?}");
    let r = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().revision, r);
    store.close().await.unwrap();
}

/// Without waiting for replicas, a lock taken while the replica lags is
/// lost with the primary. Its holder learns it as soon as its store's
/// calls reach the new primary (every lock is checked at once then), long
/// before the lock's TTL; another client may take it on the new primary
/// before that (this deployment's documented limit), and the test prints
/// by how much. Tokens still increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_lost_in_failover_is_reported_at_once() {
    let s = Arc::new(Mutex::new(start().await));
    let url = format!(
        "{}/0/{}?request_timeout=2s",
        base_url(&s.lock().unwrap()),
        anykv_testserver::unique_name("lostlock")
    );
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let ttl = Duration::from_secs(20);
    let (old, replica) = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let d = s.lock().unwrap();
            let old = d.primary().expect("a primary");
            d.lag_replica(1 - old).expect("lag the replica");
            (old, 1 - old)
        })
        .await
        .unwrap()
    };
    let held = a.lock("l", LockOptions::new().with_ttl(ttl)).await.unwrap();
    let first = held.fencing_token();
    let killed = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            let mut d = s.lock().unwrap();
            let killed = Instant::now();
            d.kill(old);
            d.resume(replica).expect("resume the replica");
            d.wait_for_failover(old, Duration::from_secs(30))
                .expect("failover");
            killed
        })
        .await
        .unwrap()
    };
    let taker = {
        let b = b.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match b.try_lock("l", LockOptions::new().with_ttl(ttl)).await {
                    Ok(Some(g)) => return (g, Instant::now()),
                    Ok(None) => {}
                    Err(e) if e.is_retryable() && Instant::now() < deadline => {}
                    Err(e) => panic!("try_lock: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::timeout(ttl / 2, held.lost())
        .await
        .expect("the holder was not told within half the TTL");
    let lost_at = Instant::now();
    let (guard, got_at) = tokio::time::timeout(Duration::from_secs(30), taker)
        .await
        .expect("the other client never got the lock")
        .expect("taker");
    let overlap = lost_at.saturating_duration_since(got_at);
    println!(
        "lock lost in a sentinel failover without wait: the holder was told {:?} after the \
         kill (TTL {ttl:?}); the other client got it {:?} after the kill; both believed they \
         held it for {overlap:?}; tokens {first} then {}",
        lost_at - killed,
        got_at - killed,
        guard.fencing_token()
    );
    assert!(guard.fencing_token() > first);
    guard.release().await.ok();
    drop(held);
    a.close().await.ok();
    b.close().await.ok();
}

/// A transaction waits for replicas as `atomic_put` does: with one
/// replica acknowledging, it succeeds; asking for more replicas than
/// there are, one that wrote fails with `Unavailable` saying it was
/// applied on the primary (and it was), while one that wrote nothing
/// needs no replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_wait_for_replicas() {
    let base = {
        let s = shared().lock().unwrap_or_else(|p| p.into_inner());
        base_url(&s)
    };
    let root = anykv_testserver::unique_name("txn-wait");
    let one = open(&format!(
        "{base}/0/{root}?request_timeout=2s&wait_replicas=1&wait_timeout=1s"
    ))
    .await
    .unwrap();
    let resp = one
        .txn(
            Txn::new()
                .when(Compare::absent("a"))
                .then(TxnOp::put("a", "1"))
                .then(TxnOp::put("b", "1")),
        )
        .await
        .unwrap();
    let rev = resp.revision.unwrap();
    let two = open(&format!(
        "{base}/0/{root}?request_timeout=2s&wait_replicas=2&wait_timeout=200ms"
    ))
    .await
    .unwrap();
    let e = two
        .txn(
            Txn::new()
                .then(TxnOp::put("a", "2"))
                .then(TxnOp::delete("b")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("applied on the primary"), "{e}");
    let a = two.get("a").await.unwrap().unwrap();
    assert_eq!(&a.value[..], b"2");
    assert!(a.revision > rev);
    assert_eq!(two.get("b").await.unwrap(), None);
    let resp = two
        .txn(
            Txn::new()
                .then(TxnOp::get("a"))
                .then(TxnOp::delete("missing")),
        )
        .await
        .unwrap();
    assert_eq!(resp.revision, None);
    one.delete_tree("").await.unwrap();
    one.close().await.unwrap();
    two.close().await.unwrap();
}

/// `status` through the Sentinels: the primary they name (its version,
/// role and the namespace's revision), the Sentinel that named it, and
/// every Sentinel, a dead one listed with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_primary_and_sentinels() {
    let (mut sentinels, master, data) = {
        let s = shared().lock().unwrap_or_else(|p| p.into_inner());
        (s.sentinel_addrs(), s.master_name(), s.addrs())
    };
    let live = sentinels.clone();
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    sentinels.push(dead.clone());
    let url = format!(
        "redis+sentinel://{}/{master}/0/{}?request_timeout=2s",
        sentinels.join(","),
        anykv_testserver::unique_name("status")
    );
    let store = open(&url).await.unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let status = store.status().await.unwrap();
    assert_eq!(status.revision, Some(rev));
    assert_eq!(status.servers.len(), 1 + sentinels.len(), "{status:?}");
    let primary = &status.servers[0];
    assert!(data.contains(&primary.address), "{status:?}");
    assert_eq!(primary.role.as_deref(), Some("primary"));
    assert_eq!(primary.error, None);
    assert!(primary.version.is_some());
    for (server, address) in status.servers[1..].iter().zip(&sentinels) {
        assert_eq!(&server.address, address);
        if *address == dead {
            assert_eq!(server.role, None);
            let error = server.error.as_deref().expect("the dead Sentinel's error");
            assert!(error.starts_with("redis: unavailable: status: "), "{error}");
        } else {
            assert_eq!(server.role.as_deref(), Some("sentinel"));
            assert_eq!(server.error, None);
            assert!(server.version.is_some());
        }
    }
    let detail = |name: &str| {
        status
            .details
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("mode").as_deref(), Some("sentinel"));
    assert_eq!(detail("connected_replicas").as_deref(), Some("1"));
    let named_by = detail("sentinel").expect("the Sentinel that named the primary");
    assert!(live.contains(&named_by), "{named_by}");
    store.close().await.unwrap();
}
