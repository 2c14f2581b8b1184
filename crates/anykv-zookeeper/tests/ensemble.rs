//! The backend on a three-server ensemble ([`ZkEnsemble`], started once
//! for this test binary): the whole conformance suite against the
//! ensemble's URL, then failovers, each measured (the figures are
//! printed; run with `--nocapture` to see them) and checked with slack: a
//! leader killed under CAS increments and a tree watch, a lock held across
//! a leader kill, a paused follower under a watch, the first server of the
//! URL paused when opening, and the `Connection` loss policy giving a lost
//! lock up. The tests take turns (they kill and pause servers), and each
//! leaves every server running.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anykv_conformance::{all_cases, run_cases, Outcome, StoreFactory, UrlFactory};
use anykv_core::{Error, ErrorKind, LockOptions, PutOptions, WatchEvent, WatchOptions};
use anykv_testserver::zookeeper_ensemble::{ZkEnsemble, SERVERS};
use common::{open, retryable, Follower};
use futures::StreamExt;

/// The store session timeout these tests use (the default).
const SESSION: Duration = Duration::from_secs(10);

/// The ensemble, started by the first test that needs it.
static ENSEMBLE: OnceLock<Mutex<ZkEnsemble>> = OnceLock::new();

/// Taken by every test for its whole run: they kill and pause servers.
static TURN: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Runs `f` on the ensemble (started if need be) on a blocking thread: a
/// restart or a start takes seconds.
async fn on_ensemble<R: Send + 'static>(
    f: impl FnOnce(&mut ZkEnsemble) -> R + Send + 'static,
) -> R {
    tokio::task::spawn_blocking(move || {
        let e = ENSEMBLE.get_or_init(|| Mutex::new(ZkEnsemble::start()));
        let mut guard = e.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    })
    .await
    .expect("an ensemble operation panicked")
}

/// Every server running and not paused, with a leader; the index of the
/// leader.
async fn heal() -> usize {
    on_ensemble(|e| {
        for i in 0..SERVERS {
            let _ = e.resume(i);
            if !e.is_running(i) {
                e.restart(i);
            }
        }
        e.wait_for_leader(Duration::from_secs(60))
            .unwrap_or_else(|err| panic!("{err}"))
    })
    .await
}

/// The ensemble's URL for a fresh root named after `name`, with `params`.
async fn url(name: &str, params: &str) -> String {
    let root = anykv_testserver::unique_name(name);
    let base = on_ensemble(move |e| e.url(&root)).await;
    if params.is_empty() {
        base
    } else {
        format!("{base}?{params}")
    }
}

/// A URL listing only the servers `servers`, in that order.
async fn url_of(servers: Vec<usize>, name: &str, params: &str) -> String {
    let root = anykv_testserver::unique_name(name);
    let addrs = on_ensemble(|e| e.addresses()).await;
    let hosts: Vec<&str> = servers.iter().map(|&i| addrs[i].as_str()).collect();
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{params}")
    };
    format!("zk://{}/{root}{query}", hosts.join(","))
}

/// The server whose connections include the session `id` (by `cons`).
async fn server_of(id: i64) -> Option<usize> {
    on_ensemble(move |e| {
        let needle = format!("sid=0x{id:x},");
        (0..SERVERS).find(|&i| {
            e.four_letter(i, "cons", Duration::from_secs(1))
                .is_ok_and(|c| c.contains(&needle))
        })
    })
    .await
}

/// Retries `call` while it fails with an outage, for up to `within`.
async fn until_ok<T, F, Fut>(within: Duration, mut call: F) -> anykv_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anykv_core::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

fn hook(name: &'static str, r: Result<(), String>) -> anykv_core::Result<()> {
    r.map_err(|e| Error::unsupported("zookeeper ensemble tests", name, e))
}

/// The whole suite on the ensemble's URL. The pause hook freezes all
/// three servers (the service stops answering, as a single frozen server
/// does); the restart hook kills the leader and starts it again, which
/// keeps the data, as the suite's restart means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_the_ensemble() {
    let _turn = TURN.lock().await;
    heal().await;
    let base = on_ensemble(|e| e.url("")).await;
    let factory = UrlFactory::new(
        format!("{}?request_timeout=2s", base.trim_end_matches('/')),
        |url| async move { open(&url).await },
    )
    .with_pause(
        || on_each("pause_server", |e, i| e.pause(i)),
        || on_each("resume_server", |e, i| e.resume(i)),
    )
    .with_restart(|| async {
        let r = on_ensemble(|e| {
            let leader = e.wait_for_leader(Duration::from_secs(60))?;
            e.kill(leader);
            e.restart(leader);
            e.wait_for_leader(Duration::from_secs(60)).map(|_| ())
        })
        .await;
        hook("restart_server", r)
    })
    .with_request_timeout(Duration::from_secs(2));
    let factory: Arc<dyn StoreFactory> = Arc::new(factory);
    // As in conformance.rs: ZooKeeper keeps no history and its watches
    // carry no data.
    let unsupported = [
        "watch_resume_from_revision",
        "watch_tree_resume_from_revision",
        "watch_resume_compacted",
        "load_watch_every_write_exactly",
        "load_watch_resume_while_writing",
    ];
    let started = Instant::now();
    let report = run_cases(factory, all_cases(), 4).await;
    println!(
        "suite on the ensemble: {} cases in {:.1?}",
        report.cases.len(),
        started.elapsed()
    );
    let mut wrong = Vec::new();
    for c in &report.cases {
        let listed = unsupported.contains(&c.name);
        match (&c.outcome, listed) {
            (Outcome::Passed, false) | (Outcome::Unsupported(_), true) => {}
            (outcome, _) => wrong.push(format!("{}: {outcome:?} (listed: {listed})", c.name)),
        }
    }
    assert!(wrong.is_empty(), "{}\n{report}", wrong.join("\n"));
    heal().await;
}

/// Runs `f` on every server, the first error kept (as hook `name`'s).
async fn on_each(
    name: &'static str,
    f: impl Fn(&mut ZkEnsemble, usize) -> Result<(), String> + Send + 'static,
) -> anykv_core::Result<()> {
    let r = on_ensemble(move |e| {
        (0..SERVERS)
            .map(|i| f(e, i))
            .collect::<Result<Vec<()>, _>>()
    })
    .await;
    hook(name, r.map(|_| ()))
}

/// One CAS increment's outcome.
#[derive(Debug, Clone)]
struct Write {
    n: u64,
    who: String,
    rev: Option<u64>,
    at: Instant,
}

/// The counter's value: `n who`.
fn parse(v: &[u8]) -> (u64, String) {
    let s = String::from_utf8_lossy(v);
    let (n, who) = s.split_once(' ').unwrap_or((&s, ""));
    (n.parse().unwrap_or(0), who.to_owned())
}

/// The leader is killed while 8 tasks increment a counter by
/// compare-and-swap and a tree watch follows it: no acknowledged increment
/// is lost, the increments whose outcome was unknown are accounted for
/// exactly (the counter's final value is the number of increments
/// applied), no revision is reused, and the watch delivers the changes in
/// order up to the final value (or ends with a retryable error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_cas_increments_and_a_watch() {
    let _turn = TURN.lock().await;
    heal().await;
    let url = url("cas", "").await;
    let watcher = open(&url).await.unwrap();
    let first = watcher
        .put("c/n", "0 init".into(), PutOptions::new())
        .await
        .unwrap();
    let mut w = watcher.watch_tree("c", WatchOptions::new()).await.unwrap();
    let mut seen = Follower::new();
    while !seen.synced {
        seen.apply(common::next(&mut w).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Write>>> = Arc::default();
    let unknown: Arc<Mutex<Vec<Write>>> = Arc::default();
    let mut tasks = Vec::new();
    for s in 0..4 {
        let store = open(&url).await.unwrap();
        for t in 0..2 {
            let (store, stop, acked, unknown) =
                (store.clone(), stop.clone(), acked.clone(), unknown.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(Some(cur)) = store.get("c/n").await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let n = parse(&cur.value).0 + 1;
                    seq += 1;
                    let who = format!("t{s}{t}-{seq}");
                    let value = format!("{n} {who}");
                    let r = store
                        .atomic_put("c/n", value.into(), Some(cur.revision), PutOptions::new())
                        .await;
                    let write = Write {
                        n,
                        who,
                        rev: r.as_ref().ok().copied(),
                        at: Instant::now(),
                    };
                    match r {
                        Ok(_) => acked.lock().unwrap().push(write),
                        Err(e) if e.kind() == ErrorKind::KeyModified => {}
                        Err(e) if retryable(&e) => unknown.lock().unwrap().push(write),
                        Err(e) => panic!("an increment failed with {e} ({:?})", e.kind()),
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = on_ensemble(|e| e.wait_for_leader(Duration::from_secs(5)))
        .await
        .unwrap();
    let before = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    on_ensemble(move |e| e.kill(leader)).await;
    // Run until increments have gone on for 2 s after the failover.
    let deadline = killed_at + Duration::from_secs(40);
    let back_at = loop {
        let back = acked
            .lock()
            .unwrap()
            .iter()
            .find(|w| w.at > killed_at)
            .map(|w| w.at);
        if let Some(at) = back {
            if at.elapsed() > Duration::from_secs(2) {
                break at;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no increment succeeded within 40 s of the leader kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unknown = unknown.lock().unwrap().clone();
    let last = until_ok(Duration::from_secs(20), || watcher.get("c/n"))
        .await
        .unwrap()
        .unwrap();
    let (total, _) = parse(&last.value);

    // Exactly one write made each value 1..=total; the acknowledged ones
    // are theirs, and the unknown ones account for every other value.
    let mut by_n: HashMap<u64, &Write> = HashMap::new();
    let mut revs = HashSet::new();
    for a in &acked {
        assert!(
            a.n <= total,
            "acknowledged increment {} lost: the counter ends at {total}",
            a.n
        );
        assert!(
            by_n.insert(a.n, a).is_none(),
            "two acknowledged increments made {}",
            a.n
        );
        assert!(revs.insert(a.rev), "revision {:?} reused", a.rev);
    }
    let mut sorted: Vec<&Write> = acked.iter().collect();
    sorted.sort_by_key(|w| w.n);
    assert!(
        sorted.windows(2).all(|p| p[0].rev < p[1].rev),
        "revisions not increasing with the count"
    );
    let mut candidates: HashMap<u64, Vec<&Write>> = HashMap::new();
    for u in &unknown {
        candidates.entry(u.n).or_default().push(u);
    }
    let applied_unknown = (1..=total).filter(|n| !by_n.contains_key(n)).count();
    for n in (1..=total).filter(|n| !by_n.contains_key(n)) {
        assert!(
            candidates.contains_key(&n),
            "value {n} was made by no write this test knows of"
        );
    }
    assert_eq!(total as usize, acked.len() + applied_unknown);

    // The watch: in order, each value the write of its revision, up to
    // the final one, or a retryable error.
    let mut outcome = "reached the final value";
    let mut last_rev = first;
    let mut last_n = 0;
    while last_rev < last.revision {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => {
                let (n, who) = parse(&kv.value);
                assert!(kv.revision > last_rev && n > last_n, "out of order: {kv:?}");
                if let Some(a) = by_n.get(&n) {
                    assert_eq!((a.rev, a.who.as_str()), (Some(kv.revision), who.as_str()));
                } else {
                    assert!(candidates
                        .get(&n)
                        .is_some_and(|c| c.iter().any(|u| u.who == who)));
                }
                (last_rev, last_n) = (kv.revision, n);
            }
            Ok(Some(Ok(WatchEvent::Synced { revision }))) => last_rev = last_rev.max(revision),
            Ok(Some(Ok(other))) => panic!("the watch: {other:?}"),
            Ok(Some(Err(e))) => {
                assert!(retryable(&e), "the watch ended with {e}");
                outcome = "ended with a retryable error";
                break;
            }
            other => panic!(
                "the watch stopped short of revision {}: {other:?}",
                last.revision
            ),
        }
    }
    if outcome == "reached the final value" {
        assert_eq!(last_n, total, "the watch's last value");
    }
    println!(
        "leader kill: unavailable for {:.2?} (first increment after the kill), {} increments \
         acknowledged ({before} before the kill), {} unknown of which {applied_unknown} applied, \
         final count {total}; the watch {outcome}",
        back_at.duration_since(killed_at),
        acked.len(),
        unknown.len()
    );
    assert!(back_at.duration_since(killed_at) < Duration::from_secs(20));
    heal().await;
}

/// A lock held across a leader kill (default `Session` policy): it is not
/// reported lost, nobody else holds it meanwhile, and after its release
/// the next holder's fencing token is greater.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_across_a_leader_kill() {
    let _turn = TURN.lock().await;
    let leader = heal().await;
    let url = url("lock-kill", "").await;
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let held = a.lock("l", LockOptions::new()).await.unwrap();
    let token = held.fencing_token();
    let released = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (b, released) = (b.clone(), released.clone());
        tokio::spawn(async move {
            loop {
                match b
                    .lock("l", LockOptions::new().with_timeout(Duration::from_secs(2)))
                    .await
                {
                    Ok(g) => return (g, released.load(Ordering::SeqCst)),
                    // An outage, or its 2 s ran out while the lock was held.
                    Err(e) if retryable(&e) || e.kind() == ErrorKind::LockTimeout => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("the waiter: {e}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    on_ensemble(move |e| e.kill(leader)).await;
    until_ok(Duration::from_secs(30), || {
        a.put("probe", "x".into(), PutOptions::new())
    })
    .await
    .unwrap();
    let back = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "lock across a leader kill: the holder's store wrote again after {back:.2?}, lost: {}",
        held.is_lost()
    );
    assert!(
        !held.is_lost(),
        "the lock was reported lost at a leader election (Session policy)"
    );
    assert!(
        !waiter.is_finished(),
        "another client took the lock while it was held"
    );
    released.store(true, Ordering::SeqCst);
    held.release().await.unwrap();
    let (next, after_release) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter never got the lock")
        .unwrap();
    assert!(after_release, "the waiter got the lock before its release");
    assert!(next.fencing_token() > token);
    next.release().await.unwrap();
    heal().await;
}

/// The follower a store's session is on freezes: the store's watch moves
/// to another server (or ends with an error) within the session timeout,
/// and after a move it goes on without losing the final state or
/// delivering anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_follower_watch_moves_or_errors() {
    let _turn = TURN.lock().await;
    let leader = heal().await;
    let url = url("pause-follower", "").await;
    let mut found = None;
    for _ in 0..20 {
        let s = open(&url).await.unwrap();
        match server_of(
            s.as_any()
                .downcast_ref::<anykv_zookeeper::ZkStore>()
                .unwrap()
                .session_id(),
        )
        .await
        {
            Some(i) if i != leader => {
                found = Some((s, i));
                break;
            }
            _ => s.close().await.unwrap(),
        }
    }
    let (watcher, follower) = found.expect("no store landed on a follower in 20 tries");
    let others: Vec<usize> = (0..SERVERS).filter(|&i| i != follower).collect();
    let root = url.rsplit_once('/').map(|(_, r)| r.to_owned()).unwrap();
    let addrs = on_ensemble(|e| e.addresses()).await;
    let writer_url = format!(
        "zk://{}/{root}",
        others
            .iter()
            .map(|&i| addrs[i].as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let writer = open(&writer_url).await.unwrap();
    let mut w = watcher.watch_tree("p", WatchOptions::new()).await.unwrap();
    let mut seen = Follower::new();
    while !seen.synced {
        seen.apply(common::next(&mut w).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<BTreeMap<String, (u64, Instant)>>> = Arc::default();
    let task = {
        let (writer, stop, written) = (writer.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("p/k{}", i % 5);
                if let Ok(rev) = writer
                    .put(&key, format!("{i}").into(), PutOptions::new())
                    .await
                {
                    written.lock().unwrap().insert(key, (rev, Instant::now()));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    on_ensemble(move |e| e.pause(follower)).await.unwrap();
    let paused_at = Instant::now();
    let mut keys_seen: HashSet<(String, u64)> = HashSet::new();
    let moved = loop {
        let ev = tokio::time::timeout(SESSION + Duration::from_secs(5), w.next()).await;
        match ev {
            Ok(Some(Ok(ev))) => {
                if let WatchEvent::Put(kv) = &ev {
                    assert!(
                        keys_seen.insert((kv.key.clone(), kv.revision)),
                        "delivered twice: {kv:?}"
                    );
                    let after = written
                        .lock()
                        .unwrap()
                        .get(&kv.key)
                        .is_some_and(|(r, at)| *r == kv.revision && *at > paused_at);
                    if after {
                        seen.apply(ev);
                        break true;
                    }
                }
                seen.apply(ev);
            }
            Ok(Some(Err(e))) => {
                assert!(retryable(&e), "the watch ended with {e}");
                break false;
            }
            other => panic!("the watch was silent for 15 s after the pause: {other:?}"),
        }
    };
    let took = paused_at.elapsed();
    println!(
        "paused follower: the watch {} after {took:.2?}",
        if moved {
            "moved to another server"
        } else {
            "ended with an error"
        }
    );
    assert!(took < SESSION + Duration::from_secs(1), "took {took:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    on_ensemble(move |e| e.resume(follower)).await.unwrap();
    if moved {
        let want: BTreeMap<String, u64> = written
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (r, _))| (k.clone(), *r))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let have: BTreeMap<String, u64> = seen
                .state
                .iter()
                .map(|(k, (_, r))| (k.clone(), *r))
                .collect();
            if have == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the watch did not converge: {have:?} != {want:?}"
            );
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), w.next()).await {
                let ev = ev.unwrap();
                if let WatchEvent::Put(kv) = &ev {
                    assert!(
                        keys_seen.insert((kv.key.clone(), kv.revision)),
                        "delivered twice: {kv:?}"
                    );
                }
                seen.apply(ev);
            }
        }
    }
    heal().await;
}

/// The first server of the URL is frozen: opening a store and taking a
/// new lock (a new session each) are prompt, not a connection timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_server_paused_open_and_lock_are_prompt() {
    let _turn = TURN.lock().await;
    let leader = heal().await;
    let follower = (0..SERVERS).find(|&i| i != leader).unwrap();
    let mut order = vec![follower];
    order.extend((0..SERVERS).filter(|&i| i != follower));
    let url = url_of(order, "first-paused", "").await;
    on_ensemble(move |e| e.pause(follower)).await.unwrap();
    let mut opens = Vec::new();
    let mut locks = Vec::new();
    for round in 0..3u64 {
        let started = Instant::now();
        let s = open(&url).await.unwrap();
        opens.push(started.elapsed());
        let started = Instant::now();
        let ttl = Duration::from_secs(5 + round);
        let g = s.lock("l", LockOptions::new().with_ttl(ttl)).await.unwrap();
        locks.push(started.elapsed());
        g.release().await.unwrap();
        s.close().await.unwrap();
    }
    on_ensemble(move |e| e.resume(follower)).await.unwrap();
    println!("first server paused: opens took {opens:.2?}, new locks {locks:.2?}");
    let worst = opens
        .iter()
        .chain(&locks)
        .max()
        .copied()
        .unwrap_or_default();
    assert!(
        worst < Duration::from_secs(2),
        "opens {opens:?}, locks {locks:?}"
    );
    heal().await;
}

/// Under the `Connection` policy a leader kill (every client's connection
/// drops) fires the holder's `lost()` at once, and its lock is really
/// given up: another client gets it while the lost guard is still held,
/// with a greater fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_policy_gives_a_lost_lock_up() {
    let _turn = TURN.lock().await;
    let leader = heal().await;
    let url = url("lock-conn", "loss_policy=connection").await;
    let a = open(&url).await.unwrap();
    let b = open(url.split('?').next().unwrap()).await.unwrap();
    let held = a.lock("l", LockOptions::new()).await.unwrap();
    let token = held.fencing_token();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            loop {
                match b
                    .lock("l", LockOptions::new().with_timeout(Duration::from_secs(2)))
                    .await
                {
                    Ok(g) => return (g, Instant::now()),
                    // An outage, or its 2 s ran out while the lock was held.
                    Err(e) if retryable(&e) || e.kind() == ErrorKind::LockTimeout => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("the waiter: {e}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    on_ensemble(move |e| e.kill(leader)).await;
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("lost() did not fire on the suspension");
    let lost_after = killed_at.elapsed();
    let (next, got_at) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the lost lock kept the waiter waiting")
        .unwrap();
    println!(
        "connection policy: lost() {lost_after:.2?} after the leader kill, the waiter got the \
         lock {:.2?} after it",
        got_at.duration_since(killed_at)
    );
    assert!(next.fencing_token() > token);
    assert!(held.is_lost());
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !next.is_lost(),
        "dropping the lost guard touched the new holder"
    );
    next.release().await.unwrap();
    heal().await;
}

/// Every server freezes: with nowhere to move, a watch ends with a
/// retryable error before its store's session could expire, rather than
/// staying silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_ensemble_watch_errors_within_the_session_timeout() {
    let _turn = TURN.lock().await;
    heal().await;
    let session = Duration::from_secs(4);
    let url = url(
        "pause-all",
        &format!("session_timeout={}ms", session.as_millis()),
    )
    .await;
    let store = open(&url).await.unwrap();
    store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    let mut seen = Follower::new();
    while !seen.synced {
        seen.apply(common::next(&mut w).await);
    }
    on_each("pause", |e, i| e.pause(i)).await.unwrap();
    let paused_at = Instant::now();
    let ended = tokio::time::timeout(session * 3, w.next()).await;
    let took = paused_at.elapsed();
    on_each("resume", |e, i| e.resume(i)).await.unwrap();
    println!("every server paused: the watch ended after {took:.2?} (session timeout {session:?})");
    match ended {
        Ok(Some(Err(e))) => assert!(retryable(&e), "{e}"),
        other => panic!("the watch did not end with an error: {other:?}"),
    }
    assert!(took < session + Duration::from_secs(1), "took {took:?}");
    heal().await;
}

/// `status` on the ensemble: every server with its version and mode (one
/// leader, two followers), the server of the store's session by `cons`,
/// and a paused follower listed with its error while the call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_member_and_a_paused_one() {
    let _turn = TURN.lock().await;
    let leader = heal().await;
    let url = url("status", "request_timeout=1s").await;
    let store = open(&url).await.unwrap();
    let addrs = on_ensemble(|e| e.addresses()).await;
    // A server restarted by an earlier test may still be catching up
    // ("not currently serving requests").
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = store.status().await.unwrap();
        if status.servers.iter().all(|s| s.error.is_none()) || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got: Vec<(&str, Option<&str>, bool)> = status
        .servers
        .iter()
        .map(|s| (s.address.as_str(), s.role.as_deref(), s.error.is_none()))
        .collect();
    let want: Vec<(&str, Option<&str>, bool)> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let role = if i == leader { "leader" } else { "follower" };
            (a.as_str(), Some(role), true)
        })
        .collect();
    assert_eq!(got, want, "{status:?}");
    let version = status.servers[0].version.clone();
    assert!(version.as_deref().is_some_and(|v| v.starts_with("3.")));
    assert!(status.servers.iter().all(|s| s.version == version));
    let id = store
        .as_any()
        .downcast_ref::<anykv_zookeeper::ZkStore>()
        .unwrap()
        .session_id();
    let on = server_of(id).await.expect("the session's server by cons");
    let connected = status
        .details
        .iter()
        .find(|(n, _)| n == "connected_server")
        .map(|(_, v)| v.as_str());
    assert_eq!(connected, Some(addrs[on].as_str()));

    // A paused follower (not the session's): listed with its error.
    let follower = (0..SERVERS).find(|&i| i != leader && i != on).unwrap();
    on_ensemble(move |e| e.pause(follower)).await.unwrap();
    let started = Instant::now();
    let status = store.status().await;
    let took = started.elapsed();
    on_ensemble(move |e| e.resume(follower)).await.unwrap();
    let status = status.unwrap();
    assert!(took < Duration::from_secs(3), "status took {took:?}");
    let paused = &status.servers[follower];
    assert_eq!(
        (paused.version.as_deref(), paused.role.as_deref()),
        (None, None)
    );
    assert_eq!(
        paused.error.as_deref(),
        Some("no answer to srvr within 1s"),
        "{paused:?}"
    );
    assert_eq!(
        status.servers.iter().filter(|s| s.error.is_none()).count(),
        SERVERS - 1
    );
    store.close().await.unwrap();
}
