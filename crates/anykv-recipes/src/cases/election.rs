//! Cases of leader [`Election`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{ErrorKind, LostSignal};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{ensure, ensure_eq, eventually, CaseResult, Ctx, Failure, Tap, WAIT};
use crate::{Candidate, Election, Leadership};

/// One term as the exclusivity case saw it begin.
struct Win {
    candidate: usize,
    token: u64,
    lost: LostSignal,
    killed: Arc<AtomicBool>,
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, Failure> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| Failure::Failed(format!("{what}: not within {WAIT:?}")))
}

/// Eight candidates on stores of their own; each leader is killed in
/// turn, by dropping its leadership without resigning or by closing its
/// store. When a candidate wins, every earlier leader's `lost()` has fired
/// or its kill has begun; every killed leader's `lost()` fires; each of
/// the eight leads once; fencing tokens strictly increase.
pub async fn election_exclusive_while_leaders_killed(ctx: &Ctx) -> CaseResult {
    const CANDIDATES: usize = 8;
    let wins: Arc<Mutex<Vec<Win>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for candidate in 0..CANDIDATES {
        let store = ctx.open().await?;
        let election = Election::new(store.clone(), ctx.election_options());
        let (wins, violations, tx) = (wins.clone(), violations.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let result = election.campaign("leader", format!("c{candidate}")).await;
            let leadership = match result {
                Ok(leadership) => leadership,
                Err(e) => {
                    violations
                        .lock()
                        .push(format!("c{candidate} failed to campaign: {e}"));
                    return;
                }
            };
            let killed = Arc::new(AtomicBool::new(false));
            {
                let mut wins = wins.lock();
                for earlier in wins.iter() {
                    if !earlier.lost.is_lost() && !earlier.killed.load(Ordering::SeqCst) {
                        violations.lock().push(format!(
                            "c{candidate} won (token {}) while c{} (token {}) still led",
                            leadership.token(),
                            earlier.candidate,
                            earlier.token
                        ));
                    }
                }
                wins.push(Win {
                    candidate,
                    token: leadership.token(),
                    lost: leadership.lost_signal(),
                    killed: killed.clone(),
                });
            }
            let _ = tx.send((candidate, leadership, store, killed));
        }));
    }
    drop(tx);
    let mut kept = Vec::new();
    for round in 0..CANDIDATES {
        let (candidate, leadership, store, killed): (usize, Leadership, _, Arc<AtomicBool>) =
            match within("the next leader", rx.recv()).await? {
                Some(win) => win,
                None => break,
            };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let lost = leadership.lost_signal();
        killed.store(true, Ordering::SeqCst);
        if round % 2 == 0 {
            drop(leadership);
        } else {
            let _ = store.close().await;
            kept.push(leadership);
        }
        within(
            &format!("c{candidate}'s lost() after its kill"),
            lost.wait(),
        )
        .await?;
    }
    for task in tasks {
        task.abort();
    }
    let violations = violations.lock().clone();
    ensure(violations.is_empty(), || violations.join("; "))?;
    let wins = wins.lock();
    let mut leaders: Vec<usize> = wins.iter().map(|w| w.candidate).collect();
    leaders.sort_unstable();
    ensure_eq(
        leaders,
        (0..CANDIDATES).collect(),
        "the candidates that led",
    )?;
    let tokens: Vec<u64> = wins.iter().map(|w| w.token).collect();
    ensure(tokens.windows(2).all(|w| w[0] < w[1]), || {
        format!("fencing tokens in the order of the wins do not increase: {tokens:?}")
    })
}

/// Five candidates queue; when one in the middle leaves, only its
/// successor looks at the queue again (no herd), and when the leader
/// resigns the next in line leads.
pub async fn election_waits_on_predecessor_only(ctx: &Ctx) -> CaseResult {
    let observer = Election::new(ctx.open().await?, ctx.election_options());
    let mut taps = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..5usize {
        let tap = Tap::new(ctx.open().await?);
        let election = Election::new(tap.clone(), ctx.election_options());
        tasks.push(tokio::spawn(async move {
            election.campaign("queue", format!("c{i}")).await
        }));
        taps.push(tap);
        eventually(WAIT, "the candidate to join the queue", || {
            let observer = observer.clone();
            async move {
                let n = observer.candidates("queue").await.ok()?.len();
                (n == i + 1).then_some(())
            }
        })
        .await?;
    }
    let first = within("c0 to lead", &mut tasks[0]).await?;
    let first = first.map_err(|e| Failure::Failed(format!("c0 did not lead: {e}")))??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = taps.iter().map(|t| t.lists()).collect();
    tasks[2].abort();
    eventually(WAIT, "c2 to leave the queue", || {
        let observer = observer.clone();
        async move { (observer.candidates("queue").await.ok()?.len() == 4).then_some(()) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<u64> = taps.iter().map(|t| t.lists()).collect();
    for i in [0usize, 1, 4] {
        ensure(after[i] == before[i], || {
            format!(
                "c{i} listed the queue when c2 left: {} times",
                after[i] - before[i]
            )
        })?;
    }
    ensure(after[3] > before[3], || {
        "c3 did not look again when its predecessor left".into()
    })?;
    ensure(!tasks[1].is_finished(), || {
        "c1 stopped waiting while c0 leads".into()
    })?;
    first.resign().await?;
    let second = within("c1 to lead", &mut tasks[1]).await?;
    let second = second.map_err(|e| Failure::Failed(format!("c1 did not lead: {e}")))??;
    ensure_eq(second.value(), "c1", "the second leader's value")?;
    for task in &tasks[3..] {
        task.abort();
    }
    Ok(())
}

/// A leader cut off longer than its lease's TTL (its server frozen) sees
/// `lost()` fire before the next candidate can lead: when the next one
/// wins after the outage, the old leader's `lost()` has fired. (Where the
/// lease outlives the outage, as in-process ones do, the leader simply
/// keeps leading and nobody else wins.)
pub async fn election_lost_before_successor_after_outage(ctx: &Ctx) -> CaseResult {
    let options = ctx.election_options();
    let ttl = options.ttl;
    let a = Election::new(ctx.open().await?, options.clone());
    let b = Election::new(ctx.open().await?, options);
    let leader = within("a to lead", a.campaign("outage", "a")).await??;
    let lost = leader.lost_signal();
    let mut waiting = tokio::spawn({
        let (b, lost) = (b.clone(), lost.clone());
        async move {
            let won = b.campaign("outage", "b").await;
            (won, lost.is_lost())
        }
    });
    eventually(WAIT, "b to queue", || {
        let b = b.clone();
        async move { (b.candidates("outage").await.ok()?.len() == 2).then_some(()) }
    })
    .await?;
    super::hook(ctx.factory().pause_server().await)?;
    tokio::time::sleep(ttl + Duration::from_secs(2)).await;
    ctx.factory().resume_server().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !lost.is_lost() {
        ensure(!waiting.is_finished(), || "b won while a still led".into())?;
        waiting.abort();
        return Ok(());
    }
    let joined = tokio::time::timeout(Duration::from_secs(40), &mut waiting)
        .await
        .map_err(|_| Failure::Failed("a lost its leadership but b never led".into()))?;
    let (won, a_lost) = joined.map_err(|e| Failure::Failed(format!("b's campaign: {e}")))?;
    let won = won?;
    ensure(a_lost, || "b won while a's lost() had not fired".into())?;
    ensure(won.token() > leader.token(), || {
        "b's token is not greater than a's".into()
    })
}

/// Skips observed leaders until one satisfies `accept`.
async fn observe_until(
    observer: &mut (impl Stream<Item = Option<Candidate>> + Unpin),
    what: &str,
    accept: impl Fn(&Option<Candidate>) -> bool,
) -> Result<Option<Candidate>, Failure> {
    within(what, async {
        while let Some(leader) = observer.next().await {
            if accept(&leader) {
                return Ok(leader);
            }
        }
        Err(Failure::Failed(format!("{what}: the observer ended")))
    })
    .await?
}

/// `observe` reports the leader as it changes, with the latest value
/// proclaimed; `leader` and `candidates` agree; a leader whose key is
/// deleted behind its back sees `lost()` fire and cannot proclaim.
pub async fn election_observe_and_proclaim(ctx: &Ctx) -> CaseResult {
    let a = Election::new(ctx.open().await?, ctx.election_options());
    let b = Election::new(ctx.open().await?, ctx.election_options());
    let watcher = ctx.open().await?;
    let mut observer = Election::new(watcher.clone(), ctx.election_options()).observe("obs")?;
    observe_until(&mut observer, "no leader at first", Option::is_none).await?;
    let mut one = within("a to lead", a.campaign("obs", "one")).await??;
    let seen = observe_until(&mut observer, "a observed", Option::is_some).await?;
    ensure_eq(
        seen.map(|c| (c.value, c.token)),
        Some(("one".into(), one.token())),
        "observed",
    )?;
    one.proclaim("uno").await?;
    observe_until(&mut observer, "the proclaimed value", |l| {
        l.as_ref().is_some_and(|c| c.value == "uno")
    })
    .await?;
    let leader = a.leader("obs").await?;
    ensure_eq(
        leader.map(|c| (c.value, c.token)),
        Some(("uno".into(), one.token())),
        "leader()",
    )?;
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.campaign("obs", "two").await }
    });
    eventually(WAIT, "two candidates", || {
        let b = b.clone();
        async move { (b.candidates("obs").await.ok()?.len() == 2).then_some(()) }
    })
    .await?;
    let values: Vec<String> = b
        .candidates("obs")
        .await?
        .into_iter()
        .map(|c| c.value)
        .collect();
    ensure_eq(
        values,
        vec!["uno".into(), "two".into()],
        "candidates in order",
    )?;
    let first_token = one.token();
    one.resign().await?;
    let two = within("b to lead", waiting).await?;
    let two = two.map_err(|e| Failure::Failed(format!("b's campaign: {e}")))??;
    ensure(two.token() > first_token, || {
        "the second term's token is not greater".into()
    })?;
    let seen = observe_until(&mut observer, "b observed", |l| {
        l.as_ref().is_some_and(|c| c.value == "two")
    })
    .await?;
    ensure_eq(seen.map(|c| c.token), Some(two.token()), "observed token")?;
    let mut two = two;
    watcher.delete(two.key()).await?;
    within("b's lost() after its key was deleted", two.lost()).await?;
    let refused = two.proclaim("late").await;
    ensure_eq(
        refused.map_err(|e| e.kind()),
        Err(ErrorKind::LeaseLost),
        "proclaim after the loss",
    )?;
    observe_until(&mut observer, "no leader at the end", Option::is_none).await?;
    Ok(())
}

/// A candidate following its [`crate::Terms`] campaigns again after
/// losing and leads again with a greater token.
pub async fn election_terms_rejoin_after_loss(ctx: &Ctx) -> CaseResult {
    let store = ctx.open().await?;
    let other = ctx.open().await?;
    let election = Election::new(store, ctx.election_options());
    let mut terms = election.terms("rejoin", "me");
    let first = within("the first term", terms.next()).await??;
    other.delete(first.key()).await?;
    within("the first term's lost()", first.lost()).await?;
    let second = within("the second term", terms.next()).await??;
    ensure(second.token() > first.token(), || {
        format!("second token {} after {}", second.token(), first.token())
    })?;
    let leader = election.leader("rejoin").await?;
    ensure_eq(
        leader.map(|c| c.token),
        Some(second.token()),
        "the leader's token",
    )
}
