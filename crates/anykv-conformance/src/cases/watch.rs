//! Cases: watches of one key and of a tree — initial state and `Synced`,
//! ordering, deletes, prefix boundaries, revisions, other clients' writes,
//! and key rules. The helpers shared by the watch case modules live here.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, PutOptions, Store, WatchEvent, WatchOptions, WatchStream};

use crate::{
    bytes, check, check_eq, check_err, expect_delete, expect_silence, next_event, read_initial,
    CaseResult, Ctx, Failure, EVENT_TIMEOUT,
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
pub(super) async fn watch_store(ctx: &Ctx) -> Result<Arc<dyn Store>, Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    Ok(s)
}

/// A plain put returning the pair it wrote.
pub(super) async fn put(s: &Arc<dyn Store>, key: &str, value: &str) -> Result<KvPair, Failure> {
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
pub(super) fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, Failure> {
    r.map_err(|e| Failure::failed(format!("a task of the case failed: {e}")))
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
                    "each key deleted by delete_tree gets its own revision, above the \
                     previous one: Delete of {key:?} has revision {revision}, not above {last}"
                );
                check!(
                    deleted.insert(key.clone()),
                    "delete_tree gives one Delete per deleted key: Delete of {key:?} twice"
                );
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

/// Aborts a spawned task when the case ends.
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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
