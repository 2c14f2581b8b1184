//! Cases: watches under sustained writes. Eight clients write and delete
//! under one prefix while watches, opened before and during the writes,
//! must stay exact, ordered, in sync and live — not starved until the
//! writers stop.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{Bytes, PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{bytes, check, check_eq, next_event, CaseResult, Ctx, Failure, EVENT_TIMEOUT};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_load {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args load: [
            load_watch_replays_to_list,
            load_watch_every_write_exactly,
            load_watch_opened_during_writes_syncs,
            load_watch_large_tree_while_writing,
            load_watch_resume_while_writing,
        ] }
    };
}

/// How many clients write at once.
pub const WRITERS: usize = 8;

/// How many writes each writer makes in the fixed-size cases.
pub const WRITES_PER_WRITER: usize = 500;

/// The longest the open-ended writers run.
const WRITERS_MAX: Duration = Duration::from_secs(40);

/// What the writers did: every successful put's (key, revision, value),
/// and how many deletes removed a key.
#[derive(Default)]
struct Written {
    puts: Vec<(String, u64, Bytes)>,
    deletes: u64,
}

/// Writers on their own clients, each making `ops` writes (or, with
/// `ops = None`, writing until `stop` or [`WRITERS_MAX`]) on `keys` keys
/// under `prefix`, 80 % puts and 20 % deletes, all writers on the same keys.
struct Writers {
    tasks: JoinSet<Result<Written, Failure>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
}

impl Writers {
    async fn start(
        ctx: &Ctx,
        prefix: &str,
        keys: usize,
        ops: Option<usize>,
    ) -> Result<Writers, Failure> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..WRITERS {
            let s = ctx.store().await?;
            let (stop, done, prefix) = (stop.clone(), done.clone(), prefix.to_owned());
            tasks.spawn(async move {
                let mut written = Written::default();
                let started = Instant::now();
                let mut i = 0usize;
                let mut x = (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                loop {
                    match ops {
                        Some(n) if i >= n => break,
                        None if stop.load(Ordering::Relaxed) || started.elapsed() > WRITERS_MAX => {
                            break
                        }
                        _ => {}
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("{prefix}/k{:03}", x % keys as u64);
                    if x.is_multiple_of(5) {
                        if s.delete(&key).await? {
                            written.deletes += 1;
                        }
                    } else {
                        let value = bytes(format!("w{w}-{i}"));
                        let rev = s.put(&key, value.clone(), PutOptions::new()).await?;
                        written.puts.push((key, rev, value));
                    }
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                    // An in-process backend never waits: let the watchers
                    // and the case run between writes.
                    tokio::task::yield_now().await;
                }
                Ok(written)
            });
        }
        Ok(Writers { tasks, stop, done })
    }

    fn running(&self) -> bool {
        !self.tasks.is_empty() && !self.stop.load(Ordering::Relaxed)
    }

    async fn wait_for_writes(&self, n: u64) -> CaseResult {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while self.done.load(Ordering::Relaxed) < n {
            check!(
                Instant::now() < deadline,
                "the writers made fewer than {n} writes in {EVENT_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Written, Failure> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        while let Some(joined) = self.tasks.join_next().await {
            let w = joined.map_err(|e| Failure::failed(format!("a writer panicked: {e}")))??;
            all.puts.extend(w.puts);
            all.deletes += w.deletes;
        }
        let mut revisions: Vec<u64> = all.puts.iter().map(|(_, r, _)| *r).collect();
        revisions.sort_unstable();
        revisions.dedup();
        check!(
            revisions.len() == all.puts.len() && revisions.first().is_none_or(|r| *r > 0),
            "{} acknowledged puts returned only {} distinct non-zero revisions",
            all.puts.len(),
            revisions.len()
        );
        Ok(all)
    }
}

/// A watch's view, replayed: the state it describes and what it saw.
#[derive(Default)]
struct Replay {
    state: BTreeMap<String, (Bytes, u64)>,
    last: u64,
    synced: bool,
    put_revisions: Vec<u64>,
    deletes: u64,
    seen: HashSet<(String, u64)>,
}

impl Replay {
    /// Applies one event, checking order and duplicates after `Synced`.
    fn apply(&mut self, ev: WatchEvent) -> CaseResult {
        match ev {
            WatchEvent::Synced { revision } => {
                check!(
                    !self.synced,
                    "a second Synced at {revision} with no reconnect"
                );
                self.synced = true;
                self.last = self.last.max(revision);
            }
            WatchEvent::Put(kv) => {
                check!(
                    self.seen.insert((kv.key.clone(), kv.revision)),
                    "the event Put {} at {} came twice",
                    kv.key,
                    kv.revision
                );
                if self.synced {
                    check!(
                        kv.revision > self.last,
                        "Put {} at revision {} after revision {}",
                        kv.key,
                        kv.revision,
                        self.last
                    );
                    self.last = kv.revision;
                    self.put_revisions.push(kv.revision);
                }
                self.state.insert(kv.key, (kv.value, kv.revision));
            }
            WatchEvent::Delete { key, revision } => {
                check!(self.synced, "Delete {key} at {revision} before Synced");
                check!(
                    revision > self.last,
                    "Delete {key} at revision {revision} after revision {}",
                    self.last
                );
                check!(
                    self.seen.insert((key.clone(), revision)),
                    "the event Delete {key} at {revision} came twice"
                );
                self.last = revision;
                self.deletes += 1;
                self.state.remove(&key);
            }
        }
        Ok(())
    }

    /// Reads events until the replayed state equals `list(prefix)` and
    /// the last event is at or past the store's revision when listed.
    async fn converge(
        &mut self,
        w: &mut WatchStream,
        s: &Arc<dyn Store>,
        prefix: &str,
        within: Duration,
    ) -> CaseResult {
        let deadline = Instant::now() + within;
        let expected: BTreeMap<String, (Bytes, u64)> = s
            .list(prefix)
            .await?
            .into_iter()
            .map(|p| (p.key, (p.value, p.revision)))
            .collect();
        check!(
            !expected.is_empty(),
            "list({prefix:?}) is empty after thousands of puts under it"
        );
        loop {
            if self.synced && self.state == expected {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::failed(format!(
                    "the watch's replay ({} keys) never matched list({prefix:?}) ({} keys) \
                     within {within:?}; differing keys: {:?}",
                    self.state.len(),
                    expected.len(),
                    differing(&self.state, &expected)
                )));
            }
            let ev = next_event(w, left.min(EVENT_TIMEOUT)).await?;
            self.apply(ev)?;
        }
    }
}

fn differing(
    a: &BTreeMap<String, (Bytes, u64)>,
    b: &BTreeMap<String, (Bytes, u64)>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .cloned()
        .collect()
}

async fn watch_store(ctx: &Ctx) -> Result<Arc<dyn Store>, Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    Ok(s)
}

/// Applies the watch's events while `fut` runs; returns its output.
async fn drain_while<F: std::future::Future>(
    w: &mut WatchStream,
    replay: &mut Replay,
    fut: F,
) -> Result<F::Output, Failure> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            item = futures::StreamExt::next(w) => match item {
                Some(Ok(ev)) => replay.apply(ev)?,
                Some(Err(e)) => {
                    return Err(Failure::failed(format!(
                        "the watch failed under load ({}): {e}",
                        e.kind()
                    )))
                }
                None => return Err(Failure::failed("the watch ended under load")),
            },
        }
    }
}

/// Opens a tree watch on `t` and reads it up to `Synced`.
async fn synced_watch(s: &Arc<dyn Store>) -> Result<(WatchStream, Replay), Failure> {
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let mut replay = Replay::default();
    while !replay.synced {
        replay.apply(next_event(&mut w, EVENT_TIMEOUT).await?)?;
    }
    Ok((w, replay))
}

/// A tree watch opened before 8 writers make 500 puts and deletes each:
/// after `Synced` its revisions strictly increase, no event comes twice,
/// and replaying it gives exactly `list(prefix)` when the writes end.
pub async fn load_watch_replays_to_list(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let (mut w, mut replay) = synced_watch(&s).await?;
    let writers = Writers::start(ctx, "t", 32, Some(WRITES_PER_WRITER)).await?;
    let written = drain_while(&mut w, &mut replay, writers.finish()).await??;
    check_eq!(
        written.puts.len() + written.deletes as usize <= WRITERS * WRITES_PER_WRITER,
        true
    );
    replay.converge(&mut w, &s, "t", EVENT_TIMEOUT * 3).await
}

/// With `watch_every_revision`, a watch opened before the writers sees
/// exactly their successful writes: one `Put` per acknowledged put (the
/// same revisions) and one `Delete` per delete that removed a key.
pub async fn load_watch_every_write_exactly(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(
        s.capabilities().watch_every_revision,
        "watch_every_revision",
    )?;
    let (mut w, mut replay) = synced_watch(&s).await?;
    let writers = Writers::start(ctx, "t", 32, Some(WRITES_PER_WRITER)).await?;
    let written = drain_while(&mut w, &mut replay, writers.finish()).await??;
    let total = written.puts.len() + written.deletes as usize;
    let deadline = Instant::now() + EVENT_TIMEOUT * 3;
    while replay.put_revisions.len() + (replay.deletes as usize) < total {
        let left = deadline.saturating_duration_since(Instant::now());
        check!(
            !left.is_zero(),
            "the watch delivered {} Puts and {} Deletes of {} acknowledged puts and {} deletes",
            replay.put_revisions.len(),
            replay.deletes,
            written.puts.len(),
            written.deletes
        );
        replay.apply(next_event(&mut w, left.min(EVENT_TIMEOUT)).await?)?;
    }
    let mut expected: Vec<u64> = written.puts.iter().map(|(_, r, _)| *r).collect();
    expected.sort_unstable();
    check_eq!(
        replay.put_revisions.len(),
        expected.len(),
        "Put events against acknowledged puts"
    );
    check!(
        replay.put_revisions == expected,
        "the Put events' revisions are not exactly the acknowledged puts' revisions"
    );
    check_eq!(
        replay.deletes,
        written.deletes,
        "Delete events against deletes that removed a key"
    );
    crate::expect_silence(&mut w, Duration::from_millis(300)).await
}

/// A watch opened while 8 writers keep writing gets its `Synced` and then
/// live events (a marker key written by the case) while the writers are
/// still running — it is not starved until they stop — and converges to
/// `list(prefix)` when they do.
pub async fn load_watch_opened_during_writes_syncs(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let writers = Writers::start(ctx, "t", 32, None).await?;
    writers.wait_for_writes(50).await?;
    let opened = Instant::now();
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let mut replay = Replay::default();
    while !replay.synced {
        let left = EVENT_TIMEOUT.saturating_sub(opened.elapsed());
        check!(
            !left.is_zero(),
            "no Synced within {EVENT_TIMEOUT:?} of opening a watch during the writes"
        );
        replay.apply(next_event(&mut w, left).await?)?;
    }
    let synced_after = opened.elapsed();
    check!(
        writers.running(),
        "the writers stopped before the watch synced ({synced_after:?})"
    );
    let marker = s.put("t/marker", bytes("m"), PutOptions::new()).await?;
    let put_at = Instant::now();
    loop {
        let left = EVENT_TIMEOUT.saturating_sub(put_at.elapsed());
        check!(
            !left.is_zero(),
            "the marker's Put (revision {marker}) did not arrive within {EVENT_TIMEOUT:?} \
             while the writers ran"
        );
        let ev = next_event(&mut w, left).await?;
        let is_marker =
            matches!(&ev, WatchEvent::Put(kv) if kv.key == "t/marker" && kv.revision == marker);
        replay.apply(ev)?;
        if is_marker {
            break;
        }
    }
    check!(
        writers.running(),
        "the writers stopped before the live event arrived"
    );
    drain_while(&mut w, &mut replay, writers.finish()).await??;
    replay.converge(&mut w, &s, "t", EVENT_TIMEOUT * 3).await
}

/// A watch opened on a tree of 2,000 keys while writers rewrite it gets
/// the whole initial state and `Synced`, then converges to `list`.
pub async fn load_watch_large_tree_while_writing(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    const KEYS: usize = 2000;
    let mut fill = JoinSet::new();
    for part in 0..WRITERS {
        let c = ctx.store().await?;
        fill.spawn(async move {
            for i in (part..KEYS).step_by(WRITERS) {
                c.put(&format!("t/k{i:04}"), bytes("initial"), PutOptions::new())
                    .await?;
            }
            Ok::<_, anykv_core::Error>(())
        });
    }
    while let Some(r) = fill.join_next().await {
        r.map_err(|e| Failure::failed(format!("a filler panicked: {e}")))??;
    }
    // Writers on the first 64 keys of the same tree.
    let writers = Writers::start(ctx, "t", 64, None).await?;
    writers.wait_for_writes(50).await?;
    let mut w = s.watch_tree("t", WatchOptions::new()).await?;
    let mut replay = Replay::default();
    let opened = Instant::now();
    while !replay.synced {
        replay.apply(next_event(&mut w, EVENT_TIMEOUT).await?)?;
    }
    check!(
        replay.state.len() >= KEYS - 64,
        "the initial state had {} keys of at least {}",
        replay.state.len(),
        KEYS - 64
    );
    check!(
        writers.running() || opened.elapsed() < Duration::from_secs(1),
        "the writers stopped before the watch synced"
    );
    drain_while(&mut w, &mut replay, writers.finish()).await??;
    replay.converge(&mut w, &s, "t", EVENT_TIMEOUT * 3).await
}

/// A watch resumed from a revision while 8 writers make 500 writes each
/// continues exactly
/// where the first left off: the first stream's state up to revision `r`
/// plus the resumed stream's events equals `list` at the end, with
/// revisions strictly increasing across the two and nothing twice.
pub async fn load_watch_resume_while_writing(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let (mut w, mut replay) = synced_watch(&s).await?;
    // 4,000 writes in all: within every backend's default history.
    let writers = Writers::start(ctx, "t", 32, Some(WRITES_PER_WRITER)).await?;
    let mut live = 0;
    while live < 200 {
        replay.apply(next_event(&mut w, EVENT_TIMEOUT).await?)?;
        live += 1;
    }
    drop(w);
    let resumed_from = replay.last;
    let mut w = s
        .watch_tree("t", WatchOptions::from_revision(resumed_from))
        .await?;
    // The resumed stream has no initial state and no Synced.
    for _ in 0..100 {
        match next_event(&mut w, EVENT_TIMEOUT).await? {
            WatchEvent::Synced { revision } => {
                return Err(Failure::failed(format!(
                    "a resumed watch sent Synced at {revision}"
                )))
            }
            ev => replay.apply(ev)?,
        }
    }
    drain_while(&mut w, &mut replay, writers.finish()).await??;
    replay.converge(&mut w, &s, "t", EVENT_TIMEOUT * 3).await
}
