//! The backend on a three-member etcd cluster (`EtcdCluster`): the whole
//! conformance suite on the cluster URL, and failover — a leader killed
//! under compare-and-swap increments and a tree watch, a lock held across
//! a leader kill, a paused follower, a paused leader, and the first
//! endpoint dead or paused at open. Each test prints what it measured.
//!
//! The tests of this file run one at a time, each on a cluster of its own,
//! so their timings are not disturbed by each other. The whole file takes
//! about as long as the suite on one server plus half a minute.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_conformance::Outcome;
use anykv_core::{
    ErrorKind, LockOptions, PutOptions, Store, WatchEvent, WatchOptions, WatchStream,
};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd_cluster::MEMBERS;
use common::cluster::{
    endpoints, leader, on_cluster, percentile, start_cluster, time_until, timed_gets, url_of,
    ClusterFactory,
};
use futures::StreamExt;

/// The tests of this file, one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every case of the conformance suite passes on the cluster URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_the_cluster() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let factory = ClusterFactory {
        endpoints: endpoints(&cluster).await,
        cluster: cluster.clone(),
    };
    let started = Instant::now();
    let report = anykv_conformance::run_all(Arc::new(factory)).await;
    let took = started.elapsed();
    let slowest = report.cases.iter().max_by_key(|c| c.duration);
    eprintln!(
        "conformance suite on a 3-member cluster: {} cases in {:.1}s ({} passed, {} unsupported); \
         slowest {:?}",
        report.cases.len(),
        took.as_secs_f64(),
        report.passed(),
        report.unsupported(),
        slowest.map(|c| (c.name, c.duration))
    );
    let bad: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.outcome != Outcome::Passed)
        .map(|c| format!("{}: {:?}", c.name, c.outcome))
        .collect();
    assert!(
        bad.is_empty(),
        "cases that did not pass:\n{}",
        bad.join("\n")
    );
}

/// What one CAS task saw: acknowledged increments (value, revision) and
/// the values of increments whose outcome is unknown.
#[derive(Default)]
struct Tally {
    acked: Vec<(u64, u64, Instant)>,
    unknown: Vec<String>,
}

/// The counter's value in a value `count:tag`.
fn count_of(value: &[u8]) -> u64 {
    let s = std::str::from_utf8(value).expect("utf-8 value");
    s.split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// One task of compare-and-swap increments until `stop`.
async fn cas_task(store: Arc<dyn Store>, task: usize, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let current = match store.get("counter").await {
            Ok(Some(p)) => p,
            Ok(None) => panic!("the counter is gone"),
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
                    "get: {e}"
                );
                continue;
            }
        };
        seq += 1;
        let next = count_of(&current.value) + 1;
        let value = format!("{next}:{task}:{seq}");
        let put = store
            .atomic_put(
                "counter",
                value.clone().into(),
                Some(current.revision),
                PutOptions::new(),
            )
            .await;
        match put {
            Ok(rev) => tally.acked.push((next, rev, Instant::now())),
            Err(e) if e.kind() == ErrorKind::KeyModified => {}
            Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) => {
                tally.unknown.push(value)
            }
            Err(e) => panic!("an increment failed with neither Timeout nor Unavailable: {e}"),
        }
    }
    tally
}

/// Reads a watch until the counter's put at `last`; the counter's values
/// and revisions in order, or the error that ended the watch.
async fn counter_events(
    w: &mut WatchStream,
    last: u64,
) -> Result<Vec<(String, u64)>, anykv_core::Error> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) if kv.key == "counter" => {
                let v = String::from_utf8(kv.value.to_vec()).expect("utf-8");
                out.push((v, kv.revision));
                if kv.revision >= last {
                    return Ok(out);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e),
            other => panic!("the watch neither delivered revision {last} nor ended: {other:?}"),
        }
    }
}

/// The leader is killed while 8 tasks increment a counter by
/// compare-and-swap and a tree watch follows it: no acknowledged increment
/// is lost (the final count is the acknowledged increments plus exactly
/// those unknown ones that the history shows applied), no revision is
/// used twice, and the watch delivers every change once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_cas_increments_and_a_tree_watch() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let url = url_of(&eps, &[0, 1, 2], "cas");
    let watcher = common::open(&url).await;
    let start = watcher
        .put("counter", "0:init".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = watcher
        .watch_tree("", WatchOptions::from_revision(start))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = common::open(&url).await;
        tasks.push(tokio::spawn(cas_task(store, task, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let old = leader(&cluster).await;
    let killed_at = Instant::now();
    on_cluster(&cluster, move |c| c.kill(old)).await;
    let new = leader(&cluster).await;
    let elected = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut unknown = Vec::new();
    for t in tasks {
        let tally = t.await.expect("a CAS task panicked");
        acked.extend(tally.acked);
        unknown.extend(tally.unknown);
    }
    let last = watcher.get("counter").await.unwrap().expect("the counter");
    let events = counter_events(&mut w, last.revision).await;
    let events = match events {
        Ok(e) => e,
        Err(e) => {
            // Allowed: a watch that ends says so. The history is then read
            // again by a new watch from the start.
            eprintln!("the watch ended with an error: {e}");
            let mut again = watcher
                .watch_tree("", WatchOptions::from_revision(start))
                .await
                .unwrap();
            counter_events(&mut again, last.revision).await.unwrap()
        }
    };
    // Every change once, in order: counts 1, 2, 3, ... at increasing
    // revisions.
    for (i, (value, _)) in events.iter().enumerate() {
        assert_eq!(count_of(value.as_bytes()), i as u64 + 1, "{events:?}");
    }
    let revs: Vec<u64> = events.iter().map(|e| e.1).collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
    let final_count = count_of(&last.value);
    assert_eq!(final_count, events.len() as u64);
    // No acknowledged increment lost; no revision acknowledged twice.
    let by_rev: BTreeMap<u64, u64> = events
        .iter()
        .map(|(v, r)| (*r, count_of(v.as_bytes())))
        .collect();
    let mut seen_revs = HashSet::new();
    for (count, rev, _) in &acked {
        assert!(seen_revs.insert(*rev), "revision {rev} acknowledged twice");
        assert_eq!(
            by_rev.get(rev),
            Some(count),
            "acknowledged {count} at {rev}"
        );
    }
    let written: HashSet<&str> = events.iter().map(|(v, _)| v.as_str()).collect();
    let applied_unknown = unknown
        .iter()
        .filter(|v| written.contains(v.as_str()))
        .count();
    assert_eq!(
        final_count,
        (acked.len() + applied_unknown) as u64,
        "the final count is the acknowledged increments and the unknown ones applied"
    );
    // The longest time without an acknowledged increment: the writes'
    // unavailability around the kill.
    let mut times: Vec<Instant> = acked.iter().map(|a| a.2).collect();
    times.sort();
    let after = times.iter().filter(|t| **t > killed_at + elected).count();
    let gap = times
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "leader kill (member {old}; member {new} elected, seen {:.2}s after the kill): {} increments \
         acknowledged ({after} after the election), {} unknown ({applied_unknown} of them \
         applied), final count {final_count}; longest time without an acknowledged write {:.2}s",
        elected.as_secs_f64(),
        acked.len(),
        unknown.len(),
        gap.as_secs_f64()
    );
    assert!(after > 0, "no increment acknowledged after the election");
    assert!(gap < Duration::from_secs(8), "writes stopped for {gap:?}");
}

/// Three clients take turns holding a lock while the leader is killed,
/// and one holds it across the kill: never two holders at once, and every
/// fencing token is larger than the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_across_a_leader_kill() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let url = url_of(&eps, &[0, 1, 2], "lock");
    let holders = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::<u64>::new()));
    let lost = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A TTL well above an election and a keep-alive's move, so the holder
    // keeps the lock across the kill.
    let options = LockOptions::new().with_ttl(Duration::from_secs(8));
    // One holder across the kill.
    let long = common::open(&url).await;
    let held = long.lock("l", options.clone()).await.unwrap();
    holders.fetch_add(1, Ordering::SeqCst);
    tokens.lock().unwrap().push(held.fencing_token());
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = common::open(&url).await;
        let (holders, tokens, lost, stop) =
            (holders.clone(), tokens.clone(), lost.clone(), stop.clone());
        let options = options.clone().with_timeout(Duration::from_secs(3));
        tasks.push(tokio::spawn(async move {
            let mut turns = 0;
            while !stop.load(Ordering::SeqCst) {
                let g = match store.lock("l", options.clone()).await {
                    Ok(g) => g,
                    Err(e) => {
                        // Still held by another client, or the server
                        // did not answer (the election).
                        assert!(
                            matches!(
                                e.kind(),
                                ErrorKind::LockTimeout
                                    | ErrorKind::Timeout
                                    | ErrorKind::Unavailable
                            ),
                            "lock: {e}"
                        );
                        continue;
                    }
                };
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                {
                    let mut t = tokens.lock().unwrap();
                    let token = g.fencing_token();
                    assert!(
                        t.last().is_none_or(|l| token > *l),
                        "token {token} after {t:?}"
                    );
                    t.push(token);
                }
                turns += 1;
                let was_lost = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => false,
                    _ = g.lost() => true,
                };
                holders.fetch_sub(1, Ordering::SeqCst);
                if was_lost {
                    lost.fetch_add(1, Ordering::SeqCst);
                    drop(g);
                } else {
                    let _ = g.release().await;
                }
            }
            turns
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = leader(&cluster).await;
    let killed_at = Instant::now();
    on_cluster(&cluster, move |c| c.kill(old)).await;
    // The long holder keeps the lock across the kill and the election.
    let kept = tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3)) => true,
        _ = held.lost() => false,
    };
    holders.fetch_sub(1, Ordering::SeqCst);
    let long_token = held.fencing_token();
    if kept {
        let _ = held.release().await;
    }
    let handed_over = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut turns = 0;
    for t in tasks {
        turns += t.await.expect("a lock task panicked");
    }
    let tokens = tokens.lock().unwrap().clone();
    let after: Vec<u64> = tokens.iter().copied().filter(|t| *t > long_token).collect();
    eprintln!(
        "lock across a leader kill: the holder {} the lock across the kill ({:.1}s held after it); \
         {turns} turns taken by the others ({} after the holder let go), {} lost \
         while held; tokens {:?}",
        if kept { "kept" } else { "lost" },
        (handed_over - killed_at).as_secs_f64(),
        after.len(),
        lost.load(Ordering::SeqCst),
        tokens
    );
    assert!(kept, "a lock held across a leader kill was lost");
    assert!(!after.is_empty(), "nobody took the lock after the kill");
}

/// A follower that freezes (listed first in the URL, with a watch, a
/// lease and a lock open) costs gets almost nothing once it is found
/// down: p99 within a small multiple of the healthy cluster's. The watch
/// misses nothing, the lease and lock stay, writes land, and the member is
/// used again once it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_follower() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let lead = leader(&cluster).await;
    let f = (lead + 1) % MEMBERS;
    let other = (lead + 2) % MEMBERS;
    let store = Arc::new(
        EtcdStore::open_url(&url_of(&eps, &[f, lead, other], "pause"))
            .await
            .unwrap(),
    );
    store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let mut w = store.watch_tree("w", WatchOptions::new()).await.unwrap();
    assert!(matches!(
        common::next(&mut w).await,
        WatchEvent::Synced { .. }
    ));
    let lease = store.grant_lease(Duration::from_secs(3)).await.unwrap();
    let lock = store
        .lock("l", LockOptions::new().with_ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    time_until("every member is up", Duration::from_secs(5), || {
        store.members().iter().all(|m| m.up)
    })
    .await;
    timed_gets(&*store, "k", 20).await;
    let mut healthy = timed_gets(&*store, "k", 200).await;

    on_cluster(&cluster, move |c| c.pause(f)).await.unwrap();
    let paused_at = Instant::now();
    // Calls made right away, before the member is found down.
    let mut early = Vec::new();
    let mut revs = Vec::new();
    while store.members()[0].up || early.is_empty() {
        if paused_at.elapsed() > Duration::from_secs(5) {
            panic!(
                "the paused member was not found down: {:?}",
                store.members()
            );
        }
        let t = Instant::now();
        store.get("k").await.unwrap();
        revs.push(common::put_retrying(&*store, &format!("w/{}", revs.len())).await);
        early.push(t.elapsed());
    }
    let detected = paused_at.elapsed();
    let mut paused = timed_gets(&*store, "k", 200).await;
    for i in 0..20 {
        let rev = store
            .put(&format!("w/p{i}"), "x".into(), PutOptions::new())
            .await
            .expect("a write while a follower is paused");
        revs.push(rev);
    }
    let seen = common::events_until(&mut w, *revs.last().unwrap()).await;
    let seen: Vec<u64> = seen.iter().map(|e| e.revision()).collect();
    assert_eq!(seen, revs, "the watch across the pause");
    // Longer than the lease's and lock's TTL.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(paused_at.elapsed())).await;
    assert!(
        !lease.is_lost(),
        "the lease was lost across a paused follower"
    );
    assert!(
        !lock.is_lost(),
        "the lock was lost across a paused follower"
    );

    on_cluster(&cluster, move |c| c.resume(f)).await.unwrap();
    let back = time_until("the resumed member is up", Duration::from_secs(5), || {
        store.members()[0].up
    })
    .await;
    let (h50, h99) = (
        percentile(&mut healthy, 0.5),
        percentile(&mut healthy, 0.99),
    );
    let (p50, p99) = (percentile(&mut paused, 0.5), percentile(&mut paused, 0.99));
    let worst_early = early.iter().max().copied().unwrap_or_default();
    eprintln!(
        "paused follower (member {f}, first in the URL): found down after {:.2}s; \
         {} get+put rounds before that, the slowest {:.0}ms; get p50/p99 healthy {:.2}/{:.2}ms, \
         one paused {:.2}/{:.2}ms; up again {:.2}s after resuming",
        detected.as_secs_f64(),
        early.len(),
        worst_early.as_secs_f64() * 1e3,
        h50.as_secs_f64() * 1e3,
        h99.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        back.as_secs_f64()
    );
    assert!(
        p99 <= h99 * 5 + Duration::from_millis(20),
        "get p99 {p99:?} with a paused follower, {h99:?} healthy"
    );
    assert!(
        detected < Duration::from_secs(3),
        "found down after {detected:?}"
    );
    lease.revoke().await.unwrap();
    lock.release().await.unwrap();
    store.close().await.unwrap();
}

/// The leader freezes under a watch, a lease and a lock: the cluster
/// elects another, the store finds the frozen member down and moves its
/// streams (the watch misses nothing and repeats nothing, the lease and
/// lock stay), and the member is used again once it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let old = leader(&cluster).await;
    let store = Arc::new(
        EtcdStore::open_url(&url_of(&eps, &[0, 1, 2], "pauselead"))
            .await
            .unwrap(),
    );
    time_until("the leader is known", Duration::from_secs(5), || {
        store.members()[old].leader
    })
    .await;
    let mut w = store.watch_tree("w", WatchOptions::new()).await.unwrap();
    assert!(matches!(
        common::next(&mut w).await,
        WatchEvent::Synced { .. }
    ));
    let ttl = Duration::from_secs(6);
    let lease = store.grant_lease(ttl).await.unwrap();
    let lock = store
        .lock("l", LockOptions::new().with_ttl(ttl))
        .await
        .unwrap();
    let mut revs = vec![store
        .put("w/0", "x".into(), PutOptions::new())
        .await
        .unwrap()];

    // Reads all along, each timed: those that meet the frozen leader go
    // to another member.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut took, mut failed) = (Vec::new(), 0);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = store.get("w/0").await;
                took.push(t.elapsed());
                match r {
                    Ok(_) => {}
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
                            "a read with the leader frozen: {e}"
                        );
                        failed += 1;
                    }
                }
            }
            (took, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    on_cluster(&cluster, move |c| c.pause(old)).await.unwrap();
    let paused_at = Instant::now();
    let found_down = {
        let store = store.clone();
        tokio::spawn(async move {
            time_until("the frozen leader is down", Duration::from_secs(5), || {
                !store.members()[old].up
            })
            .await
        })
    };
    let mut failed = 0;
    let first_ok = loop {
        assert!(
            paused_at.elapsed() < Duration::from_secs(15),
            "no write landed"
        );
        match store.put("w/1", "x".into(), PutOptions::new()).await {
            Ok(rev) => {
                revs.push(rev);
                break paused_at.elapsed();
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
                    "a write with the leader frozen: {e}"
                );
                failed += 1;
            }
        }
    };
    let detected = found_down.await.expect("the frozen leader is found down");
    for i in 2..12 {
        revs.push(
            store
                .put(&format!("w/{i}"), "x".into(), PutOptions::new())
                .await
                .unwrap(),
        );
    }
    // A write whose outcome was unknown may have landed: only the
    // acknowledged ones are looked for, each once and in order.
    let seen = common::events_until(&mut w, *revs.last().unwrap()).await;
    let seen: Vec<u64> = seen.iter().map(|e| e.revision()).collect();
    for r in &revs {
        assert_eq!(
            seen.iter().filter(|s| *s == r).count(),
            1,
            "{r} in {seen:?}"
        );
    }
    let mut gets = timed_gets(&*store, "w/0", 100).await;
    stop.store(true, Ordering::SeqCst);
    let (mut reads, failed_reads) = reader.await.expect("the reader panicked");
    on_cluster(&cluster, move |c| c.resume(old)).await.unwrap();
    let back = time_until("the resumed member is up", Duration::from_secs(5), || {
        store.members()[old].up
    })
    .await;
    assert!(
        !lease.is_lost(),
        "the lease was lost across a frozen leader"
    );
    assert!(!lock.is_lost(), "the lock was lost across a frozen leader");
    eprintln!(
        "paused leader (member {old}): found down {:.2}s after the freeze; first write landed \
         {:.2}s after it ({failed} failed before, each Timeout or Unavailable); {} reads \
         throughout, {failed_reads} failed, the slowest {:.2}s; get p99 afterwards {:.2}ms; \
         the old leader is up again {:.2}s after resuming",
        detected.as_secs_f64(),
        first_ok.as_secs_f64(),
        reads.len(),
        percentile(&mut reads, 1.0).as_secs_f64(),
        percentile(&mut gets, 0.99).as_secs_f64() * 1e3,
        back.as_secs_f64()
    );
    lease.revoke().await.unwrap();
    lock.release().await.unwrap();
    store.close().await.unwrap();
}

/// Opening with the first endpoint paused, then with it dead, succeeds
/// promptly through the other members, and the store works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_endpoint_paused_or_dead_at_open() {
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let lead = leader(&cluster).await;
    let f = (lead + 1) % MEMBERS;
    let order = [f, lead, (lead + 2) % MEMBERS];
    let mut figures = Vec::new();
    for state in ["paused", "dead"] {
        if state == "paused" {
            on_cluster(&cluster, move |c| c.pause(f)).await.unwrap();
        } else {
            on_cluster(&cluster, move |c| {
                c.resume(f).unwrap();
                c.kill(f);
            })
            .await;
        }
        let t = Instant::now();
        let store = EtcdStore::open_url(&url_of(&eps, &order, &format!("open{state}")))
            .await
            .unwrap_or_else(|e| panic!("open with the first endpoint {state}: {e}"));
        let opened = t.elapsed();
        let t = Instant::now();
        for i in 0..20 {
            let rev = store
                .put("k", format!("v{i}").into(), PutOptions::new())
                .await
                .unwrap();
            assert_eq!(store.get("k").await.unwrap().map(|p| p.revision), Some(rev));
        }
        let rounds = t.elapsed();
        figures.push(format!(
            "{state}: opened in {:.0}ms, 20 put+get rounds in {:.0}ms",
            opened.as_secs_f64() * 1e3,
            rounds.as_secs_f64() * 1e3
        ));
        assert!(opened < Duration::from_secs(1), "open took {opened:?}");
        assert!(rounds < Duration::from_secs(2), "20 rounds took {rounds:?}");
        store.close().await.unwrap();
    }
    eprintln!("first endpoint at open: {}", figures.join("; "));
}
