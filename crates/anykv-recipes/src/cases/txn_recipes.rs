//! Cases of the recipes built on transactions: [`Queue`], [`Semaphore`],
//! [`DoubleBarrier`] and [`Counter`](crate::Counter). On a backend without
//! transactions they report [`Failure::Unsupported`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::Store;
use futures::future::join_all;
use parking_lot::Mutex;

use super::{ensure, ensure_eq, CaseResult, Ctx, Failure, WAIT};
use crate::{DoubleBarrier, Queue, Semaphore};

/// Unsupported unless the backend runs transactions.
fn needs_txn(store: &Arc<dyn Store>) -> CaseResult {
    if store.capabilities().transactions {
        Ok(())
    } else {
        Err(Failure::Unsupported(format!(
            "{} has no transactions",
            store.capabilities().backend
        )))
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, Failure> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| Failure::Failed(format!("{what}: not within {WAIT:?}")))
}

fn failed(what: &str, e: anykv_core::Error) -> Failure {
    Failure::Failed(format!("{what} failed ({}): {e}", e.kind()))
}

/// Two producers push 60 items each while eight consumers on stores of
/// their own take them with `claim_wait`; then one stop item per consumer
/// is pushed. Every item is claimed by exactly one consumer, none is lost,
/// each consumer takes items in push order, and the queue ends empty.
pub async fn queue_items_claimed_exactly_once(ctx: &Ctx) -> CaseResult {
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: usize = 60;
    const CONSUMERS: usize = 8;
    let first = ctx.open().await?;
    needs_txn(&first)?;
    let claims: Mutex<Vec<(usize, u64, String)>> = Mutex::new(Vec::new());
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let consumers = (0..CONSUMERS).map(|c| {
        let (claims, problems) = (&claims, &problems);
        async move {
            let store = match ctx.open().await {
                Ok(store) => store,
                Err(e) => return problems.lock().push(format!("consumer {c}: {e}")),
            };
            let queue = match Queue::new(store, "jobs", ctx.queue_options()) {
                Ok(queue) => queue,
                Err(e) => return problems.lock().push(format!("consumer {c}: {e}")),
            };
            loop {
                match queue.claim_wait().await {
                    Ok(item) => {
                        let value = String::from_utf8_lossy(&item.value).into_owned();
                        let stop = value == "stop";
                        claims.lock().push((c, item.seq, value));
                        if stop {
                            return;
                        }
                    }
                    Err(e) => {
                        return problems
                            .lock()
                            .push(format!("consumer {c}'s claim_wait failed: {e}"))
                    }
                }
            }
        }
    });
    let producers = async {
        let pushes = (0..PRODUCERS).map(|p| async move {
            let store = ctx.open().await.map_err(|e| failed("open", e))?;
            let queue = Queue::new(store, "jobs", ctx.queue_options())
                .map_err(|e| failed("Queue::new", e))?;
            let mut seqs = Vec::new();
            for i in 0..PER_PRODUCER {
                let seq = queue
                    .push(format!("p{p}-{i}"))
                    .await
                    .map_err(|e| failed("push", e))?;
                seqs.push(seq);
            }
            Ok::<_, Failure>(seqs)
        });
        let mut all = Vec::new();
        for seqs in join_all(pushes).await {
            all.extend(seqs?);
        }
        // Behind every item: one stop item per consumer.
        let queue = Queue::new(first.clone(), "jobs", ctx.queue_options())
            .map_err(|e| failed("Queue::new", e))?;
        for _ in 0..CONSUMERS {
            queue.push("stop").await.map_err(|e| failed("push", e))?;
        }
        Ok::<_, Failure>(all)
    };
    let (pushed, _) = within(
        "pushing 120 items and claiming them all",
        futures::future::join(producers, join_all(consumers)),
    )
    .await?;
    let mut pushed = pushed?;
    let problems = problems.into_inner();
    ensure(problems.is_empty(), || problems.join("; "))?;
    pushed.sort_unstable();
    ensure_eq(
        pushed,
        (1..=(PRODUCERS * PER_PRODUCER) as u64).collect(),
        "the sequence numbers of the pushes",
    )?;
    let claims = claims.into_inner();
    let mut by_value: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (consumer, _, value) in claims.iter().filter(|c| c.2 != "stop") {
        by_value.entry(value).or_default().push(*consumer);
    }
    let twice: Vec<String> = by_value
        .iter()
        .filter(|(_, consumers)| consumers.len() > 1)
        .map(|(value, consumers)| format!("{value} by consumers {consumers:?}"))
        .collect();
    ensure(twice.is_empty(), || {
        format!("items claimed twice: {}", twice.join(", "))
    })?;
    let lost: Vec<String> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |i| format!("p{p}-{i}")))
        .filter(|v| !by_value.contains_key(v.as_str()))
        .collect();
    ensure(lost.is_empty(), || {
        format!("items never claimed: {}", lost.join(", "))
    })?;
    for c in 0..CONSUMERS {
        let seqs: Vec<u64> = claims
            .iter()
            .filter(|claim| claim.0 == c)
            .map(|claim| claim.1)
            .collect();
        ensure(seqs.windows(2).all(|w| w[0] < w[1]), || {
            format!("consumer {c} claimed out of push order: {seqs:?}")
        })?;
    }
    let queue =
        Queue::new(first, "jobs", ctx.queue_options()).map_err(|e| failed("Queue::new", e))?;
    ensure_eq(
        queue.len().await.map_err(|e| failed("len", e))?,
        0,
        "items left in the queue",
    )
}

/// One acquisition as the semaphore case saw it.
struct Held {
    worker: usize,
    slot: usize,
}

/// Eight workers take one of three permits, three rounds each, each on a
/// store of its own; every other holder is killed (its store closed) while
/// holding instead of releasing. Never more than three hold at once, every
/// acquisition completes, every killed holder's `lost()` fires. Then three
/// holders take every permit and are all killed: a fourth client gets a
/// permit, so the killed holders' permits are reused.
pub async fn semaphore_never_exceeds_permits_while_holders_killed(ctx: &Ctx) -> CaseResult {
    const PERMITS: usize = 3;
    const WORKERS: usize = 8;
    const ROUNDS: usize = 3;
    let first = ctx.open().await?;
    needs_txn(&first)?;
    let holding = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let log: Mutex<Vec<Held>> = Mutex::new(Vec::new());
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let workers = (0..WORKERS).map(|worker| {
        let (holding, most, log, problems) = (&holding, &most, &log, &problems);
        async move {
            for round in 0..ROUNDS {
                let outcome = async {
                    let store = ctx.open().await.map_err(|e| format!("open: {e}"))?;
                    let semaphore =
                        Semaphore::new(store.clone(), "pool", PERMITS, ctx.semaphore_options())
                            .map_err(|e| format!("Semaphore::new: {e}"))?;
                    let permit = tokio::time::timeout(WAIT, semaphore.acquire())
                        .await
                        .map_err(|_| format!("no permit within {WAIT:?}"))?
                        .map_err(|e| format!("acquire: {e}"))?;
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    log.lock().push(Held {
                        worker,
                        slot: permit.slot(),
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    if (worker + round) % 2 == 0 {
                        let lost = permit.lost_signal();
                        let _ = store.close().await;
                        tokio::time::timeout(WAIT, lost.wait())
                            .await
                            .map_err(|_| "lost() did not fire after its store closed")?;
                        drop(permit);
                    } else {
                        permit
                            .release()
                            .await
                            .map_err(|e| format!("release: {e}"))?;
                    }
                    Ok::<(), String>(())
                };
                if let Err(problem) = outcome.await {
                    problems
                        .lock()
                        .push(format!("worker {worker}, round {round}: {problem}"));
                    return;
                }
            }
        }
    });
    within("every worker's rounds", join_all(workers)).await?;
    let problems = problems.into_inner();
    let most = most.load(Ordering::SeqCst);
    ensure(most <= PERMITS, || {
        format!("{most} clients held a permit at once; the semaphore has {PERMITS}")
    })?;
    ensure(problems.is_empty(), || problems.join("; "))?;
    let log = log.into_inner();
    ensure_eq(log.len(), WORKERS * ROUNDS, "acquisitions")?;
    let bad: Vec<String> = log
        .iter()
        .filter(|h| h.slot >= PERMITS)
        .map(|h| format!("worker {} held slot {}", h.worker, h.slot))
        .collect();
    ensure(bad.is_empty(), || bad.join(", "))?;

    // Every permit held, every holder killed: the permits come back.
    let mut killed = Vec::new();
    for _ in 0..PERMITS {
        let store = ctx.open().await?;
        let semaphore = Semaphore::new(store.clone(), "pool", PERMITS, ctx.semaphore_options())
            .map_err(|e| failed("Semaphore::new", e))?;
        let permit = within("a free permit", semaphore.acquire())
            .await?
            .map_err(|e| failed("acquire", e))?;
        killed.push((store, permit));
    }
    let semaphore = Semaphore::new(first, "pool", PERMITS, ctx.semaphore_options())
        .map_err(|e| failed("Semaphore::new", e))?;
    ensure(
        semaphore
            .try_acquire()
            .await
            .map_err(|e| failed("try_acquire", e))?
            .is_none(),
        || "try_acquire took a permit while all were held".into(),
    )?;
    for (store, _) in &killed {
        let _ = store.close().await;
    }
    let permit = within("a killed holder's permit", semaphore.acquire())
        .await?
        .map_err(|e| failed("acquire", e))?;
    ensure(permit.slot() < PERMITS, || {
        format!("slot {} out of range", permit.slot())
    })?;
    ensure_eq(
        semaphore
            .holders()
            .await
            .map_err(|e| failed("holders", e))?,
        1,
        "holders after the killed ones' leases were revoked",
    )?;
    permit.release().await.map_err(|e| failed("release", e))
}

/// Five participants on stores of their own enter a barrier one after
/// another, 150 ms apart: none passes `enter` before the fifth has begun
/// entering. They leave 50 ms apart: none returns from `leave` before the
/// fifth has begun leaving. The barrier's keys are gone at the end.
pub async fn barrier_nobody_passes_before_all_entered(ctx: &Ctx) -> CaseResult {
    const N: usize = 5;
    let first = ctx.open().await?;
    needs_txn(&first)?;
    let entering = AtomicUsize::new(0);
    let leaving = AtomicUsize::new(0);
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // A participant that passed too early may leave the last one stranded
    // (it enters an empty barrier): stop at the first violation.
    let violated = tokio::sync::Notify::new();
    let participants = (0..N).map(|i| {
        let (entering, leaving, problems, violated) = (&entering, &leaving, &problems, &violated);
        async move {
            let outcome = async {
                let store = ctx.open().await.map_err(|e| format!("open: {e}"))?;
                let barrier = DoubleBarrier::new(store, "batch", N, ctx.barrier_options())
                    .map_err(|e| format!("DoubleBarrier::new: {e}"))?;
                tokio::time::sleep(Duration::from_millis(150 * i as u64)).await;
                entering.fetch_add(1, Ordering::SeqCst);
                let entry = barrier.enter().await.map_err(|e| format!("enter: {e}"))?;
                let seen = entering.load(Ordering::SeqCst);
                if seen < N {
                    // Reported, and then leave as usual, so the others
                    // are not held up.
                    problems.lock().push(format!(
                        "participant {i}: passed enter when only {seen} of {N} had begun entering"
                    ));
                    violated.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
                leaving.fetch_add(1, Ordering::SeqCst);
                entry.leave().await.map_err(|e| format!("leave: {e}"))?;
                let seen = leaving.load(Ordering::SeqCst);
                if seen < N {
                    return Err(format!(
                        "returned from leave when only {seen} of {N} had begun leaving"
                    ));
                }
                Ok(())
            };
            if let Err(problem) = outcome.await {
                problems.lock().push(format!("participant {i}: {problem}"));
            }
        }
    });
    let finished = tokio::select! {
        r = tokio::time::timeout(WAIT, join_all(participants)) => r.is_ok(),
        () = violated.notified() => false,
    };
    let problems = problems.into_inner();
    ensure(problems.is_empty(), || problems.join("; "))?;
    ensure(finished, || {
        format!("every participant entering and leaving: not within {WAIT:?}")
    })?;
    let left = first
        .list("barriers/batch")
        .await
        .map_err(|e| failed("list", e))?;
    ensure(left.is_empty(), || {
        format!(
            "keys left after everyone left: {:?}",
            left.iter().map(|p| &p.key).collect::<Vec<_>>()
        )
    })
}

/// Sixteen adders on stores of their own add 1 ten times each to one
/// counter, all at once: the counter ends at exactly 160, and the adds
/// returned every value from 1 to 160 once.
pub async fn counter_concurrent_adds_exact_sum(ctx: &Ctx) -> CaseResult {
    const ADDERS: usize = 16;
    const ADDS: usize = 10;
    let first = ctx.open().await?;
    needs_txn(&first)?;
    let adders = (0..ADDERS).map(|_| async {
        let store = ctx.open().await.map_err(|e| failed("open", e))?;
        let counter = ctx
            .counter(store, "hits")
            .map_err(|e| failed("Counter::new", e))?;
        let mut seen = Vec::new();
        for _ in 0..ADDS {
            seen.push(counter.add(1).await.map_err(|e| failed("add", e))?);
        }
        Ok::<_, Failure>(seen)
    });
    let mut returned = Vec::new();
    for seen in within("every add", join_all(adders)).await? {
        returned.extend(seen?);
    }
    let counter = ctx
        .counter(first, "hits")
        .map_err(|e| failed("Counter::new", e))?;
    let total = counter.get().await.map_err(|e| failed("get", e))?;
    ensure_eq(total, (ADDERS * ADDS) as i64, "the counter's final value")?;
    returned.sort_unstable();
    ensure_eq(
        returned,
        (1..=(ADDERS * ADDS) as i64).collect(),
        "the values the adds returned",
    )
}
