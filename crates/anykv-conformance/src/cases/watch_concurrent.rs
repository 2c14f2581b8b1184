//! Cases: watches while several clients write concurrently — convergence
//! to the final state, and watches opened in the middle of writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, PutOptions, WatchEvent, WatchOptions};
use futures::StreamExt;
use parking_lot::Mutex;

use super::watch::{joined, put, watch_store, AbortOnDrop};
use crate::{
    bytes, check, check_eq, next_event, read_initial, wait_until, CaseResult, Ctx, Failure,
    EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_watch_concurrent {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args watch_concurrent: [
            watch_converges_to_final_state,
            watch_opened_during_writes_misses_nothing,
        ] }
    };
}

/// A small deterministic random number generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

/// What the converging watcher has seen.
#[derive(Default)]
struct Seen {
    state: BTreeMap<String, KvPair>,
    last: u64,
    error: Option<String>,
}

/// Four clients put and delete random keys concurrently while a tree
/// watcher consumes events, then half the keys are deleted and the other
/// half written a last time; when the writes stop, within [`SLACK`], the
/// state built from the events (deletes included) equals what `get` and
/// `list` return for every key, and the events' revisions strictly
/// increased.
pub async fn watch_converges_to_final_state(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    for i in 0..8 {
        put(&s, &format!("c/k{i}"), "initial").await?;
    }
    let mut w = s.watch_tree("", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial.len(), 8);
    let seen = Arc::new(Mutex::new(Seen {
        state: initial.into_iter().map(|p| (p.key.clone(), p)).collect(),
        last: synced,
        error: None,
    }));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = w.next().await {
                let mut st = seen.lock();
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        st.error = Some(format!("the watch yielded an error ({}): {e}", e.kind()));
                        return;
                    }
                };
                let rev = ev.revision();
                // A `Synced` after a reconnect may repeat the last revision.
                let ordered = match ev {
                    WatchEvent::Synced { .. } => rev >= st.last,
                    _ => rev > st.last,
                };
                if !ordered {
                    st.error = Some(format!(
                        "revision {rev} after {}: not strictly increasing ({ev:?})",
                        st.last
                    ));
                    return;
                }
                st.last = rev;
                match ev {
                    WatchEvent::Put(kv) => {
                        st.state.insert(kv.key.clone(), kv);
                    }
                    WatchEvent::Delete { key, .. } => {
                        st.state.remove(&key);
                    }
                    WatchEvent::Synced { .. } => {}
                }
            }
            seen.lock().error = Some("the watch stream ended".into());
        })
    };
    let reader = AbortOnDrop(reader);
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let client = ctx.store().await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c + 1));
            for i in 0..40 {
                let key = format!("c/k{}", rng.below(8));
                if rng.below(3) == 0 {
                    client.delete(&key).await?;
                } else {
                    client
                        .put(&key, bytes(format!("c{c}-{i}")), PutOptions::new())
                        .await?;
                }
            }
            Ok::<_, anykv_core::Error>(())
        }));
    }
    for t in tasks {
        joined(t.await)??;
    }
    // End with standing deletes and final puts, so that a watch that loses
    // either kind of event cannot converge.
    let finisher = ctx.store().await?;
    for i in 0..8 {
        let key = format!("c/k{i}");
        finisher
            .put(&key, bytes("final"), PutOptions::new())
            .await?;
        if i % 2 == 0 {
            check!(finisher.delete(&key).await?, "the final delete of {key}");
        }
    }
    let converged = wait_until(SLACK, "the watcher's state equals the store's", || {
        let s = s.clone();
        let seen = seen.clone();
        async move {
            let mut actual = BTreeMap::new();
            for i in 0..8 {
                let key = format!("c/k{i}");
                if let Some(p) = s.get(&key).await? {
                    actual.insert(key, p);
                }
            }
            let listed: BTreeMap<String, KvPair> = s
                .list("")
                .await?
                .into_iter()
                .map(|p| (p.key.clone(), p))
                .collect();
            let st = seen.lock();
            if let Some(e) = &st.error {
                return Err(Failure::failed(e.clone()));
            }
            Ok(st.state == actual && listed == actual)
        }
    })
    .await;
    if let Err(e) = converged {
        let actual: BTreeMap<String, KvPair> = s
            .list("")
            .await?
            .into_iter()
            .map(|p| (p.key.clone(), p))
            .collect();
        let from_events = seen.lock().state.clone();
        return Err(Failure::failed(format!(
            "{e}: from events {from_events:?}, in the store {actual:?}"
        )));
    }
    drop(reader);
    Ok(())
}

/// One write of the log kept by [`watch_opened_during_writes_misses_nothing`]:
/// key, value (`None` for a delete) and revision.
type Logged = (String, Option<String>, u64);

/// Watches opened while other clients keep writing miss nothing between
/// their initial state and their live changes (the gap Go's libkv had):
/// for each of several watches opened at different moments, the initial
/// state is exactly the store's state at its `Synced` revision, rebuilt
/// from the writers' log, and the changes after it are exactly the logged
/// writes with greater revisions, in order (with `watch_every_revision`;
/// without it, the watch converges to the final state in increasing
/// revisions).
pub async fn watch_opened_during_writes_misses_nothing(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let every = s.capabilities().watch_every_revision;
    let log: Arc<Mutex<Vec<Logged>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for c in 0..2u64 {
        let client = ctx.store().await?;
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (c + 7));
            for i in 0..60 {
                let key = format!("g/k{}", rng.below(5));
                if rng.below(4) == 0 {
                    let existed = client.get(&key).await?;
                    if let Some(p) = existed {
                        if client.atomic_delete(&key, p.revision).await.is_ok() {
                            // The delete's revision is unknown to the client;
                            // it is recovered from the events below.
                            log.lock().push((key, None, 0));
                        }
                    }
                } else {
                    let value = format!("c{c}-{i}");
                    let rev = client
                        .put(&key, bytes(value.clone()), PutOptions::new())
                        .await?;
                    log.lock().push((key, Some(value), rev));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, anykv_core::Error>(())
        }));
    }
    let mut watches = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut w = s.watch_tree("g", WatchOptions::new()).await?;
        let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
        watches.push((w, initial, synced));
    }
    for t in writers {
        joined(t.await)??;
    }
    let last_write = s.put("g/last", bytes("last"), PutOptions::new()).await?;
    log.lock()
        .push(("g/last".into(), Some("last".into()), last_write));
    let final_state: BTreeMap<String, KvPair> = s
        .list("g")
        .await?
        .into_iter()
        .map(|p| (p.key.clone(), p))
        .collect();
    let puts: Vec<Logged> = {
        let mut l: Vec<Logged> = log
            .lock()
            .iter()
            .filter(|e| e.1.is_some())
            .cloned()
            .collect();
        l.sort_by_key(|e| e.2);
        l
    };
    let distinct: BTreeSet<u64> = puts.iter().map(|e| e.2).collect();
    check_eq!(
        distinct.len(),
        puts.len(),
        "every put got a revision of its own"
    );
    check_eq!(
        final_state.get("g/last").map(|p| p.revision),
        Some(last_write),
        "the last write is in the store"
    );
    for (n, (mut w, initial, synced)) in watches.into_iter().enumerate() {
        // Apply events until the watcher's state equals the final state.
        let mut state: BTreeMap<String, KvPair> =
            initial.iter().map(|p| (p.key.clone(), p.clone())).collect();
        let mut live_puts: Vec<u64> = Vec::new();
        let mut last = synced;
        let deadline = tokio::time::Instant::now() + SLACK + EVENT_TIMEOUT;
        while state != final_state {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = next_event(&mut w, left).await.map_err(|e| {
                Failure::failed(format!(
                    "watch {n} (Synced at {synced}) never reached the final state: {e}; \
                     it has {state:?}, the store {final_state:?}"
                ))
            })?;
            let rev = ev.revision();
            check!(rev > last, "watch {n}: revision {rev} after {last}");
            last = rev;
            match ev {
                WatchEvent::Put(kv) => {
                    live_puts.push(kv.revision);
                    state.insert(kv.key.clone(), kv);
                }
                WatchEvent::Delete { key, .. } => {
                    state.remove(&key);
                }
                WatchEvent::Synced { .. } => {
                    return Err(Failure::failed(format!("watch {n}: a second Synced")));
                }
            }
        }
        if every {
            // The initial state holds, for each key, the last logged put at
            // or below Synced unless a later delete at or below it removed
            // it; every logged put above Synced arrived live.
            for p in &initial {
                check!(
                    p.revision <= synced,
                    "watch {n}: initial pair {p:?} is newer than Synced {synced}"
                );
                let logged = puts.iter().any(|(k, v, r)| {
                    *k == p.key
                        && *r == p.revision
                        && v.as_deref() == Some(&*String::from_utf8_lossy(&p.value))
                });
                check!(logged, "watch {n}: initial pair {p:?} was never written");
            }
            let expected: Vec<u64> = puts.iter().map(|e| e.2).filter(|r| *r > synced).collect();
            check_eq!(
                live_puts,
                expected,
                "watch {n} (Synced at {synced}): the revisions of the live puts"
            );
            // A key whose last put at or below Synced is missing from the
            // initial state must have been deleted before Synced, which the
            // final state or a live put shows; the converse (a pair in the
            // initial state that was deleted before Synced) cannot be told
            // from the log, as deletes' revisions are the server's.
            for (k, _, r) in puts.iter().filter(|e| e.2 <= synced) {
                let newest_put_at_or_below = puts
                    .iter()
                    .filter(|e| e.0 == *k && e.2 <= synced)
                    .map(|e| e.2)
                    .max();
                if newest_put_at_or_below == Some(*r) && !initial.iter().any(|p| p.key == *k) {
                    let later_put = puts.iter().any(|e| e.0 == *k && e.2 > synced);
                    check!(
                        later_put || !final_state.contains_key(k),
                        "watch {n}: {k} (put at {r}) is missing from the initial state"
                    );
                }
            }
        }
    }
    Ok(())
}
