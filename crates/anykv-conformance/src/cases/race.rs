//! Cases: races between independent clients on one root: compare-and-swap
//! counters, create and delete races, and concurrent writes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anykv_core::{Bytes, ErrorKind, KvPair, PutOptions, Store};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::{bytes, check, check_eq, check_err, CaseResult, Ctx, Failure};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_race {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args race: [
            race_cas_counter_16_tasks,
            race_create_one_winner,
            race_delete_one_winner,
            race_concurrent_puts_distinct_revisions,
            race_concurrent_puts_same_key_last_revision_wins,
        ] }
    };
}

/// How many clients race in each case.
const CLIENTS: usize = 16;

/// Opens `CLIENTS` independent clients on the case's root.
async fn clients(ctx: &Ctx) -> Result<Vec<Arc<dyn Store>>, Failure> {
    let mut v = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        v.push(ctx.store().await?);
    }
    Ok(v)
}

/// Runs `f(i, client)` on every client at once (released together by a
/// barrier) and returns the results in client order.
async fn race<T, F, Fut>(stores: Vec<Arc<dyn Store>>, f: F) -> Result<Vec<T>, Failure>
where
    T: Send + 'static,
    F: Fn(usize, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(stores.len()));
    let mut tasks = JoinSet::new();
    for (i, s) in stores.into_iter().enumerate() {
        let barrier = barrier.clone();
        let fut = f(i, s);
        tasks.spawn(async move {
            barrier.wait().await;
            (i, fut.await)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.map_err(|e| Failure::failed(format!("a racing task failed: {e}")))?;
        results.insert(i, r);
    }
    Ok(results.into_values().collect())
}

/// The counter's value as a number.
fn counter_value(kv: &KvPair) -> Result<u64, Failure> {
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| Failure::failed(format!("the counter holds {:?}", kv.value)))
}

/// One client's share of the counter: `n` successful increments by
/// compare-and-swap, retrying on `KeyModified`. Returns (value written,
/// revision returned) per success.
async fn increment(s: Arc<dyn Store>, n: usize) -> Result<Vec<(u64, u64)>, Failure> {
    let mut done = Vec::with_capacity(n);
    let mut attempts = 0u32;
    while done.len() < n {
        attempts += 1;
        check!(
            attempts <= 100_000,
            "no progress: {} increments after {attempts} attempts",
            done.len()
        );
        let kv = s
            .get("counter")
            .await?
            .ok_or_else(|| Failure::failed("the counter vanished"))?;
        let next = counter_value(&kv)? + 1;
        // Let the other clients run between the read and the swap, as
        // network latency would: a swap that ignores the revision then
        // loses updates.
        tokio::task::yield_now().await;
        match s
            .atomic_put(
                "counter",
                bytes(next.to_string()),
                Some(kv.revision),
                PutOptions::new(),
            )
            .await
        {
            Ok(rev) => {
                check!(
                    rev > kv.revision,
                    "swap to {next}: revision {rev} is not above {}",
                    kv.revision
                );
                done.push((next, rev));
            }
            Err(e) if e.kind() == ErrorKind::KeyModified => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// 16 clients each make 20 successful compare-and-swap increments of one
/// counter, retrying on `KeyModified`: no update is lost (the final value
/// is exactly 320), every value 1..=320 was written exactly once, every
/// successful swap returned a distinct revision, and revisions increase
/// with the value.
pub async fn race_cas_counter_16_tasks(ctx: &Ctx) -> CaseResult {
    const N: usize = 20;
    let s = ctx.store().await?;
    let r0 = s.put("counter", bytes("0"), PutOptions::new()).await?;
    let stores = clients(ctx).await?;
    let results = race(stores, |_, s| increment(s, N)).await?;
    let mut writes = Vec::new();
    for r in results {
        writes.extend(r?);
    }
    let total = (CLIENTS * N) as u64;
    check_eq!(writes.len() as u64, total, "successful swaps");
    writes.sort();
    let values: Vec<u64> = writes.iter().map(|(v, _)| *v).collect();
    check_eq!(values, (1..=total).collect::<Vec<u64>>(), "values written");
    let distinct: HashSet<u64> = writes.iter().map(|(_, r)| *r).collect();
    check_eq!(distinct.len() as u64, total, "distinct revisions");
    let mut last = r0;
    for (v, r) in &writes {
        check!(*r > last, "value {v} has revision {r}, not above {last}");
        last = *r;
    }
    check_eq!(
        s.get("counter").await?,
        Some(KvPair::new("counter", total.to_string(), last))
    );
    Ok(())
}

/// 16 clients create one key with `atomic_put(None)` at once: exactly one
/// succeeds, the 15 others fail with `KeyExists`, and the stored pair is
/// the winner's value with the winner's revision.
pub async fn race_create_one_winner(ctx: &Ctx) -> CaseResult {
    let stores = clients(ctx).await?;
    let observer = ctx.store().await?;
    let results = race(stores, |i, s| async move {
        s.atomic_put(
            "leader",
            bytes(format!("client-{i}")),
            None,
            PutOptions::new(),
        )
        .await
    })
    .await?;
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(rev) => winners.push((i, rev)),
            Err(e) => losers.push(Err::<u64, _>(e)),
        }
    }
    check_eq!(winners.len(), 1, "winners {winners:?}");
    for loser in losers {
        check_err!(loser, KeyExists);
    }
    let (w, rev) = winners[0];
    let want = vec![KvPair::new("leader", format!("client-{w}"), rev)];
    check_eq!(observer.list("").await?, want);
    Ok(())
}

/// 16 clients compare-and-delete one key at its current revision at once:
/// exactly one succeeds and the others get `KeyNotFound`. 16 plain deletes
/// of one key at once: exactly one returns true. Other keys stay.
pub async fn race_delete_one_winner(ctx: &Ctx) -> CaseResult {
    let observer = ctx.store().await?;
    let rb = observer
        .put("bystander", bytes("b"), PutOptions::new())
        .await?;
    let r = observer
        .put("victim", bytes("v"), PutOptions::new())
        .await?;
    let results = race(clients(ctx).await?, |_, s| async move {
        s.atomic_delete("victim", r).await
    })
    .await?;
    let mut wins = 0;
    for res in results {
        match res {
            Ok(()) => wins += 1,
            lost => {
                check_err!(lost, KeyNotFound);
            }
        }
    }
    check_eq!(wins, 1, "successful compare-and-deletes");
    check_eq!(observer.get("victim").await?, None);

    observer
        .put("victim2", bytes("v"), PutOptions::new())
        .await?;
    let results = race(clients(ctx).await?, |_, s| async move {
        s.delete("victim2").await
    })
    .await?;
    let mut trues = 0;
    for res in results {
        if res? {
            trues += 1;
        }
    }
    check_eq!(trues, 1, "deletes that returned true");
    check_eq!(
        observer.list("").await?,
        vec![KvPair::new("bystander", "b", rb)]
    );
    Ok(())
}

/// 16 clients each put 20 different keys at once: every returned revision
/// is distinct, each client's revisions increase, and `list` shows every
/// key with the revision its put returned.
pub async fn race_concurrent_puts_distinct_revisions(ctx: &Ctx) -> CaseResult {
    const N: usize = 20;
    let results = race(clients(ctx).await?, |i, s| async move {
        let mut pairs = Vec::with_capacity(N);
        for j in 0..N {
            let key = format!("p/{i:02}/{j:02}");
            let rev = s.put(&key, bytes(key.clone()), PutOptions::new()).await?;
            pairs.push(KvPair::new(key.clone(), key, rev));
        }
        Ok::<_, anykv_core::Error>(pairs)
    })
    .await?;
    let mut all = Vec::new();
    for r in results {
        let pairs = r?;
        for w in pairs.windows(2) {
            check!(
                w[1].revision > w[0].revision,
                "sequential puts {} then {}: revisions {} then {}",
                w[0].key,
                w[1].key,
                w[0].revision,
                w[1].revision
            );
        }
        all.extend(pairs);
    }
    let distinct: HashSet<u64> = all.iter().map(|kv| kv.revision).collect();
    check_eq!(distinct.len(), CLIENTS * N, "distinct revisions");
    check!(!distinct.contains(&0), "a put returned revision 0");
    all.sort_by(|a, b| a.key.cmp(&b.key));
    check_eq!(ctx.store().await?.list("p").await?, all);
    Ok(())
}

/// 16 clients put one key at once, 5 times each: the returned revisions
/// are distinct, and the stored pair is the write with the largest
/// revision (its value and revision).
pub async fn race_concurrent_puts_same_key_last_revision_wins(ctx: &Ctx) -> CaseResult {
    const N: usize = 5;
    let results = race(clients(ctx).await?, |i, s| async move {
        let mut writes = Vec::with_capacity(N);
        for j in 0..N {
            let value = Bytes::from(format!("client-{i}-write-{j}"));
            let rev = s.put("shared", value.clone(), PutOptions::new()).await?;
            writes.push(KvPair::new("shared", value, rev));
        }
        Ok::<_, anykv_core::Error>(writes)
    })
    .await?;
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    let distinct: HashSet<u64> = all.iter().map(|kv| kv.revision).collect();
    check_eq!(distinct.len(), CLIENTS * N, "distinct revisions");
    let last = all
        .iter()
        .max_by_key(|kv| kv.revision)
        .cloned()
        .ok_or_else(|| Failure::failed("no writes"))?;
    let s = ctx.store().await?;
    check_eq!(s.get("shared").await?, Some(last.clone()));
    check_eq!(s.list("").await?, vec![last]);
    Ok(())
}
