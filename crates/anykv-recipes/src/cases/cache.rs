//! Cases of the list-then-watch [`Cache`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{KvPair, PutOptions, Store};
use futures::FutureExt;

use super::{ensure, ensure_eq, eventually, CaseResult, Ctx, Failure, Tap, WAIT};
use crate::{Cache, CacheEvent, CacheEvents};

/// Replays a subscriber's events, checking that each applies to the state
/// it has: `Init` only before `InitDone`, `Apply` only with a newer
/// revision, `Delete` only of an entry present as announced.
#[derive(Default)]
struct Replay {
    state: BTreeMap<String, KvPair>,
    initialised: bool,
    changes: Vec<CacheEvent>,
}

impl Replay {
    fn apply(&mut self, event: CacheEvent) -> CaseResult {
        match &event {
            CacheEvent::Init(kv) => {
                ensure(!self.initialised, || format!("Init after InitDone: {kv:?}"))?;
                self.state.insert(kv.key.clone(), kv.clone());
            }
            CacheEvent::InitDone { .. } => {
                ensure(!self.initialised, || "InitDone twice".into())?;
                self.initialised = true;
            }
            CacheEvent::Apply(kv) => {
                let old = self.state.get(&kv.key).map(|o| o.revision);
                ensure(old.is_none_or(|o| o < kv.revision), || {
                    format!("Apply of {kv:?} again (held revision {old:?}): emitted twice")
                })?;
                self.state.insert(kv.key.clone(), kv.clone());
                self.changes.push(event);
            }
            CacheEvent::Delete { pair, .. } => {
                let held = self.state.remove(&pair.key);
                ensure(held.as_ref() == Some(pair), || {
                    format!("Delete of {pair:?}, which the subscriber held as {held:?}")
                })?;
                self.changes.push(event);
            }
            CacheEvent::Stale { .. } | CacheEvent::Resynced { .. } => self.changes.push(event),
        }
        Ok(())
    }

    /// Applies every event already queued.
    fn drain(&mut self, events: &mut CacheEvents) -> CaseResult {
        while let Some(Some(event)) = futures::StreamExt::next(events).now_or_never() {
            self.apply(event)?;
        }
        Ok(())
    }

    fn pairs(&self) -> Vec<KvPair> {
        self.state.values().cloned().collect()
    }

    /// The keys of the `Apply` and `Delete` events seen, `+key` and
    /// `-key`, sorted.
    fn change_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .changes
            .iter()
            .filter_map(|e| match e {
                CacheEvent::Apply(kv) => Some(format!("+{}", kv.key)),
                CacheEvent::Delete { pair, .. } => Some(format!("-{}", pair.key)),
                _ => None,
            })
            .collect();
        keys.sort();
        keys
    }
}

/// Waits until the cache (and the replay of its events) equals
/// `store.list(prefix)`.
async fn converge(
    cache: &Cache,
    store: &Arc<dyn Store>,
    prefix: &str,
    replay: &mut Replay,
    events: &mut CacheEvents,
) -> CaseResult {
    let expected = store.list(prefix).await?;
    let waited = eventually(WAIT, "the cache to equal list()", || {
        let same = cache.list() == expected && !cache.is_stale();
        async move { same.then_some(()) }
    })
    .await;
    replay.drain(events)?;
    if waited.is_err() {
        return Err(Failure::Failed(format!(
            "the cache did not come to equal list(): it holds {:?}, list() is {expected:?}",
            cache.list()
        )));
    }
    ensure_eq(
        replay.pairs(),
        expected,
        "the replayed events against list()",
    )
}

async fn seed(store: &Arc<dyn Store>, keys: &[&str]) -> anykv_core::Result<()> {
    for key in keys {
        store
            .put(key, format!("{key}-v1").into(), PutOptions::new())
            .await?;
    }
    Ok(())
}

/// After many writers' puts, deletes and `delete_tree`s, the cache equals
/// `list`, and replaying its events gives the same state with nothing
/// emitted twice.
pub async fn cache_matches_list_after_churn(ctx: &Ctx) -> CaseResult {
    let store = ctx.open().await?;
    seed(&store, &["data/a", "data/b", "data/sub/c", "other/x"]).await?;
    let cache = Cache::open(store.clone(), "data", ctx.cache_options())?;
    let mut events = cache.subscribe();
    tokio::time::timeout(WAIT, cache.ready())
        .await
        .map_err(|_| Failure::Failed("the cache was not ready within 20 s".into()))??;
    let mut writers: Vec<tokio::task::JoinHandle<anykv_core::Result<()>>> = Vec::new();
    for w in 0..3u64 {
        let writer = ctx.open().await?;
        writers.push(tokio::spawn(async move {
            for i in 0..40u64 {
                let n = (i * 7 + w * 3) % 12;
                let key = if n % 4 == 0 {
                    format!("data/sub/k{n}")
                } else {
                    format!("data/k{n}")
                };
                match i % 5 {
                    0..=2 => writer
                        .put(&key, format!("{w}-{i}").into(), PutOptions::new())
                        .await
                        .map(|_| ())?,
                    3 => writer.delete(&key).await.map(|_| ())?,
                    _ if w == 0 && i == 24 => writer.delete_tree("data/sub").await.map(|_| ())?,
                    _ => writer
                        .put("other/y", "noise".into(), PutOptions::new())
                        .await
                        .map(|_| ())?,
                }
            }
            anykv_core::Result::Ok(())
        }));
    }
    for writer in writers {
        writer
            .await
            .map_err(|e| Failure::Failed(format!("a writer panicked: {e}")))??;
    }
    let mut replay = Replay::default();
    converge(&cache, &store, "data", &mut replay, &mut events).await?;
    ensure(replay.initialised, || "no InitDone".into())?;
    ensure(
        cache.list().iter().all(|kv| kv.key.starts_with("data/")),
        || "the cache holds keys outside its prefix".into(),
    )
}

/// Runs the interruption: the cache is cut off (a partition), the data
/// changes meanwhile (and, with `compact`, its history is compacted), and
/// when it is back the cache emits exactly the differences.
async fn interrupted(ctx: &Ctx, compact: bool) -> CaseResult {
    let real = ctx.open().await?;
    let writer = ctx.open().await?;
    seed(&writer, &["data/a", "data/b", "data/c", "data/d"]).await?;
    let tap = Tap::new(real.clone());
    let cache = Cache::open(tap.clone(), "data", ctx.cache_options())?;
    let mut events = cache.subscribe();
    let mut replay = Replay::default();
    converge(&cache, &writer, "data", &mut replay, &mut events).await?;

    tap.set_down(true);
    eventually(WAIT, "the cache to say it is stale", || {
        let stale = cache.is_stale();
        async move { stale.then_some(()) }
    })
    .await?;
    let before = cache.list();
    writer
        .put("data/b", "b-v2".into(), PutOptions::new())
        .await?;
    writer.delete("data/c").await?;
    let last = writer
        .put("data/e", "e-v1".into(), PutOptions::new())
        .await?;
    if compact {
        super::hook(ctx.factory().compact(&real, last).await)?;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    ensure_eq(cache.list(), before, "what a stale cache serves")?;
    tap.set_down(false);
    converge(&cache, &writer, "data", &mut replay, &mut events).await?;
    ensure_eq(
        replay.change_keys(),
        vec!["+data/b".to_string(), "+data/e".into(), "-data/c".into()],
        "the changes emitted after the interruption",
    )?;
    ensure(
        matches!(replay.changes.first(), Some(CacheEvent::Stale { .. })),
        || {
            format!(
                "the first event after the cut was not Stale: {:?}",
                replay.changes.first()
            )
        },
    )?;
    ensure(
        replay
            .changes
            .iter()
            .any(|e| matches!(e, CacheEvent::Resynced { .. })),
        || "no Resynced after the cut".into(),
    )
}

/// A cache cut off from its backend serves its last state and says it is
/// stale; when it is back it emits only the differences (what changed
/// meanwhile), each once, and equals `list` again.
pub async fn cache_diffs_after_interruption(ctx: &Ctx) -> CaseResult {
    interrupted(ctx, false).await
}

/// When the history it would resume from was compacted meanwhile, the
/// cache re-lists and emits only the differences, each once.
pub async fn cache_relists_after_compacted(ctx: &Ctx) -> CaseResult {
    interrupted(ctx, true).await
}

/// While the server is frozen, the cache says it is stale and keeps
/// serving its last state; once the server answers it is current again
/// and follows new writes.
pub async fn cache_stale_while_server_paused(ctx: &Ctx) -> CaseResult {
    let store = ctx.open().await?;
    seed(&store, &["data/a", "data/b"]).await?;
    let cache = Cache::open(store.clone(), "data", ctx.cache_options())?;
    let mut events = cache.subscribe();
    let mut replay = Replay::default();
    converge(&cache, &store, "data", &mut replay, &mut events).await?;
    let before = cache.list();
    super::hook(ctx.factory().pause_server().await)?;
    let during = async {
        eventually(WAIT, "the cache to say it is stale", || {
            let stale = cache.is_stale();
            async move { stale.then_some(()) }
        })
        .await?;
        ensure_eq(cache.list(), before.clone(), "what a stale cache serves")
    }
    .await;
    ctx.factory().resume_server().await?;
    during?;
    eventually(
        Duration::from_secs(40),
        "the cache to be current again",
        || {
            let fresh = !cache.is_stale();
            async move { fresh.then_some(()) }
        },
    )
    .await?;
    let rev = eventually(WAIT, "a write after the pause", || {
        let store = store.clone();
        async move {
            store
                .put("data/c", "c".into(), PutOptions::new())
                .await
                .ok()
        }
    })
    .await?;
    eventually(WAIT, "the cache to see the write after the pause", || {
        let seen = cache.get("data/c").map(|kv| kv.revision);
        async move { (seen == Some(rev)).then_some(()) }
    })
    .await?;
    converge(&cache, &store, "data", &mut replay, &mut events).await
}
