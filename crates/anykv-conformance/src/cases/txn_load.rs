//! Cases: transactions under concurrency — a bank-transfer invariant held
//! by 16 clients, the optimistic helper under contention, and watchers
//! that see each transaction whole while others write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anykv_core::optimistic::{optimistic, Optimistic};
use anykv_core::{Bytes, Compare, PutOptions, Store, Txn, TxnOp, WatchEvent, WatchOptions};
use tokio::task::JoinSet;

use crate::cases::txn::{txn_store, written};
use crate::{
    bytes, check, check_eq, next_event, read_initial, CaseResult, Ctx, Failure, EVENT_TIMEOUT,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_txn_load {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args txn_load: [
            txn_bank_transfer_invariant,
            txn_optimistic_under_contention,
            txn_watcher_sees_whole_transactions,
        ] }
    };
}

/// How many clients move money at once.
const CLIENTS: usize = 16;
/// Accounts, each opened with [`OPENING`].
const ACCOUNTS: usize = 6;
const OPENING: u64 = 1_000;

fn account(i: usize) -> String {
    format!("bank/acct/{i}")
}

fn amount(v: &[u8]) -> Result<u64, Failure> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::failed(format!("an account holds {v:?}, not a number")))
}

/// A small deterministic generator, one per client.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

async fn open_accounts(s: &Arc<dyn Store>) -> CaseResult {
    for i in 0..ACCOUNTS {
        s.put(&account(i), bytes(OPENING.to_string()), PutOptions::new())
            .await?;
    }
    Ok(())
}

/// Reads every account and the transfer log; checks the total is what the
/// accounts opened with, that the log has exactly the transfers the
/// clients saw succeed, and that replaying the log from the opening
/// balances gives every account's balance.
async fn audit(s: &Arc<dyn Store>, done: Vec<(String, usize, usize, u64)>) -> CaseResult {
    let mut balances = BTreeMap::new();
    for p in s.list("bank/acct").await? {
        balances.insert(p.key.clone(), amount(&p.value)?);
    }
    check_eq!(balances.len(), ACCOUNTS, "accounts");
    let total: u64 = balances.values().sum();
    check_eq!(
        total,
        OPENING * ACCOUNTS as u64,
        "the total of all accounts"
    );

    let log = s.list("bank/log").await?;
    let logged: BTreeSet<String> = log.iter().map(|p| p.key.clone()).collect();
    let acked: BTreeSet<String> = done.iter().map(|(k, ..)| k.clone()).collect();
    check_eq!(
        logged,
        acked,
        "the transfer log against the transfers acknowledged"
    );
    let mut replay: BTreeMap<String, i64> = (0..ACCOUNTS)
        .map(|i| (account(i), OPENING as i64))
        .collect();
    for (_, from, to, n) in &done {
        *replay.entry(account(*from)).or_default() -= *n as i64;
        *replay.entry(account(*to)).or_default() += *n as i64;
    }
    let replay: BTreeMap<String, u64> = replay
        .into_iter()
        .map(|(k, v)| (k, v.max(0) as u64))
        .collect();
    check_eq!(balances, replay, "balances against the replayed log");
    Ok(())
}

/// 16 clients move random amounts between accounts, each transfer one
/// transaction that compares both accounts' revisions, writes both
/// balances and a log entry; a failed compare is retried with fresh reads.
/// Afterwards the total is unchanged, the log holds exactly the transfers
/// acknowledged, and replaying it gives every balance: every transfer
/// happened whole or not at all.
pub async fn txn_bank_transfer_invariant(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    open_accounts(&s).await?;
    const TRANSFERS: usize = 12;
    let mut tasks = JoinSet::new();
    for c in 0..CLIENTS {
        let s = ctx.store().await?;
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut x = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut attempts = 0;
            while done.len() < TRANSFERS {
                attempts += 1;
                if attempts > TRANSFERS * 200 {
                    return Err(Failure::failed(format!(
                        "client {c}: {attempts} attempts for {} transfers",
                        done.len()
                    )));
                }
                let from = (next(&mut x) % ACCOUNTS as u64) as usize;
                let to = (from + 1 + (next(&mut x) % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
                let n = 1 + next(&mut x) % 50;
                let (Some(a), Some(b)) = (s.get(&account(from)).await?, s.get(&account(to)).await?)
                else {
                    return Err(Failure::failed("an account vanished"));
                };
                let (va, vb) = (amount(&a.value)?, amount(&b.value)?);
                tokio::task::yield_now().await;
                if va < n {
                    continue;
                }
                let log = format!("bank/log/{c:02}-{:03}", done.len());
                let r = s
                    .txn(
                        Txn::new()
                            .when(Compare::revision(account(from), a.revision))
                            .when(Compare::revision(account(to), b.revision))
                            .then(TxnOp::put(account(from), (va - n).to_string()))
                            .then(TxnOp::put(account(to), (vb + n).to_string()))
                            .then(TxnOp::put(log.clone(), format!("{from}>{to}:{n}"))),
                    )
                    .await?;
                if r.succeeded {
                    written(&r)?;
                    done.push((log, from, to, n));
                } else {
                    check!(
                        matches!(r.failed_compare, Some(0 | 1)),
                        "a failed transfer names compare {:?}",
                        r.failed_compare
                    );
                    check_eq!(r.revision, None, "a failed transfer wrote");
                }
            }
            Ok::<_, Failure>(done)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let client = joined.map_err(|e| Failure::failed(format!("a client panicked: {e}")))??;
        done.extend(client);
    }
    check_eq!(done.len(), CLIENTS * TRANSFERS);
    audit(&s, done).await
}

/// The optimistic helper (`anykv_core::optimistic`), with 16 clients
/// moving money between the same accounts at once, keeps the invariant:
/// each closure's reads are checked at commit and a conflict runs it
/// again, so the total never changes and the log replays to the balances.
pub async fn txn_optimistic_under_contention(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    open_accounts(&s).await?;
    const TRANSFERS: usize = 8;
    let options = Optimistic::new().with_max_attempts(500);
    let mut tasks = JoinSet::new();
    for c in 0..CLIENTS {
        let s = ctx.store().await?;
        let options = options.clone();
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut x = (c as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for t in 0..TRANSFERS {
                let from = (next(&mut x) % ACCOUNTS as u64) as usize;
                let to = (from + 1 + (next(&mut x) % (ACCOUNTS as u64 - 1)) as usize) % ACCOUNTS;
                let n = 1 + next(&mut x) % 50;
                let log = format!("bank/log/{c:02}-{t:03}");
                let moved = optimistic(s.as_ref(), &options, |tx| {
                    let log = log.clone();
                    Box::pin(async move {
                        let parse = |v: Option<Bytes>| -> anykv_core::Result<u64> {
                            v.as_deref()
                                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                                .ok_or_else(|| {
                                    anykv_core::Error::InvalidArgument("not a balance".into())
                                })
                        };
                        let va = parse(tx.get(&account(from)).await?)?;
                        let vb = parse(tx.get(&account(to)).await?)?;
                        // Work between reading and writing, as real
                        // closures do: other clients get in here.
                        tokio::task::yield_now().await;
                        if va < n {
                            return Ok(false);
                        }
                        tx.put(&account(from), (va - n).to_string());
                        tx.put(&account(to), (vb + n).to_string());
                        tx.put(&log, format!("{from}>{to}:{n}"));
                        Ok(true)
                    })
                })
                .await?;
                if moved {
                    done.push((log, from, to, n));
                }
            }
            Ok::<_, Failure>(done)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let client = joined.map_err(|e| Failure::failed(format!("a client panicked: {e}")))??;
        done.extend(client);
    }
    check!(
        done.len() >= CLIENTS,
        "only {} of {} transfers moved money",
        done.len(),
        CLIENTS * TRANSFERS
    );
    audit(&s, done).await
}

/// While another client writes single keys under the same prefix, 40
/// transactions each put two new keys and a third, and delete the
/// previous transaction's third key. A tree watch sees every
/// transaction's events at its one revision with no event of another
/// revision between them: both new keys and the delete always (a key
/// written once, a standing delete), the third put too where every
/// revision is delivered. A watch resumed from just before a transaction
/// starts with all of it, and one resumed from its revision with none.
pub async fn txn_watcher_sees_whole_transactions(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let caps = s.capabilities().clone();
    ctx.require(caps.watch, "watch")?;
    let mut w = s.watch_tree("w", WatchOptions::new()).await?;
    read_initial(&mut w, EVENT_TIMEOUT).await?;

    let noise = ctx.store().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let txns_done = Arc::new(AtomicU64::new(0));
    let noisy = {
        let (stop, progress, txns_done) = (stop.clone(), progress.clone(), txns_done.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // At most three noise writes per transaction: enough to
                // interleave, not enough to bury the watch.
                if n >= 3 * (txns_done.load(Ordering::Relaxed) + 1) {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
                noise
                    .put(
                        &format!("w/noise/{}", n % 4),
                        bytes(n.to_string()),
                        PutOptions::new(),
                    )
                    .await?;
                n += 1;
                progress.store(n, Ordering::Relaxed);
            }
            Ok::<u64, anykv_core::Error>(n)
        })
    };

    const TXNS: usize = 40;
    let mut txns: Vec<(u64, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    let mut noise_seen = 0;
    for i in 0..TXNS {
        // Every transaction comes after at least one more noise write, so
        // the two interleave on any backend, however fast.
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while progress.load(Ordering::Relaxed) == noise_seen {
            if tokio::time::Instant::now() > deadline {
                return Err(Failure::failed("the noise writer stopped writing"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        noise_seen = progress.load(Ordering::Relaxed);
        let mut t = Txn::new()
            .then(TxnOp::put(format!("w/t/{i}/a"), "a"))
            .then(TxnOp::put(format!("w/t/{i}/b"), "b"))
            .then(TxnOp::put(format!("w/t/{i}/c"), "c"));
        let mut must: BTreeSet<String> = [format!("w/t/{i}/a"), format!("w/t/{i}/b")].into();
        let mut may: BTreeSet<String> = [format!("w/t/{i}/c")].into();
        if i > 0 {
            t = t.then(TxnOp::delete(format!("w/t/{}/c", i - 1)));
            must.insert(format!("w/t/{}/c", i - 1));
        }
        if caps.watch_every_revision {
            must.append(&mut may);
        }
        let r = s.txn(t).await?;
        txns.push((written(&r)?, must, may));
        txns_done.fetch_add(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let noise_writes = noisy
        .await
        .map_err(|e| Failure::failed(format!("the noise writer panicked: {e}")))??;
    check!(noise_writes > 0, "the noise writer wrote nothing");

    // Read until every required event of the last transaction is in, or
    // an event after it arrives.
    let (last, last_must) = match txns.last() {
        Some((rev, must, _)) => (*rev, must.clone()),
        None => return Err(Failure::failed("no transaction ran")),
    };
    let mut events: Vec<WatchEvent> = Vec::new();
    let mut seen_last = BTreeSet::new();
    loop {
        let e = next_event(&mut w, EVENT_TIMEOUT).await?;
        let after = e.revision() > last;
        if e.revision() == last {
            seen_last.extend(e.key().map(str::to_owned));
        }
        events.push(e);
        if after || last_must.is_subset(&seen_last) {
            break;
        }
    }
    for (rev, must, may) in &txns {
        let at: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.revision() == *rev)
            .map(|(i, _)| i)
            .collect();
        let (Some(first), Some(end)) = (at.first(), at.last()) else {
            return Err(Failure::failed(format!(
                "no event of the transaction at revision {rev}"
            )));
        };
        check_eq!(
            end - first + 1,
            at.len(),
            "the events at revision {rev} are split by others: {:?}",
            &events[*first..=*end]
        );
        let keys: BTreeSet<String> = at
            .iter()
            .filter_map(|i| events[*i].key().map(str::to_owned))
            .collect();
        check!(
            must.is_subset(&keys),
            "revision {rev}: the watch saw {keys:?}, missing some of {must:?}"
        );
        let allowed: BTreeSet<String> = must.union(may).cloned().collect();
        check!(
            keys.is_subset(&allowed),
            "revision {rev}: the watch saw {keys:?}, beyond the transaction's {allowed:?}"
        );
    }

    if caps.watch_resume {
        let (rev, must, may) = &txns[TXNS / 2];
        let mut r = s
            .watch_tree("w/t", WatchOptions::from_revision(rev - 1))
            .await?;
        let mut keys = BTreeSet::new();
        loop {
            let e = next_event(&mut r, EVENT_TIMEOUT).await?;
            check!(
                e.revision() >= *rev,
                "a resume from {} delivered {e:?}",
                rev - 1
            );
            if e.revision() > *rev {
                break;
            }
            keys.extend(e.key().map(str::to_owned));
        }
        let allowed: BTreeSet<String> = must.union(may).cloned().collect();
        check!(
            must.is_subset(&keys) && keys.is_subset(&allowed),
            "a resume from just before the transaction at {rev} began with {keys:?}, not {must:?}"
        );
        let mut r = s
            .watch_tree("w/t", WatchOptions::from_revision(*rev))
            .await?;
        let e = next_event(&mut r, EVENT_TIMEOUT).await?;
        check!(
            e.revision() > *rev,
            "a resume from {rev} delivered {e:?}, of the transaction at {rev}"
        );
    }
    Ok(())
}
