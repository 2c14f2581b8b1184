//! What the failover tests of `sentinel.rs` and `cluster.rs` share: a
//! workload of tasks doing compare-and-swap increments of one counter
//! with a tree watch open, and the checks of what it saw.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{Error, ErrorKind, PutOptions, Result, Store, WatchEvent, WatchOptions};
use anykv_redis::RedisStore;
use futures::StreamExt;
use parking_lot::Mutex;

/// Opens a Redis store as `anykv::open` would, without the facade.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(RedisStore::open_url(url).await?))
}

/// Retries `f` on `Unavailable`/`Timeout` for up to `within`.
pub async fn until_ok<T, F, Fut>(within: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

/// One acknowledged increment: the value written and its revision, and
/// when it was acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    /// The counter's new value.
    pub value: u64,
    /// Its revision.
    pub revision: u64,
    /// When the write returned.
    pub at: Instant,
}

/// What the workload saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every acknowledged increment.
    pub acked: Vec<Acked>,
    /// Writes that failed with an unknown outcome (`Unavailable`,
    /// `Timeout`), with their error kinds.
    pub unknown: Vec<(ErrorKind, String)>,
    /// The tree watch's events (revision, value) after `Synced`.
    pub events: Vec<(u64, u64)>,
    /// How the watch ended, if it did.
    pub watch_end: Option<String>,
    /// Whether the watch ended with an error.
    pub watch_error: Option<ErrorKind>,
}

/// Runs `tasks` tasks of compare-and-swap increments of `c/counter` and a
/// tree watch of `c` on `store` until `stop` resolves, then `settle` more.
pub async fn cas_workload<S>(
    store: Arc<dyn Store>,
    tasks: usize,
    stop: S,
    settle: Duration,
) -> Outcome
where
    S: std::future::Future<Output = ()>,
{
    let first = store
        .put("c/counter", "0".into(), PutOptions::new())
        .await
        .expect("initial put");
    let mut w = store
        .watch_tree("c", WatchOptions::new().with_buffer(100_000))
        .await
        .expect("watch");
    loop {
        match w.next().await {
            Some(Ok(WatchEvent::Synced { .. })) => break,
            Some(Ok(_)) => {}
            other => panic!("watch start: {other:?}"),
        }
    }
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let outcome = outcome.clone();
        tokio::spawn(async move {
            while let Some(ev) = w.next().await {
                match ev {
                    Ok(WatchEvent::Put(kv)) => {
                        let v = std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(u64::MAX);
                        outcome.lock().events.push((kv.revision, v));
                    }
                    Ok(other) => {
                        outcome.lock().watch_end = Some(format!("unexpected event {other:?}"));
                    }
                    Err(e) => {
                        let mut o = outcome.lock();
                        o.watch_error = Some(e.kind());
                        o.watch_end = Some(e.to_string());
                        return;
                    }
                }
            }
            outcome.lock().watch_end = Some("ended without an error".into());
        })
    };
    let mut workers = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        let outcome = outcome.clone();
        let running = running.clone();
        workers.push(tokio::spawn(async move {
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let current = match store.get("c/counter").await {
                    Ok(Some(kv)) => kv,
                    Ok(None) => panic!("the counter vanished"),
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => panic!("get: {e}"),
                };
                let value: u64 = std::str::from_utf8(&current.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("a number");
                let next = value + 1;
                match store
                    .atomic_put(
                        "c/counter",
                        next.to_string().into(),
                        Some(current.revision),
                        PutOptions::new(),
                    )
                    .await
                {
                    Ok(revision) => outcome.lock().acked.push(Acked {
                        value: next,
                        revision,
                        at: Instant::now(),
                    }),
                    Err(e) if e.kind() == ErrorKind::KeyModified => {}
                    Err(e) if e.is_retryable() => {
                        outcome.lock().unknown.push((e.kind(), e.to_string()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("atomic_put: {:?} {e}", e.kind()),
                }
            }
        }));
    }
    stop.await;
    tokio::time::sleep(settle).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.expect("a worker panicked");
    }
    // Give the watch time to deliver the last writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();
    let mut o = std::mem::take(&mut *outcome.lock());
    o.acked.sort_by_key(|a| a.revision);
    let _ = first;
    o
}

/// The time from `killed` until the first acknowledged write on the new
/// primary: the first whose revision is past the failover's jump (writes
/// in flight at the kill may still be acknowledged by the old primary).
pub fn unavailability(o: &Outcome, killed: Instant) -> Option<Duration> {
    let before = o
        .acked
        .iter()
        .filter(|a| a.at <= killed)
        .map(|a| a.revision)
        .max()
        .unwrap_or(0);
    o.acked
        .iter()
        .filter(|a| a.revision > before + anykv_redis::FAILOVER_GAP / 2)
        .map(|a| a.at.saturating_duration_since(killed))
        .min()
}

/// No revision was handed out twice: every acknowledged increment has a
/// revision of its own, and the watch's revisions strictly increase.
pub fn check_no_revision_reused(o: &Outcome) {
    let mut revs: Vec<u64> = o.acked.iter().map(|a| a.revision).collect();
    revs.sort_unstable();
    let n = revs.len();
    revs.dedup();
    assert_eq!(
        revs.len(),
        n,
        "an acknowledged revision was handed out twice"
    );
    for pair in o.events.windows(2) {
        assert!(
            pair[1].0 > pair[0].0,
            "the watch's revisions do not strictly increase: {pair:?}"
        );
    }
}

/// No acknowledged increment was lost: each value was acknowledged once
/// (a lost one would be written again from the value before it), and the
/// counter ends at least at the largest.
pub async fn check_no_acked_write_lost(o: &Outcome, store: &dyn Store) {
    let mut values: Vec<u64> = o.acked.iter().map(|a| a.value).collect();
    values.sort_unstable();
    let n = values.len();
    values.dedup();
    assert_eq!(
        values.len(),
        n,
        "a value was acknowledged twice: an acknowledged write was lost"
    );
    let last = until_ok(Duration::from_secs(10), || store.get("c/counter"))
        .await
        .expect("final get")
        .expect("the counter");
    let last: u64 = std::str::from_utf8(&last.value).unwrap().parse().unwrap();
    let max = values.last().copied().unwrap_or(0);
    assert!(
        last >= max,
        "the counter is {last}, below the acknowledged {max}"
    );
}

/// The watch delivered every acknowledged write (when it did not end with
/// an error), and nothing but acknowledged writes or unknown outcomes.
pub fn check_watch(o: &Outcome) {
    if o.watch_error.is_some() {
        return;
    }
    let seen: std::collections::HashSet<u64> = o.events.iter().map(|e| e.0).collect();
    for a in &o.acked {
        assert!(
            seen.contains(&a.revision),
            "the watch neither delivered revision {} (value {}) nor ended with an error: {:?}",
            a.revision,
            a.value,
            o.watch_end
        );
    }
}

/// A summary line of an outcome.
pub fn describe(o: &Outcome) -> String {
    format!(
        "{} acknowledged, {} unknown outcomes ({:?}), {} watch events, watch end: {:?}",
        o.acked.len(),
        o.unknown.len(),
        o.unknown
            .iter()
            .map(|u| format!("{:?}", u.0))
            .collect::<std::collections::BTreeSet<_>>(),
        o.events.len(),
        o.watch_end
    )
}

/// An error's kind is one of those an unknown outcome may have.
pub fn is_outage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
}
