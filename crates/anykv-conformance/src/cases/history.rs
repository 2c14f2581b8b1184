//! Cases: 16 independent clients make random calls on a few keys for a few
//! seconds; the recorded history must be linearizable (see
//! [`crate::linearizability`] for the model).
//!
//! The choices are seeded. A failure names its seed; setting the
//! environment variable `ANYKV_HISTORY_SEED` to it makes the same choices
//! again (the interleaving, and so the history, still depends on timing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anykv_core::{Bytes, Error, PutOptions, Store};
use tokio::task::JoinSet;

use crate::linearizability::{Checker, Observed, Op, Outcome, Recorder, Verdict};
use crate::{CaseResult, Ctx, Failure};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_history {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args history: [
            history_linearizable_registers,
            history_linearizable_with_reads,
        ] }
    };
}

/// How many clients run at once, each its own store.
const CLIENTS: usize = 16;

/// The keys, all under [`PREFIX`].
const KEYS: [&str; 4] = ["h/a", "h/b", "h/c", "h/d"];

/// The prefix `list` reads.
const PREFIX: &str = "h";

/// How long the clients run.
const DURATION: Duration = Duration::from_secs(3);

/// The most calls one client makes, however fast the backend.
const MAX_CALLS_PER_CLIENT: usize = 400;

/// The longest pause between two calls of one client; pauses are uniform
/// from none to this, so a client makes about 200–300 calls in
/// [`DURATION`] on a fast backend.
const MAX_PAUSE_MS: u64 = 20;

/// A call that takes longer than this is abandoned and recorded with an
/// unknown outcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// 16 clients make random `get`, `put`, create-only `atomic_put`,
/// `atomic_put` at a revision they read, `atomic_delete` and `delete` calls
/// on 4 keys for about 3 seconds (at most 400 calls each). Every key must
/// behave as one register: each call takes effect at one instant between
/// its start and its end, reads return the last write's value and
/// revision, compare-and-swaps succeed exactly at the key's revision and
/// report its real revision when they fail, revisions never repeat, and a
/// write that started after another (of any key) completed has the larger
/// revision.
pub async fn history_linearizable_registers(ctx: &Ctx) -> CaseResult {
    run(ctx, Mix::Registers).await
}

/// As [`history_linearizable_registers`], with `exists` and `list` of the
/// keys' prefix among the calls: each `list` must show, at one instant,
/// exactly the keys present then, with their values and revisions.
pub async fn history_linearizable_with_reads(ctx: &Ctx) -> CaseResult {
    run(ctx, Mix::WithReads).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Registers,
    WithReads,
}

/// One kind of call.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Exists,
    List,
    Put,
    Create,
    Swap,
    SwapDelete,
    Delete,
}

impl Mix {
    /// The calls and their weights (out of 100).
    fn weights(self) -> &'static [(Kind, u64)] {
        match self {
            Mix::Registers => &[
                (Kind::Get, 25),
                (Kind::Put, 20),
                (Kind::Create, 10),
                (Kind::Swap, 25),
                (Kind::SwapDelete, 10),
                (Kind::Delete, 10),
            ],
            Mix::WithReads => &[
                (Kind::Get, 10),
                (Kind::Exists, 10),
                (Kind::List, 20),
                (Kind::Put, 15),
                (Kind::Create, 10),
                (Kind::Swap, 20),
                (Kind::SwapDelete, 8),
                (Kind::Delete, 7),
            ],
        }
    }

    fn pick(self, roll: u64) -> Kind {
        let mut left = roll % 100;
        for &(kind, weight) in self.weights() {
            if left < weight {
                return kind;
            }
            left -= weight;
        }
        Kind::Get
    }
}

/// SplitMix64: a small, well-mixed, seedable generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The run's seed: `ANYKV_HISTORY_SEED` if set, else from the clock.
fn seed() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    if let Some(s) = std::env::var("ANYKV_HISTORY_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return s;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ N.fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

async fn run(ctx: &Ctx, mix: Mix) -> CaseResult {
    let seed = seed();
    let mut stores = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        stores.push(ctx.store().await?);
    }
    let recorder = Recorder::new();
    let started = Instant::now();
    let deadline = started + DURATION;
    let mut tasks = JoinSet::new();
    for (i, store) in stores.into_iter().enumerate() {
        let recorder = recorder.clone();
        let rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
        tasks.spawn(client(i, store, recorder, rng, mix, deadline));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| Failure::failed(format!("seed {seed}: a client task failed: {e}")))?;
    }
    let ran = started.elapsed();
    let history = recorder.history();
    let calls = history.len();
    let verdict = tokio::task::spawn_blocking(move || Checker::new().check(&history))
        .await
        .map_err(|e| Failure::failed(format!("seed {seed}: the checker failed: {e}")))?;
    let what = format!(
        "seed {seed} (ANYKV_HISTORY_SEED={seed} repeats the choices): {calls} calls by \
         {CLIENTS} clients in {:.2}s",
        ran.as_secs_f64()
    );
    match verdict {
        Verdict::Ok => {}
        Verdict::Violation(v) => return Err(Failure::failed(format!("{what}: {v}"))),
        Verdict::TooLarge { .. } => {
            return Err(Failure::failed(format!(
                "{what}: the history could not be checked: {verdict}"
            )))
        }
    }
    crate::check!(
        calls >= CLIENTS,
        "{what}: too few calls were made to check anything"
    );
    Ok(())
}

/// One client: random calls until the deadline or its call budget,
/// recording each. Compare-and-swaps use the last revision this client saw
/// of the key.
async fn client(
    id: usize,
    store: Arc<dyn Store>,
    recorder: Recorder,
    mut rng: Rng,
    mix: Mix,
    deadline: Instant,
) {
    let mut seen: HashMap<&'static str, u64> = HashMap::new();
    for n in 0..MAX_CALLS_PER_CLIENT {
        if Instant::now() >= deadline {
            break;
        }
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let value = Bytes::from(format!("c{id}-{n}"));
        let expected = seen.get(key).copied().unwrap_or(1);
        let s = &store;
        match mix.pick(rng.next()) {
            Kind::Get => {
                let r = call(&recorder, id, Op::Get(key.into()), s.get(key)).await;
                if let Some(Ok(Some(kv))) = r {
                    seen.insert(key, kv.revision);
                }
            }
            Kind::Exists => {
                call(&recorder, id, Op::Exists(key.into()), s.exists(key)).await;
            }
            Kind::List => {
                let r = call(&recorder, id, Op::List(PREFIX.into()), s.list(PREFIX)).await;
                if let Some(Ok(pairs)) = r {
                    for k in KEYS {
                        if let Some(kv) = pairs.iter().find(|kv| kv.key == k) {
                            seen.insert(k, kv.revision);
                        }
                    }
                }
            }
            Kind::Put => {
                let op = Op::Put(key.into(), value.clone());
                let r = call(&recorder, id, op, s.put(key, value, PutOptions::new())).await;
                note_write(&mut seen, key, r);
            }
            Kind::Create => {
                let op = Op::AtomicPut {
                    key: key.into(),
                    value: value.clone(),
                    expected: None,
                };
                let fut = s.atomic_put(key, value, None, PutOptions::new());
                let r = call(&recorder, id, op, fut).await;
                note_write(&mut seen, key, r);
            }
            Kind::Swap => {
                let op = Op::AtomicPut {
                    key: key.into(),
                    value: value.clone(),
                    expected: Some(expected),
                };
                let fut = s.atomic_put(key, value, Some(expected), PutOptions::new());
                let r = call(&recorder, id, op, fut).await;
                note_write(&mut seen, key, r);
            }
            Kind::SwapDelete => {
                let op = Op::AtomicDelete {
                    key: key.into(),
                    expected,
                };
                let r = call(&recorder, id, op, s.atomic_delete(key, expected)).await;
                if let Some(Err(Error::KeyModified { actual, .. })) = r {
                    seen.insert(key, actual);
                }
            }
            Kind::Delete => {
                call(&recorder, id, Op::Delete(key.into()), s.delete(key)).await;
            }
        }
        let pause = rng.below(MAX_PAUSE_MS + 1);
        if pause == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Remembers the revision a write returned, or the one a failed swap
/// reported.
fn note_write(
    seen: &mut HashMap<&'static str, u64>,
    key: &'static str,
    r: Option<anykv_core::Result<u64>>,
) {
    match r {
        Some(Ok(rev)) | Some(Err(Error::KeyModified { actual: rev, .. })) => {
            seen.insert(key, rev);
        }
        _ => {}
    }
}

/// Makes one recorded call; `None` if it did not return within
/// [`CALL_TIMEOUT`] (recorded as unknown).
async fn call<T: Observed>(
    recorder: &Recorder,
    client: usize,
    op: Op,
    fut: impl std::future::Future<Output = anykv_core::Result<T>>,
) -> Option<anykv_core::Result<T>> {
    let call = recorder.begin(client, op);
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(result) => {
            call.end_with(&result);
            Some(result)
        }
        Err(_) => {
            call.end(Outcome::Unknown);
            None
        }
    }
}
