//! Cases: multi-key transactions (`txn`): compares, all or nothing, one
//! revision for all writes, the response, limits, and watchers that never
//! see half a transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    Compare, KvPair, PutOptions, Store, Txn, TxnOp, TxnOpResult, TxnResponse, WatchEvent,
    WatchOptions,
};

use crate::{
    bytes, check, check_eq, check_err, next_event, read_initial, wait_gone, CaseResult, Ctx,
    Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_txn {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args txn: [
            txn_all_or_nothing,
            txn_compare_kinds,
            txn_response_reports_failed_compare,
            txn_one_revision_for_all_writes,
            txn_put_with_ttl_and_lease,
            txn_lease_lost_writes_nothing,
            txn_limits_refused_before_sending,
        ] }
    };
}

/// The store, after checking it says it has transactions.
pub(crate) async fn txn_store(ctx: &Ctx) -> Result<Arc<dyn Store>, Failure> {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().transactions, "transactions")?;
    Ok(s)
}

/// The revision a response says its writes have, failing if it has none.
pub(crate) fn written(r: &TxnResponse) -> Result<u64, Failure> {
    match r.revision {
        Some(rev) if rev > 0 => Ok(rev),
        other => Err(Failure::failed(format!(
            "a transaction that wrote reports revision {other:?}: {r:?}"
        ))),
    }
}

/// When a compare fails, nothing of the success branch is applied —
/// neither its puts nor its deletes — and the failure branch runs whole;
/// when all hold, the success branch is applied whole and the failure
/// branch not at all.
pub async fn txn_all_or_nothing(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let a = s.put("t/a", bytes("a0"), PutOptions::new()).await?;
    let b = s.put("t/b", bytes("b0"), PutOptions::new()).await?;
    let before = s.list("").await?;

    let txn = |expect_a: u64| {
        Txn::new()
            .when(Compare::revision("t/a", expect_a))
            .when(Compare::present("t/b"))
            .then(TxnOp::put("t/a", "a1"))
            .then(TxnOp::delete("t/b"))
            .then(TxnOp::put("t/c", "c1"))
            .or_else(TxnOp::put("t/failed", "yes"))
            .or_else(TxnOp::get("t/a"))
    };

    // A stale revision: nothing of the success branch, all of the failure.
    let r = s.txn(txn(a + 1_000_000)).await?;
    check!(!r.succeeded, "a stale compare held: {r:?}");
    check_eq!(r.failed_compare, Some(0));
    let f = written(&r)?;
    check!(f > b, "the failure branch's revision {f} is not above {b}");
    check_eq!(
        r.results,
        vec![
            TxnOpResult::Put { revision: f },
            TxnOpResult::Get(Some(KvPair::new("t/a", "a0", a))),
        ]
    );
    let mut expected = before.clone();
    expected.push(KvPair::new("t/failed", "yes", f));
    check_eq!(s.list("").await?, expected, "after the failed compare");

    // The right revision: all of the success branch, none of the failure.
    let r = s.txn(txn(a)).await?;
    check!(r.succeeded, "the compares should hold: {r:?}");
    check_eq!(r.failed_compare, None);
    let w = written(&r)?;
    check!(w > f, "the revision {w} is not above {f}");
    check_eq!(
        r.results,
        vec![
            TxnOpResult::Put { revision: w },
            TxnOpResult::Delete { existed: true },
            TxnOpResult::Put { revision: w },
        ]
    );
    check_eq!(
        s.list("").await?,
        vec![
            KvPair::new("t/a", "a1", w),
            KvPair::new("t/c", "c1", w),
            KvPair::new("t/failed", "yes", f),
        ]
    );
    Ok(())
}

/// Each kind of compare holds exactly when it should: `Revision` on the
/// key's current revision only (not an older one, not on an absent key);
/// `Absent` on a key never written or deleted, not on a present one nor
/// because only its children exist; `Present` the other way round; `Value`
/// on byte-equal values of a present key only (an empty value included).
pub async fn txn_compare_kinds(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let r1 = s.put("c/k", bytes("v1"), PutOptions::new()).await?;
    let r2 = s.put("c/k", bytes("v2"), PutOptions::new()).await?;
    let gone = s.put("c/gone", bytes("x"), PutOptions::new()).await?;
    s.delete("c/gone").await?;
    s.put("c/parent/child", bytes("x"), PutOptions::new())
        .await?;
    s.put("c/empty", bytes(""), PutOptions::new()).await?;

    let cases: Vec<(Compare, bool)> = vec![
        (Compare::revision("c/k", r2), true),
        (Compare::revision("c/k", r1), false),
        (Compare::revision("c/k", r2 + 1_000_000), false),
        (Compare::revision("c/gone", gone), false),
        (Compare::revision("c/never", r2), false),
        (Compare::absent("c/never"), true),
        (Compare::absent("c/gone"), true),
        (Compare::absent("c/parent"), true),
        (Compare::absent("c/k"), false),
        (Compare::present("c/k"), true),
        (Compare::present("c/empty"), true),
        (Compare::present("c/gone"), false),
        (Compare::present("c/parent"), false),
        (Compare::present("c/never"), false),
        (Compare::value("c/k", "v2"), true),
        (Compare::value("c/k", "v1"), false),
        (Compare::value("c/k", "v"), false),
        (Compare::value("c/k", "v2 "), false),
        (Compare::value("c/empty", ""), true),
        (Compare::value("c/never", ""), false),
        (Compare::value("c/gone", "x"), false),
    ];
    let before = s.list("").await?;
    for (compare, holds) in cases {
        let r = s
            .txn(Txn::new().when(compare.clone()).then(TxnOp::get("c/k")))
            .await?;
        check_eq!(r.succeeded, holds, "{compare:?}");
        check_eq!(
            r.failed_compare,
            if holds { None } else { Some(0) },
            "{compare:?}"
        );
        check_eq!(r.revision, None, "{compare:?}: a read-only branch wrote");
        let want = if holds {
            vec![TxnOpResult::Get(Some(KvPair::new("c/k", "v2", r2)))]
        } else {
            Vec::new()
        };
        check_eq!(r.results, want, "{compare:?}");
    }
    check_eq!(s.list("").await?, before, "compares changed the store");
    Ok(())
}

/// The response names the first compare that did not hold (by its index
/// in the order given), reports one result per operation of the branch
/// that ran in its order — gets read the keys as they were before the
/// transaction, deletes say whether the key existed — and a branch that
/// writes nothing (only gets, or deletes of absent keys) has no revision.
pub async fn txn_response_reports_failed_compare(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let a = s.put("r/a", bytes("A"), PutOptions::new()).await?;
    let b = s.put("r/b", bytes("B"), PutOptions::new()).await?;
    let compares = [
        Compare::present("r/a"),
        Compare::value("r/b", "B"),
        Compare::absent("r/a"),
        Compare::revision("r/b", b + 7),
    ];
    let txn = compares
        .iter()
        .cloned()
        .fold(Txn::new(), Txn::when)
        .then(TxnOp::delete("r/a"))
        .or_else(TxnOp::get("r/b"))
        .or_else(TxnOp::delete("r/missing"))
        .or_else(TxnOp::get("r/missing2"))
        .or_else(TxnOp::get("r/a"));
    let r = s.txn(txn).await?;
    check!(!r.succeeded, "compare 2 cannot hold: {r:?}");
    check_eq!(r.failed_compare, Some(2), "the first failing compare");
    check_eq!(
        r.results,
        vec![
            TxnOpResult::Get(Some(KvPair::new("r/b", "B", b))),
            TxnOpResult::Delete { existed: false },
            TxnOpResult::Get(None),
            TxnOpResult::Get(Some(KvPair::new("r/a", "A", a))),
        ]
    );
    check_eq!(r.revision, None, "a branch that wrote nothing");
    check_eq!(r.get(0), Some(&KvPair::new("r/b", "B", b)));

    // Only the first failing compare is named, whichever fail after it.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("r/a"))
                .when(Compare::revision("r/a", a + 1))
                .when(Compare::absent("r/b")),
        )
        .await?;
    check_eq!((r.succeeded, r.failed_compare), (false, Some(1)));
    check_eq!(r.results, Vec::<TxnOpResult>::new());

    // No compares: the success branch runs; gets see the state before.
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::get("r/a"))
                .then(TxnOp::put("r/b", "B2"))
                .then(TxnOp::delete("r/missing")),
        )
        .await?;
    check!(r.succeeded, "no compares must succeed: {r:?}");
    let w = written(&r)?;
    check_eq!(
        r.results,
        vec![
            TxnOpResult::Get(Some(KvPair::new("r/a", "A", a))),
            TxnOpResult::Put { revision: w },
            TxnOpResult::Delete { existed: false },
        ]
    );
    check_eq!(s.get("r/b").await?, Some(KvPair::new("r/b", "B2", w)));
    Ok(())
}

/// All writes of one transaction — puts and deletes — share one revision,
/// above every revision before it and below every write after it; `get`,
/// `list` and a watch all report it, and a plain write that follows gets a
/// larger one.
pub async fn txn_one_revision_for_all_writes(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let before = s.put("o/old", bytes("x"), PutOptions::new()).await?;
    let mut w = s.watch_tree("o", WatchOptions::new()).await?;
    let (initial, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, vec![KvPair::new("o/old", "x", before)]);

    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put("o/a", "1"))
                .then(TxnOp::put("o/b/c", "2"))
                .then(TxnOp::delete("o/old"))
                .then(TxnOp::put("o/d", "")),
        )
        .await?;
    let rev = written(&r)?;
    check!(rev > before, "the revision {rev} is not above {before}");
    check_eq!(
        s.list("o").await?,
        vec![
            KvPair::new("o/a", "1", rev),
            KvPair::new("o/b/c", "2", rev),
            KvPair::new("o/d", "", rev),
        ]
    );
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(next_event(&mut w, EVENT_TIMEOUT).await?);
    }
    for e in &events {
        check_eq!(e.revision(), rev, "event {e:?}");
    }
    let keys: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.key().map(str::to_owned))
        .collect();
    check_eq!(
        keys,
        ["o/a", "o/b/c", "o/d", "o/old"]
            .iter()
            .map(|k| (*k).to_owned())
            .collect::<BTreeSet<_>>()
    );
    check!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Delete { key, .. } if key == "o/old")),
        "no Delete of o/old among {events:?}"
    );
    let after = s.put("o/a", bytes("later"), PutOptions::new()).await?;
    check!(after > rev, "a later put got {after}, not above {rev}");
    Ok(())
}

/// A put in a transaction takes a TTL or a lease as `put` does: the TTL key
/// vanishes after its TTL, the leased key with its lease, and the
/// transaction's other keys stay.
pub async fn txn_put_with_ttl_and_lease(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let caps = s.capabilities().clone();
    ctx.require(caps.ttl, "ttl")?;
    ctx.require(caps.leases, "leases")?;
    let ttl = caps.min_ttl.max(Duration::from_millis(500));
    let lease = s
        .grant_lease(caps.min_ttl.max(Duration::from_secs(2)))
        .await?;
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "l/ttl",
                    "t",
                    PutOptions::new().with_ttl(ttl),
                ))
                .then(TxnOp::put_with(
                    "l/leased",
                    "l",
                    PutOptions::new().with_lease(lease.id()),
                ))
                .then(TxnOp::put("l/plain", "p")),
        )
        .await?;
    let rev = written(&r)?;
    check_eq!(
        s.list("l").await?,
        vec![
            KvPair::new("l/leased", "l", rev),
            KvPair::new("l/plain", "p", rev),
            KvPair::new("l/ttl", "t", rev),
        ]
    );
    wait_gone(&s, &["l/ttl"], ttl + SLACK + SLACK).await?;
    check!(
        s.exists("l/leased").await?,
        "the leased key went with the TTL key"
    );
    lease.revoke().await?;
    wait_gone(&s, &["l/leased"], SLACK).await?;
    check_eq!(s.list("l").await?, vec![KvPair::new("l/plain", "p", rev)]);
    Ok(())
}

/// A put bound to a lease that is gone fails the whole transaction with
/// `LeaseLost`: none of its writes happen, before or after that put.
pub async fn txn_lease_lost_writes_nothing(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    ctx.require(s.capabilities().leases, "leases")?;
    let keep = s.put("g/keep", bytes("k"), PutOptions::new()).await?;
    let lease = s.grant_lease(Duration::from_secs(10)).await?;
    let id = lease.id();
    lease.revoke().await?;
    let before = s.list("").await?;
    check_err!(
        s.txn(
            Txn::new()
                .then(TxnOp::put("g/a", "a"))
                .then(TxnOp::delete("g/keep"))
                .then(TxnOp::put_with(
                    "g/leased",
                    "l",
                    PutOptions::new().with_lease(id)
                ))
                .then(TxnOp::put("g/z", "z")),
        )
        .await,
        LeaseLost
    );
    check_eq!(s.list("").await?, before, "after the refused transaction");
    check_eq!(
        s.get("g/keep").await?,
        Some(KvPair::new("g/keep", "k", keep))
    );
    Ok(())
}

/// A transaction over the backend's `max_txn_ops` (compares, or operations
/// of either branch), with a key twice in one branch, an invalid key, a
/// value over `max_value_size` or a zero TTL is refused with a typed error
/// before anything is sent: the store is unchanged. A transaction at the
/// limit runs.
pub async fn txn_limits_refused_before_sending(ctx: &Ctx) -> CaseResult {
    let s = txn_store(ctx).await?;
    let caps = s.capabilities().clone();
    check!(caps.max_txn_ops >= 1, "max_txn_ops is 0");
    s.put("m/keep", bytes("k"), PutOptions::new()).await?;
    let before = s.list("").await?;
    let max = caps.max_txn_ops;
    let puts = |n: usize| {
        (0..n).fold(Txn::new(), |t, i| {
            t.then(TxnOp::put(format!("m/k{i}"), "v"))
        })
    };

    let e = check_err!(s.txn(puts(max + 1)).await, InvalidArgument);
    check!(
        e.to_string().contains(&max.to_string()),
        "the error {e} does not name the limit {max}"
    );
    let over_else = (0..=max).fold(Txn::new(), |t, i| t.or_else(TxnOp::get(format!("m/k{i}"))));
    check_err!(s.txn(over_else).await, InvalidArgument);
    let over_compares = (0..=max).fold(Txn::new(), |t, i| {
        t.when(Compare::absent(format!("m/k{i}")))
    });
    check_err!(s.txn(over_compares).await, InvalidArgument);
    check_err!(
        s.txn(
            Txn::new()
                .then(TxnOp::put("m/a", "1"))
                .then(TxnOp::delete("/m/a/"))
        )
        .await,
        InvalidArgument
    );
    check_err!(
        s.txn(
            Txn::new()
                .then(TxnOp::put("m/a", "1"))
                .then(TxnOp::put("m//b", "2"))
        )
        .await,
        InvalidKey
    );
    check_err!(
        s.txn(
            Txn::new()
                .when(Compare::present(""))
                .then(TxnOp::put("m/a", "1"))
        )
        .await,
        InvalidKey
    );
    let big = bytes(vec![b'x'; caps.max_value_size + 1]);
    check_err!(
        s.txn(
            Txn::new()
                .then(TxnOp::put("m/a", "1"))
                .then(TxnOp::put("m/big", big))
        )
        .await,
        ValueTooLarge
    );
    check_err!(
        s.txn(
            Txn::new()
                .then(TxnOp::put("m/a", "1"))
                .then(TxnOp::put_with(
                    "m/t",
                    "t",
                    PutOptions::new().with_ttl(Duration::ZERO)
                ))
        )
        .await,
        InvalidArgument
    );
    check_eq!(s.list("").await?, before, "after the refused transactions");

    let r = s.txn(puts(max)).await?;
    let rev = written(&r)?;
    check_eq!(r.results.len(), max);
    let listed = s.list("m").await?;
    check_eq!(listed.len(), max + 1);
    check!(
        listed
            .iter()
            .filter(|p| p.key != "m/keep")
            .all(|p| p.revision == rev),
        "a transaction at the limit did not write every key at {rev}"
    );
    Ok(())
}
