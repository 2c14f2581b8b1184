//! Cases: watches of one key and of a tree — initial state and `Synced`,
//! ordering, uniqueness, convergence, prefix boundaries, resuming from a
//! revision, compaction, lagging consumers and freeing resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{ErrorKind, KvPair, PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use futures::StreamExt;
use parking_lot::Mutex;

use crate::{
    bytes, check, check_eq, check_err, expect_delete, expect_silence, next_event, next_item,
    read_initial, wait_until, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_watch {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args watch: [
            watch_initial_state_then_synced,
            watch_absent_key_then_created,
            watch_every_put_in_order,
            watch_delete_event,
            watch_key_ignores_other_keys,
            watch_tree_initial_state_sorted,
            watch_tree_prefix_boundary,
            watch_tree_sees_child_updates,
            watch_tree_sees_delete_tree,
            watch_revisions_strictly_increase,
            watch_converges_to_final_state,
            watch_opened_during_writes_misses_nothing,
            watch_resume_from_revision,
            watch_tree_resume_from_revision,
            watch_resume_compacted,
            watch_lagged_consumer,
            watch_dropped_stream_frees,
            watch_many_share_connections,
            watch_sees_other_client_writes,
            watch_empty_prefix_sees_whole_root,
            watch_canonical_keys,
            watch_invalid_key_rejected,
        ] }
    };
}

/// How long a stream must stay quiet to show that nothing more comes.
const QUIET: Duration = Duration::from_millis(500);

/// A client on the case's root, or "unsupported" unless it can watch.
async fn watch_store(ctx: &Ctx) -> Result<Arc<dyn Store>, Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    Ok(s)
}

/// A plain put returning the pair it wrote.
async fn put(s: &Arc<dyn Store>, key: &str, value: &str) -> Result<KvPair, Failure> {
    let rev = s
        .put(key, bytes(value.to_owned()), PutOptions::new())
        .await?;
    check!(rev > 0, "put of {key:?} returned revision 0");
    Ok(KvPair::new(key, value.to_owned(), rev))
}

/// The next event must be `Synced`; returns its revision.
async fn expect_synced(w: &mut WatchStream) -> Result<u64, Failure> {
    match next_event(w, EVENT_TIMEOUT).await? {
        WatchEvent::Synced { revision } => Ok(revision),
        other => Err(Failure::failed(format!("expected Synced, got {other:?}"))),
    }
}

/// The case fails if a spawned task of it panicked or was cancelled.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, Failure> {
    r.map_err(|e| Failure::failed(format!("a task of the case failed: {e}")))
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

/// A watch on an existing key first delivers its current pair (exact value
/// and revision), then `Synced` with the store's revision at the snapshot
/// (at least that of a write to another key just before); a
/// change made afterwards follows with a revision greater than `Synced`'s.
/// Keys below the watched key are not part of a single-key watch.
pub async fn watch_initial_state_then_synced(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let pair = put(&s, "k", "v1").await?;
    let child = put(&s, "k/child", "c").await?;
    let mut w = s.watch("k", WatchOptions::new()).await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(pair.clone())
    );
    let synced = expect_synced(&mut w).await?;
    // Synced carries the store's revision at the snapshot, which is at
    // least that of every write completed before the watch was opened,
    // including writes to keys outside the watch.
    check!(
        synced >= child.revision && synced >= pair.revision,
        "Synced revision {synced} is below the store's revision {} when the watch opened",
        child.revision
    );
    let p2 = put(&s, "k", "v2").await?;
    check!(
        p2.revision > synced,
        "a put after Synced{{{synced}}} got revision {}",
        p2.revision
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(p2)
    );
    Ok(())
}

/// A watch on a key that does not exist is not an error: it delivers just
/// `Synced`, then the key's `Put` (exact value and revision) when it is
/// created, and nothing twice.
pub async fn watch_absent_key_then_created(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut w = s.watch("k", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    expect_silence(&mut w, QUIET).await?;
    let pair = put(&s, "k", "created").await?;
    check!(
        pair.revision > synced,
        "the create's revision is not after Synced"
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(pair)
    );
    expect_silence(&mut w, QUIET).await?;
    Ok(())
}

/// 50 puts to one key. With `watch_every_revision` the watcher sees every
/// put, in order, with the exact revisions `put` returned. Without it,
/// values may be skipped, but what arrives is in strictly increasing
/// revision order, each event is one of the puts exactly, and the last is
/// the final value. Nothing follows.
pub async fn watch_every_put_in_order(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let every = s.capabilities().watch_every_revision;
    let mut w = s.watch("k", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    let mut written = Vec::new();
    for i in 0..50 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
    }
    if every {
        for pair in &written {
            check_eq!(
                next_event(&mut w, EVENT_TIMEOUT).await?,
                WatchEvent::Put(pair.clone())
            );
        }
    } else {
        let index: HashMap<u64, usize> = written
            .iter()
            .enumerate()
            .map(|(i, p)| (p.revision, i))
            .collect();
        let mut last: Option<usize> = None;
        loop {
            let ev = next_event(&mut w, EVENT_TIMEOUT).await?;
            let WatchEvent::Put(kv) = ev else {
                return Err(Failure::failed(format!(
                    "expected only puts of \"k\", got {ev:?}"
                )));
            };
            let Some(&i) = index.get(&kv.revision) else {
                return Err(Failure::failed(format!(
                    "event {kv:?} has a revision no put returned"
                )));
            };
            check_eq!(kv, written[i]);
            check!(
                last.is_none_or(|l| i > l),
                "put #{i} arrived after put #{last:?}: out of order or twice"
            );
            last = Some(i);
            if i == written.len() - 1 {
                break;
            }
        }
    }
    expect_silence(&mut w, QUIET).await?;
    Ok(())
}

/// Deleting a watched key gives `Delete { key, revision }` with a revision
/// greater than the deleted pair's; re-creating it gives a `Put` with a
/// still greater revision.
pub async fn watch_delete_event(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let pair = put(&s, "k", "v").await?;
    let mut w = s.watch("k", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![pair.clone()]);
    check!(
        s.delete("k").await?,
        "delete of a present key returned false"
    );
    let del = expect_delete(&mut w, "k", pair.revision.max(synced), EVENT_TIMEOUT).await?;
    let again = put(&s, "k", "v").await?;
    check!(
        again.revision > del,
        "re-create revision {} is not after the delete's {del}",
        again.revision
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(again)
    );
    Ok(())
}

/// `watch("a")` covers the key `a` only: never `a/b`, `ab` or `b`, neither
/// in its initial state nor later.
pub async fn watch_key_ignores_other_keys(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    for k in ["a/b", "ab", "b"] {
        put(&s, k, "before").await?;
    }
    let mut w = s.watch("a", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    for k in ["a/b", "ab", "b", "a/b/c", "ab/c"] {
        put(&s, k, "after").await?;
    }
    s.delete("ab").await?;
    s.delete("a/b").await?;
    let a = put(&s, "a", "mine").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(a.clone())
    );
    put(&s, "b", "again").await?;
    s.delete_tree("ab").await?;
    check!(s.delete("a").await?);
    expect_delete(&mut w, "a", a.revision, EVENT_TIMEOUT).await?;
    put(&s, "a/b", "last").await?;
    put(&s, "ab", "last").await?;
    expect_silence(&mut w, QUIET).await?;
    Ok(())
}

/// `watch_tree` first delivers one `Put` per existing key under the prefix,
/// at any depth, in key order and exactly as `list` returns them, then
/// `Synced` (at least the newest pair's revision); then live changes.
pub async fn watch_tree_initial_state_sorted(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut pairs = Vec::new();
    for k in ["t/b", "t/a/z/y", "t/a", "t/c/d", "t/a/b"] {
        pairs.push(put(&s, k, &format!("value of {k}")).await?);
    }
    for k in ["t", "tt", "u", "tt/a"] {
        put(&s, k, "outside").await?;
    }
    pairs.sort_by(|a, b| a.key.cmp(&b.key));
    let newest = pairs.iter().map(|p| p.revision).max().unwrap_or(0);
    check_eq!(s.list("t").await?, pairs.clone());
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, pairs);
    check!(
        synced >= newest,
        "Synced revision {synced} is below the newest pair's {newest}"
    );
    let live = put(&s, "t/a/z/y", "changed").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(live)
    );
    Ok(())
}

/// `watch_tree("a")` covers `a/...` only: it sees `a/x`, never the key `a`
/// itself, `ab` or `ab/c`, neither in its initial state nor later.
pub async fn watch_tree_prefix_boundary(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let a0 = put(&s, "a/0", "in").await?;
    for k in ["a", "ab", "ab/c"] {
        put(&s, k, "out").await?;
    }
    let mut w = s.watch_tree("a", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![a0]);
    for k in ["a", "ab", "ab/c", "abc", "b/a"] {
        put(&s, k, "out again").await?;
    }
    let ax = put(&s, "a/x", "in").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(ax.clone())
    );
    for k in ["a", "ab", "ab/c"] {
        s.delete(k).await?;
    }
    check!(s.delete("a/x").await?);
    expect_delete(&mut w, "a/x", ax.revision, EVENT_TIMEOUT).await?;
    put(&s, "ab/d", "out").await?;
    put(&s, "a", "out").await?;
    expect_silence(&mut w, QUIET).await?;
    Ok(())
}

/// `watch_tree` sees value changes of existing children at any depth (not
/// only creations and deletions): each update arrives with its exact value
/// and revision.
pub async fn watch_tree_sees_child_updates(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let deep = put(&s, "t/a/b/c", "v1").await?;
    let shallow = put(&s, "t/x", "v1").await?;
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![deep, shallow]);
    for (k, v) in [
        ("t/a/b/c", "v2"),
        ("t/a/b/c", "v3"),
        ("t/x", "v2"),
        ("t/a/b/c", "v4"),
    ] {
        let p = put(&s, k, v).await?;
        check_eq!(next_event(&mut w, EVENT_TIMEOUT).await?, WatchEvent::Put(p));
    }
    Ok(())
}

/// `delete_tree` gives a tree watcher one `Delete` per deleted key (the
/// prefix key included when it is under the watched prefix), each with its
/// own revision, strictly increasing and greater than every deleted pair's;
/// keys outside the deleted tree get nothing.
pub async fn watch_tree_sees_delete_tree(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut newest = 0;
    for k in ["t/d", "t/d/1", "t/d/2/x", "t/d/3", "t/e", "t/dd"] {
        newest = newest.max(put(&s, k, "v").await?.revision);
    }
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial.len(), 6);
    check_eq!(s.delete_tree("t/d").await?, 4);
    let mut last = synced.max(newest);
    let mut deleted = BTreeSet::new();
    for _ in 0..4 {
        match next_event(&mut w, EVENT_TIMEOUT).await? {
            WatchEvent::Delete { key, revision } => {
                check!(
                    revision > last,
                    "Delete of {key:?} has revision {revision}, not above {last}"
                );
                check!(deleted.insert(key.clone()), "Delete of {key:?} twice");
                last = revision;
            }
            other => {
                return Err(Failure::failed(format!(
                    "expected a Delete from delete_tree, got {other:?}"
                )))
            }
        }
    }
    let expected: BTreeSet<String> = ["t/d", "t/d/1", "t/d/2/x", "t/d/3"]
        .into_iter()
        .map(String::from)
        .collect();
    check_eq!(deleted, expected);
    let z = put(&s, "t/z", "sentinel").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(z.clone())
    );
    let keys: Vec<String> = s.list("t").await?.into_iter().map(|p| p.key).collect();
    check_eq!(
        keys,
        vec!["t/dd".to_owned(), "t/e".to_owned(), "t/z".to_owned()]
    );
    Ok(())
}

/// Four clients write concurrently; a tree watcher on a fifth sees, after
/// `Synced`, strictly increasing revisions, no event twice, and every event
/// exactly as one of the writes (key, value and revision). With
/// `watch_every_revision` every write appears exactly once.
pub async fn watch_revisions_strictly_increase(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let every = s.capabilities().watch_every_revision;
    let mut w = s.watch_tree("", WatchOptions::new()).await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    let mut tasks = Vec::new();
    for c in 0..4usize {
        let client = ctx.store().await?;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..25usize {
                let key = format!("w/k{}", (c * 7 + i) % 6);
                let value = format!("c{c}-{i}");
                let rev = client
                    .put(&key, bytes(value.clone()), PutOptions::new())
                    .await?;
                out.push(KvPair::new(key, value, rev));
            }
            Ok::<_, anykv_core::Error>(out)
        }));
    }
    let mut written: HashMap<(String, u64), KvPair> = HashMap::new();
    for t in tasks {
        for p in joined(t.await)?? {
            written.insert((p.key.clone(), p.revision), p);
        }
    }
    check_eq!(written.len(), 100, "two writes returned the same revision");
    let end = put(&s, "end", "sentinel").await?;
    let mut last = synced;
    let mut seen = 0usize;
    loop {
        let ev = next_event(&mut w, EVENT_TIMEOUT).await?;
        check!(
            ev.revision() > last,
            "revision {} after {last}: not strictly increasing ({ev:?})",
            ev.revision()
        );
        last = ev.revision();
        match ev {
            WatchEvent::Put(kv) if kv == end => break,
            WatchEvent::Put(kv) => match written.get(&(kv.key.clone(), kv.revision)) {
                Some(p) => {
                    check_eq!(&kv, p);
                    seen += 1;
                }
                None => return Err(Failure::failed(format!("event {kv:?} matches no write"))),
            },
            other => return Err(Failure::failed(format!("unexpected event {other:?}"))),
        }
    }
    if every {
        check_eq!(seen, written.len(), "writes seen by the watcher");
    } else {
        check!(seen > 0, "the watcher saw none of the 100 writes");
    }
    Ok(())
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

/// Aborts a spawned task when the case ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `WatchOptions::from_revision(r)` yields exactly the changes of the key
/// after `r` (here v3, v4, v5 after v2's revision), with no initial state
/// and no `Synced`, then live changes; writes to other keys are not part of
/// it.
pub async fn watch_resume_from_revision(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let mut written = Vec::new();
    for i in 1..=5 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
        put(&s, "other", &format!("o{i}")).await?;
        put(&s, "k/child", &format!("c{i}")).await?;
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(written[1].revision))
        .await?;
    for p in &written[2..] {
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(p.clone())
        );
    }
    let v6 = put(&s, "k", "v6").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(v6.clone())
    );
    check!(s.delete("k").await?);
    expect_delete(&mut w, "k", v6.revision, EVENT_TIMEOUT).await?;
    Ok(())
}

/// `watch_tree` with `from_revision(r)` replays every change under the
/// prefix after `r` in order, deletes included, then live changes; no
/// initial state, no `Synced`, nothing from outside the prefix.
pub async fn watch_tree_resume_from_revision(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let a = put(&s, "t/a", "1").await?;
    put(&s, "t/keep", "1").await?;
    let mark = put(&s, "u", "outside").await?.revision;
    let b = put(&s, "t/b", "1").await?;
    put(&s, "tt", "outside").await?;
    check!(s.delete("t/a").await?);
    let cd = put(&s, "t/c/d", "1").await?;
    put(&s, "t", "outside").await?;
    let b2 = put(&s, "t/b", "2").await?;
    let mut w = s.watch_tree("t", WatchOptions::from_revision(mark)).await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(b.clone())
    );
    let del = expect_delete(&mut w, "t/a", b.revision.max(a.revision), EVENT_TIMEOUT).await?;
    check!(
        del < cd.revision,
        "the replayed Delete of t/a is out of order"
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(cd)
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(b2)
    );
    let live = put(&s, "t/e", "live").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(live)
    );
    Ok(())
}

/// After the history up to revision `r` is compacted (through the
/// factory's compact hook), a watch resuming from an older revision yields
/// `Err(Compacted)` and then ends (`None`), for `watch` and `watch_tree`;
/// resuming from `r` itself still works. Runs alone (it compacts).
pub async fn watch_resume_compacted(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let mut written = Vec::new();
    for i in 1..=5 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
    }
    match ctx.factory().compact(&s, written[3].revision).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return Err(Failure::unsupported(format!(
                "the factory has no compact hook (StoreFactory::compact): {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    for tree in [false, true] {
        let opts = WatchOptions::from_revision(written[1].revision);
        let mut w = if tree {
            s.watch_tree("", opts).await?
        } else {
            s.watch("k", opts).await?
        };
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            Some(Err(e)) if e.kind() == ErrorKind::Compacted => {}
            other => {
                return Err(Failure::failed(format!(
                "resuming {} from compacted revision {}: expected Err(Compacted), got {other:?}",
                if tree {
                    "watch_tree(\"\")"
                } else {
                    "watch(\"k\")"
                },
                written[1].revision
            )))
            }
        }
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            None => {}
            Some(other) => {
                return Err(Failure::failed(format!(
                    "the stream did not end after Err(Compacted): got {other:?}"
                )))
            }
        }
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(written[3].revision))
        .await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(written[4].clone())
    );
    Ok(())
}

/// A consumer that stops reading a watch with a buffer of 16 while 500 puts
/// happen gets, when it drains the stream, events in order and without
/// gaps (from the first put on, with `watch_every_revision`), then
/// `Err(WatchLagged)`, then the end (`None`); buffering is bounded. Where
/// resuming works, resuming after the last revision seen carries on with
/// the next put. Without `watch_every_revision` the stream may instead
/// coalesce, but then it delivers the final value after few events.
pub async fn watch_lagged_consumer(ctx: &Ctx) -> CaseResult {
    const BUFFER: usize = 16;
    let s = watch_store(ctx).await?;
    let caps = s.capabilities().clone();
    let mut w = s
        .watch("k", WatchOptions::new().with_buffer(BUFFER))
        .await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    let mut written = Vec::new();
    for i in 0..500 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
    }
    let index: HashMap<u64, usize> = written
        .iter()
        .enumerate()
        .map(|(i, p)| (p.revision, i))
        .collect();
    let mut delivered: Vec<usize> = Vec::new();
    let lagged = loop {
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            Some(Ok(WatchEvent::Put(kv))) => {
                let Some(&i) = index.get(&kv.revision) else {
                    return Err(Failure::failed(format!(
                        "event {kv:?} has a revision no put returned"
                    )));
                };
                check_eq!(kv, written[i]);
                let expected_next = delivered.last().map_or(0, |l| l + 1);
                if caps.watch_every_revision {
                    check_eq!(
                        i,
                        expected_next,
                        "index of the next delivered put (no gaps)"
                    );
                } else {
                    check!(i >= expected_next, "put #{i} arrived out of order");
                }
                delivered.push(i);
                if i == written.len() - 1 {
                    break false;
                }
            }
            Some(Err(e)) if e.kind() == ErrorKind::WatchLagged => break true,
            other => {
                return Err(Failure::failed(format!(
                    "draining a lagged watch: expected a put or Err(WatchLagged), got {other:?}"
                )))
            }
        }
    };
    if lagged {
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            None => {}
            Some(other) => {
                return Err(Failure::failed(format!(
                    "the stream did not end after Err(WatchLagged): got {other:?}"
                )))
            }
        }
        if caps.watch_resume {
            let from = delivered.last().map_or(synced, |&i| written[i].revision);
            let next = delivered.last().map_or(0, |l| l + 1);
            let mut r = s.watch("k", WatchOptions::from_revision(from)).await?;
            check_eq!(
                next_event(&mut r, EVENT_TIMEOUT).await?,
                WatchEvent::Put(written[next].clone()),
                "resuming after the last revision seen"
            );
        }
    } else {
        check!(
            !caps.watch_every_revision,
            "all 500 puts were delivered through a buffer of {BUFFER}: buffering is not bounded"
        );
        check!(
            delivered.len() <= BUFFER + 2,
            "{} events were delivered through a buffer of {BUFFER}: buffering is not bounded",
            delivered.len()
        );
        let live = put(&s, "k", "live").await?;
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(live)
        );
    }
    Ok(())
}

/// `stats().watches` rises by exactly the number of open watches (on the
/// store that opened them only) and returns to the baseline within
/// [`SLACK`] after they are dropped; the store keeps working.
pub async fn watch_dropped_stream_frees(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let other = ctx.store().await?;
    let base = s.stats().watches;
    let other_base = other.stats().watches;
    let mut first = vec![
        s.watch("a", WatchOptions::new()).await?,
        s.watch_tree("t", WatchOptions::new()).await?,
    ];
    let mut rest = vec![
        s.watch_tree("", WatchOptions::new()).await?,
        s.watch("b", WatchOptions::new()).await?,
        s.watch("a", WatchOptions::new()).await?,
    ];
    for w in first.iter_mut().chain(rest.iter_mut()) {
        read_initial(w, EVENT_TIMEOUT).await?;
    }
    check_eq!(s.stats().watches, base + 5, "open watches with 5 streams");
    check_eq!(
        other.stats().watches,
        other_base,
        "another client's open watches"
    );
    drop(first);
    wait_until(
        SLACK,
        "stats().watches falls by the 2 dropped streams",
        || {
            let n = s.stats().watches;
            async move { Ok(n == base + 3) }
        },
    )
    .await?;
    drop(rest);
    wait_until(SLACK, "stats().watches returns to its baseline", || {
        let n = s.stats().watches;
        async move { Ok(n == base) }
    })
    .await?;
    let mut w = s.watch("a", WatchOptions::new()).await?;
    read_initial(&mut w, EVENT_TIMEOUT).await?;
    let a = put(&s, "a", "v").await?;
    check_eq!(next_event(&mut w, EVENT_TIMEOUT).await?, WatchEvent::Put(a));
    Ok(())
}

/// A hundred watches on one store share its connections: opening them adds
/// only a few connections to `stats().connections`, and every one of them
/// delivers the put of the watched key.
pub async fn watch_many_share_connections(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut watches = vec![s.watch("k", WatchOptions::new()).await?];
    read_initial(&mut watches[0], EVENT_TIMEOUT).await?;
    let base = s.stats().connections;
    for i in 1..100 {
        let mut w = if i % 2 == 0 {
            s.watch("k", WatchOptions::new()).await?
        } else {
            s.watch_tree("", WatchOptions::new()).await?
        };
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        watches.push(w);
    }
    let conns = s.stats().connections;
    check!(
        conns <= base + 4,
        "100 watches use {conns} connections; one watch used {base}: watches do not share connections"
    );
    let k = put(&s, "k", "v").await?;
    for (i, w) in watches.iter_mut().enumerate() {
        check_eq!(
            next_event(w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(k.clone()),
            "watch #{i}"
        );
    }
    Ok(())
}

/// A watch on one client sees the writes and deletes another client makes
/// on the same root, with the revisions that client's calls returned.
pub async fn watch_sees_other_client_writes(ctx: &Ctx) -> CaseResult {
    let a = watch_store(ctx).await?;
    let b = ctx.store().await?;
    let mut wk = a.watch("k", WatchOptions::new()).await?;
    let mut wt = a.watch_tree("", WatchOptions::new()).await?;
    read_initial(&mut wk, EVENT_TIMEOUT).await?;
    read_initial(&mut wt, EVENT_TIMEOUT).await?;
    let k = put(&b, "k", "from b").await?;
    check_eq!(
        next_event(&mut wk, EVENT_TIMEOUT).await?,
        WatchEvent::Put(k.clone())
    );
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Put(k.clone())
    );
    let xy = put(&b, "x/y", "from b").await?;
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Put(xy)
    );
    check!(b.delete("k").await?);
    let d = expect_delete(&mut wk, "k", k.revision, EVENT_TIMEOUT).await?;
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Delete {
            key: "k".into(),
            revision: d
        }
    );
    Ok(())
}

/// `watch_tree("")` covers the whole root, top-level keys included, and
/// nothing of another root: neither an unrelated sibling root nor a root
/// whose name merely extends this one's.
pub async fn watch_empty_prefix_sees_whole_root(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let sibling = ctx.store_with_root_suffix("-other").await?;
    let longer = ctx.store_with_root_suffix("b").await?;
    let a = put(&s, "a", "mine").await?;
    let bc = put(&s, "b/c", "mine").await?;
    for o in [&sibling, &longer] {
        put(o, "a", "theirs").await?;
        put(o, "z", "theirs").await?;
    }
    let mut w = s.watch_tree("", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![a.clone(), bc]);
    for o in [&sibling, &longer] {
        put(o, "a", "theirs again").await?;
        put(o, "q/r", "theirs").await?;
        o.delete("z").await?;
    }
    let top = put(&s, "top", "mine").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(top)
    );
    let deep = put(&s, "m/n/o/p", "mine").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(deep)
    );
    check!(s.delete("a").await?);
    expect_delete(&mut w, "a", a.revision, EVENT_TIMEOUT).await?;
    for o in [&sibling, &longer] {
        put(o, "a", "theirs, last").await?;
    }
    expect_silence(&mut w, QUIET).await?;
    Ok(())
}

/// Watch arguments are canonicalised like keys (`/t/` is `t`, `/t/a/` is
/// `t/a`) and every event carries the canonical key.
pub async fn watch_canonical_keys(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut wt = s.watch_tree("/t/", WatchOptions::new()).await?;
    let mut wk = s.watch("/t/a/", WatchOptions::new()).await?;
    read_initial(&mut wt, EVENT_TIMEOUT).await?;
    read_initial(&mut wk, EVENT_TIMEOUT).await?;
    let rev = s.put("/t/a/", bytes("v"), PutOptions::new()).await?;
    let pair = KvPair::new("t/a", "v", rev);
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Put(pair.clone())
    );
    check_eq!(
        next_event(&mut wk, EVENT_TIMEOUT).await?,
        WatchEvent::Put(pair.clone())
    );
    check!(s.delete("t/a/").await?);
    let d = expect_delete(&mut wk, "t/a", rev, EVENT_TIMEOUT).await?;
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Delete {
            key: "t/a".into(),
            revision: d
        }
    );
    Ok(())
}

/// `watch` and `watch_tree` reject invalid keys with `InvalidKey` (an
/// empty key for `watch`, an empty segment, a `..` segment, a control
/// character); the empty prefix is valid for `watch_tree`.
pub async fn watch_invalid_key_rejected(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    check_err!(s.watch("", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch("/", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch("a//b", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch("a/../b", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch("a\u{0}b", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch_tree("a//b", WatchOptions::new()).await, InvalidKey);
    check_err!(s.watch_tree("./a", WatchOptions::new()).await, InvalidKey);
    let mut w = s.watch_tree("/", WatchOptions::new()).await?;
    read_initial(&mut w, EVENT_TIMEOUT).await?;
    let p = put(&s, "x", "v").await?;
    check_eq!(next_event(&mut w, EVENT_TIMEOUT).await?, WatchEvent::Put(p));
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
