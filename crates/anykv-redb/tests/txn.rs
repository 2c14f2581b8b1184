//! Transactions on a redb file: one redb write transaction each, every
//! write at one revision, one history record that survives reopening, and
//! the process's leases and TTL timers kept as `put` and `delete` keep
//! them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{
    Compare, Error, ErrorKind, KvPair, PutOptions, Store, Txn, TxnOp, TxnOpResult, TxnResponse,
    WatchEvent, WatchOptions, WatchStream,
};
use anykv_redb::{Durability, RedbConfig, RedbStore, MAX_TXN_OPS};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("txn.redb")
}

async fn open(path: &Path, root: &str) -> RedbStore {
    RedbStore::open(RedbConfig::new(path).with_root(root))
        .await
        .expect("the file opens")
}

async fn event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an event within the wait")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// No event arrives within a short wait.
async fn quiet(w: &mut WatchStream) {
    let got = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
    assert!(got.is_err(), "no event expected, got {got:?}");
}

fn put_event(key: &str, value: &'static str, revision: u64) -> WatchEvent {
    WatchEvent::Put(KvPair::new(key, value, revision))
}

fn delete_event(key: &str, revision: u64) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        revision,
    }
}

async fn put(s: &RedbStore, key: &str, value: &'static str) -> u64 {
    s.put(key, value.into(), PutOptions::new())
        .await
        .expect("the put is written")
}

#[tokio::test]
async fn capabilities_announce_transactions_of_128_ops() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let caps = s.capabilities();
    assert!(caps.transactions);
    assert_eq!(caps.max_txn_ops, 128);
    assert_eq!(MAX_TXN_OPS, 128);
}

#[tokio::test]
async fn all_writes_share_one_revision_and_gets_read_the_state_before() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "app").await;
    let a = put(&s, "a", "1").await;
    let b = put(&s, "b", "2").await;
    assert_eq!((a, b), (1, 2));

    let r = s
        .txn(
            Txn::new()
                .when(Compare::revision("a", a))
                .then(TxnOp::put("a", "10"))
                .then(TxnOp::delete("b"))
                .then(TxnOp::put("c", "30"))
                .then(TxnOp::delete("missing"))
                .then(TxnOp::get("x//y")),
        )
        .await;
    // A key is checked before anything is written.
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidKey);
    assert_eq!(s.revision().unwrap(), 2);

    let r = s
        .txn(
            Txn::new()
                .when(Compare::revision("a", a))
                .then(TxnOp::put("a", "10"))
                .then(TxnOp::delete("b"))
                .then(TxnOp::get("b/"))
                .then(TxnOp::put("c", "30"))
                .then(TxnOp::delete("missing")),
        )
        .await;
    // So is a key twice in one branch.
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(s.revision().unwrap(), 2);

    let r = s
        .txn(
            Txn::new()
                .when(Compare::revision("a", a))
                .then(TxnOp::put("a", "10"))
                .then(TxnOp::delete("b"))
                .then(TxnOp::put("c", "30"))
                .then(TxnOp::delete("missing"))
                .then(TxnOp::get("d")),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        TxnResponse::new(
            true,
            None,
            vec![
                TxnOpResult::Put { revision: 3 },
                TxnOpResult::Delete { existed: true },
                TxnOpResult::Put { revision: 3 },
                TxnOpResult::Delete { existed: false },
                TxnOpResult::Get(None),
            ],
            Some(3),
        )
    );
    assert_eq!(s.revision().unwrap(), 3);
    assert_eq!(s.get("a").await.unwrap(), Some(KvPair::new("a", "10", 3)));
    assert_eq!(s.get("b").await.unwrap(), None);
    assert_eq!(s.get("c").await.unwrap(), Some(KvPair::new("c", "30", 3)));

    // Gets read the state before the transaction, whatever their place.
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put("d", "40"))
                .then(TxnOp::get("a"))
                .then(TxnOp::get("b"))
                .then(TxnOp::delete("c")),
        )
        .await
        .unwrap();
    assert_eq!(
        r.results,
        vec![
            TxnOpResult::Put { revision: 4 },
            TxnOpResult::Get(Some(KvPair::new("a", "10", 3))),
            TxnOpResult::Get(None),
            TxnOpResult::Delete { existed: true },
        ]
    );
    assert_eq!(r.revision, Some(4));
    assert_eq!(r.get(1), Some(&KvPair::new("a", "10", 3)));
    // The next write goes on after the transaction's one revision.
    assert_eq!(put(&s, "e", "5").await, 5);
}

#[tokio::test]
async fn a_branch_that_writes_nothing_has_no_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let a = put(&s, "a", "1").await;
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::delete("gone"))
                .then(TxnOp::delete("also/gone"))
                .then(TxnOp::get("a")),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        TxnResponse::new(
            true,
            None,
            vec![
                TxnOpResult::Delete { existed: false },
                TxnOpResult::Delete { existed: false },
                TxnOpResult::Get(Some(KvPair::new("a", "1", a))),
            ],
            None,
        )
    );
    let empty = s.txn(Txn::new()).await.unwrap();
    assert_eq!(empty, TxnResponse::new(true, None, vec![], None));
    assert_eq!(s.revision().unwrap(), a);
    assert_eq!(put(&s, "b", "2").await, a + 1);
}

#[tokio::test]
async fn a_failed_compare_writes_nothing_of_success_and_runs_failure() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let a = put(&s, "a", "1").await;
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(a))
        .await
        .unwrap();
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("a"))
                .when(Compare::revision("a", a + 7))
                .then(TxnOp::put("x", "never"))
                .then(TxnOp::delete("a"))
                .or_else(TxnOp::get("a"))
                .or_else(TxnOp::put("failed", "yes")),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        TxnResponse::new(
            false,
            Some(1),
            vec![
                TxnOpResult::Get(Some(KvPair::new("a", "1", a))),
                TxnOpResult::Put { revision: a + 1 },
            ],
            Some(a + 1),
        )
    );
    assert_eq!(s.get("x").await.unwrap(), None);
    assert_eq!(s.get("a").await.unwrap(), Some(KvPair::new("a", "1", a)));
    assert_eq!(
        s.get("failed").await.unwrap(),
        Some(KvPair::new("failed", "yes", a + 1))
    );
    assert_eq!(event(&mut w).await, put_event("failed", "yes", a + 1));
    quiet(&mut w).await;

    // A failed compare with an empty failure branch writes nothing at all.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::absent("a"))
                .then(TxnOp::put("x", "never")),
        )
        .await
        .unwrap();
    assert_eq!(r, TxnResponse::new(false, Some(0), vec![], None));
    assert_eq!(s.revision().unwrap(), a + 1);
    quiet(&mut w).await;
}

#[tokio::test]
async fn each_compare_kind_holds_and_fails_as_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "root").await;
    let k = put(&s, "k", "v").await;
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::revision("k", k), true),
        (Compare::revision("k", k + 1), false),
        (Compare::revision("none", k), false),
        (Compare::absent("none"), true),
        (Compare::absent("k"), false),
        (Compare::present("k"), true),
        (Compare::present("none"), false),
        (Compare::value("k", "v"), true),
        (Compare::value("k", "w"), false),
        (Compare::value("k", ""), false),
        (Compare::value("none", ""), false),
        // Keys are canonicalized as everywhere.
        (Compare::present("/k/"), true),
    ];
    for (c, holds) in cases {
        let shown = format!("{c:?}");
        let r = s
            .txn(
                Txn::new()
                    .when(c)
                    .then(TxnOp::get("k"))
                    .or_else(TxnOp::get("none")),
            )
            .await
            .unwrap();
        assert_eq!(r.succeeded, holds, "{shown}");
        assert_eq!(r.failed_compare, (!holds).then_some(0), "{shown}");
        let expected = if holds {
            TxnOpResult::Get(Some(KvPair::new("k", "v", k)))
        } else {
            TxnOpResult::Get(None)
        };
        assert_eq!(r.results, vec![expected], "{shown}");
        assert_eq!(r.revision, None, "{shown}");
    }
    // Compares see only the store's root.
    let other = open(&file_of(&s), "elsewhere").await;
    let r = other
        .txn(Txn::new().when(Compare::absent("k")))
        .await
        .unwrap();
    assert!(r.succeeded);
}

fn file_of(s: &RedbStore) -> PathBuf {
    s.path().to_path_buf()
}

#[tokio::test]
async fn failed_compare_names_the_first_that_did_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let a = put(&s, "a", "1").await;
    let compares = vec![
        Compare::present("a"),
        Compare::value("a", "1"),
        Compare::absent("b"),
        Compare::revision("a", a + 1),
        Compare::present("b"),
        Compare::absent("a"),
    ];
    let mut txn = Txn::new().then(TxnOp::put("never", "x"));
    for c in compares {
        txn = txn.when(c);
    }
    let r = s.txn(txn).await.unwrap();
    assert_eq!((r.succeeded, r.failed_compare), (false, Some(3)));
    assert_eq!(s.get("never").await.unwrap(), None);
}

#[tokio::test]
async fn ttl_and_lease_puts_behave_as_put_does() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(0))
        .await
        .unwrap();
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "ttl",
                    "t",
                    PutOptions::new().with_ttl(Duration::from_millis(300)),
                ))
                .then(TxnOp::put_with(
                    "leased",
                    "l",
                    PutOptions::new().with_lease(lease.id()),
                ))
                .then(TxnOp::put_with(
                    "tiny",
                    "m",
                    PutOptions::new().with_ttl(Duration::from_nanos(1)),
                ))
                .then(TxnOp::put("plain", "p")),
        )
        .await
        .unwrap();
    let rev = r.revision.expect("the transaction wrote");
    assert_eq!(rev, 1);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(event(&mut w).await);
    }
    assert_eq!(
        seen,
        vec![
            put_event("ttl", "t", rev),
            put_event("leased", "l", rev),
            put_event("tiny", "m", rev),
            put_event("plain", "p", rev),
        ]
    );
    // The TTLs expire, each key with its own revision and Delete (the
    // one raised to the minimum first).
    let mut expired = vec![event(&mut w).await, event(&mut w).await];
    expired.sort_by_key(WatchEvent::revision);
    assert_eq!(
        expired,
        vec![delete_event("tiny", rev + 1), delete_event("ttl", rev + 2)]
    );
    assert_eq!(s.get("ttl").await.unwrap(), None);
    // The leased key goes with its lease.
    lease.revoke().await.unwrap();
    assert_eq!(event(&mut w).await, delete_event("leased", rev + 3));
    assert_eq!(s.get("leased").await.unwrap(), None);
    assert_eq!(
        s.get("plain").await.unwrap(),
        Some(KvPair::new("plain", "p", rev))
    );
}

#[tokio::test]
async fn a_transaction_rewriting_a_ttl_key_cancels_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let ttl = PutOptions::new().with_ttl(Duration::from_millis(200));
    s.put("k", "old".into(), ttl).await.unwrap();
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put("k", "new"))
                .then(TxnOp::put("j", "x")),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.get("k").await.unwrap(),
        Some(KvPair::new("k", "new", r.revision.unwrap()))
    );
}

#[tokio::test]
async fn a_lost_lease_fails_the_whole_transaction_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let live = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let dead = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let dead_id = dead.id();
    dead.revoke().await.unwrap();
    let bound = s
        .put("bound", "b".into(), PutOptions::new().with_lease(live.id()))
        .await
        .unwrap();
    let kept = put(&s, "kept", "k").await;
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(kept))
        .await
        .unwrap();

    let e = s
        .txn(
            Txn::new()
                .when(Compare::present("kept"))
                .then(TxnOp::put_with(
                    "bound",
                    "again",
                    PutOptions::new().with_lease(live.id()),
                ))
                .then(TxnOp::put_with(
                    "fresh",
                    "f",
                    PutOptions::new().with_lease(live.id()),
                ))
                .then(TxnOp::put_with(
                    "doomed",
                    "d",
                    PutOptions::new().with_lease(dead_id),
                ))
                .then(TxnOp::delete("kept"))
                .then(TxnOp::put("plain", "p")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::LeaseLost { lease, .. } if lease == dead_id.0),
        "{e:?}"
    );
    assert_eq!(s.revision().unwrap(), kept);
    for k in ["fresh", "doomed", "plain"] {
        assert_eq!(s.get(k).await.unwrap(), None, "{k}");
    }
    assert_eq!(
        s.get("bound").await.unwrap(),
        Some(KvPair::new("bound", "b", bound))
    );
    assert_eq!(
        s.get("kept").await.unwrap(),
        Some(KvPair::new("kept", "k", kept))
    );
    quiet(&mut w).await;

    // The key bound before is still bound: it goes with its lease; nothing
    // else does.
    live.revoke().await.unwrap();
    assert_eq!(event(&mut w).await, delete_event("bound", kept + 1));
    quiet(&mut w).await;
    assert_eq!(s.revision().unwrap(), kept + 1);
}

#[tokio::test]
async fn transactions_over_the_limit_are_refused_and_at_it_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let at_limit = (0..MAX_TXN_OPS).fold(Txn::new(), |t, i| {
        t.then(TxnOp::put(format!("k/{i:03}"), "v"))
    });
    let over = at_limit.clone().then(TxnOp::put("k/over", "v"));
    let e = s.txn(over).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("129") && m.contains("128")),
        "{e:?}"
    );
    let compares =
        (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.when(Compare::absent(format!("c/{i}"))));
    assert_eq!(
        s.txn(compares).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let failure =
        (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.or_else(TxnOp::get(format!("f/{i}"))));
    assert_eq!(
        s.txn(failure).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(s.revision().unwrap(), 0);

    let r = s.txn(at_limit).await.unwrap();
    assert_eq!(r.revision, Some(1));
    assert_eq!(r.results.len(), MAX_TXN_OPS);
    let listed = s.list("k").await.unwrap();
    assert_eq!(listed.len(), MAX_TXN_OPS);
    assert!(listed.iter().all(|p| p.revision == 1));
    // Values over the limit are refused before anything is written too.
    let big = vec![0u8; s.capabilities().max_value_size + 1];
    let e = s
        .txn(
            Txn::new()
                .then(TxnOp::put("a", "x"))
                .then(TxnOp::put("big", big)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge);
    assert_eq!(s.revision().unwrap(), 1);
}

#[tokio::test]
async fn a_watcher_sees_a_transaction_whole_among_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&file(&dir), "").await);
    let mut w = s.watch_tree("", WatchOptions::new()).await.unwrap();
    assert_eq!(event(&mut w).await, WatchEvent::Synced { revision: 0 });

    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                s.put(&format!("single/{}", i % 7), "s".into(), PutOptions::new())
                    .await
                    .unwrap();
            }
        })
    };
    let mut txn_revisions = Vec::new();
    for i in 0..20 {
        let r = s
            .txn(
                Txn::new()
                    .then(TxnOp::put(format!("t/{i}/a"), "a"))
                    .then(TxnOp::put(format!("t/{i}/b"), "b"))
                    .then(TxnOp::put(format!("t/{i}/c"), "c"))
                    // The first deletes a key that is not there: no event.
                    .then(TxnOp::delete(match i {
                        0 => "t/none".to_owned(),
                        i => format!("t/{}/a", i - 1),
                    })),
            )
            .await
            .unwrap();
        txn_revisions.push(r.revision.unwrap());
    }
    writer.await.unwrap();
    let total = s.revision().unwrap();

    // Every event up to the last revision, in revision order; each
    // transaction's events in one run.
    let mut events = Vec::new();
    while events.last().map(WatchEvent::revision) != Some(total) {
        events.push(event(&mut w).await);
    }
    let revisions: Vec<u64> = events.iter().map(WatchEvent::revision).collect();
    assert!(revisions.windows(2).all(|p| p[0] <= p[1]), "{revisions:?}");
    for (i, rev) in txn_revisions.iter().enumerate() {
        let at: Vec<&WatchEvent> = events.iter().filter(|e| e.revision() == *rev).collect();
        let expected = if i == 0 { 3 } else { 4 };
        assert_eq!(at.len(), expected, "transaction {i} at {rev}: {at:?}");
        let first = revisions.iter().position(|r| r == rev).unwrap();
        assert!(revisions[first..first + expected].iter().all(|r| r == rev));
    }

    // A resume from a transaction's revision skips all of it; from before,
    // sees all of it.
    let rev = txn_revisions[5];
    let mut from = s
        .watch_tree("t/5", WatchOptions::from_revision(rev))
        .await
        .unwrap();
    let after = s
        .put("t/5/later", "l".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        event(&mut from).await,
        delete_event("t/5/a", txn_revisions[6])
    );
    assert_eq!(event(&mut from).await, put_event("t/5/later", "l", after));
    let mut before = s
        .watch_tree("t/5", WatchOptions::from_revision(rev - 1))
        .await
        .unwrap();
    assert_eq!(event(&mut before).await, put_event("t/5/a", "a", rev));
    assert_eq!(event(&mut before).await, put_event("t/5/b", "b", rev));
    assert_eq!(event(&mut before).await, put_event("t/5/c", "c", rev));
}

#[tokio::test]
async fn reopening_keeps_a_transaction_s_revision_and_history() {
    for durability in [Durability::Immediate, Durability::Eventual] {
        let dir = tempfile::tempdir().unwrap();
        let path = file(&dir);
        let config = RedbConfig::new(&path).with_durability(durability);
        let s = RedbStore::open(config.clone()).await.unwrap();
        let before = put(&s, "gone", "g").await;
        let r = s
            .txn(
                Txn::new()
                    .then(TxnOp::put("x", "1"))
                    .then(TxnOp::delete("gone"))
                    .then(TxnOp::put("y", "2")),
            )
            .await
            .unwrap();
        let rev = r.revision.unwrap();
        assert_eq!(rev, before + 1);
        s.close().await.unwrap();
        drop(s);

        let s = RedbStore::open(config.clone()).await.unwrap();
        assert_eq!(s.revision().unwrap(), rev, "{durability:?}");
        assert_eq!(s.get("x").await.unwrap(), Some(KvPair::new("x", "1", rev)));
        assert_eq!(s.get("y").await.unwrap(), Some(KvPair::new("y", "2", rev)));
        assert_eq!(s.get("gone").await.unwrap(), None);
        let mut w = s
            .watch_tree("", WatchOptions::from_revision(before))
            .await
            .unwrap();
        assert_eq!(event(&mut w).await, put_event("x", "1", rev));
        assert_eq!(event(&mut w).await, delete_event("gone", rev));
        assert_eq!(event(&mut w).await, put_event("y", "2", rev));
        quiet(&mut w).await;
        let mut skip = s
            .watch_tree("", WatchOptions::from_revision(rev))
            .await
            .unwrap();
        assert_eq!(put(&s, "z", "3").await, rev + 1);
        assert_eq!(event(&mut skip).await, put_event("z", "3", rev + 1));
        assert_eq!(event(&mut w).await, put_event("z", "3", rev + 1));
    }
}

#[tokio::test]
async fn a_restart_keeps_a_transaction_s_history_for_open_watches() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&file(&dir), "").await;
    let a = put(&s, "a", "1").await;
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put("b", "2"))
                .then(TxnOp::delete("a")),
        )
        .await
        .unwrap();
    let rev = r.revision.unwrap();
    s.restart(Duration::from_millis(50)).await.unwrap();
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(a))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("b", "2", rev));
    assert_eq!(event(&mut w).await, delete_event("a", rev));
}

#[tokio::test]
async fn the_history_limit_keeps_or_drops_a_transaction_whole_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let config = RedbConfig::new(&path).with_history(4);
    let s = RedbStore::open(config.clone()).await.unwrap();
    let first = put(&s, "first", "f").await;
    let txn = (0..6).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("k{i}"), "v")));
    let rev = s.txn(txn).await.unwrap().revision.unwrap();
    let last = put(&s, "last", "l").await;
    drop(s);

    // The file keeps whole records: the transaction, the newest change
    // after it, and nothing before.
    let s = RedbStore::open(config.clone()).await.unwrap();
    let mut from_first = s
        .watch_tree("", WatchOptions::from_revision(first - 1))
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, from_first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Compacted);
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(rev))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("last", "l", last));

    // Another transaction pushes the first out whole.
    let txn = (0..3).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("m{i}"), "v")));
    let rev2 = s.txn(txn).await.unwrap().revision.unwrap();
    drop(w);
    drop(s);
    let s = RedbStore::open(config).await.unwrap();
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(rev2 - 1))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(event(&mut w).await, put_event(&format!("m{i}"), "v", rev2));
    }
}

#[tokio::test]
async fn compaction_past_a_transaction_goes_on_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    let rev = s
        .txn(
            Txn::new()
                .then(TxnOp::put("a", "1"))
                .then(TxnOp::put("b", "2")),
        )
        .await
        .unwrap()
        .revision
        .unwrap();
    let after = put(&s, "c", "3").await;
    s.compact(rev).await.unwrap();
    drop(s);
    let s = open(&path, "").await;
    let mut old = s
        .watch_tree("", WatchOptions::from_revision(rev - 1))
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, old.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Compacted);
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(rev))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("c", "3", after));
}

/// The layout version the file records.
fn layout(path: &Path) -> Vec<u8> {
    let db = redb::Database::create(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("anykv_meta");
    let t = txn.open_table(def).unwrap();
    let raw = redb::ReadableTable::get(&t, "format").unwrap().unwrap();
    raw.value().to_vec()
}

#[tokio::test]
async fn a_file_moves_to_layout_2_with_its_first_transaction_of_several_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    put(&s, "a", "1").await;
    // One key: the history record is the one `put` writes.
    s.txn(Txn::new().then(TxnOp::put("b", "2")).then(TxnOp::get("a")))
        .await
        .unwrap();
    drop(s);
    assert_eq!(layout(&path), 1u64.to_le_bytes());

    let s = open(&path, "").await;
    s.txn(
        Txn::new()
            .then(TxnOp::put("c", "3"))
            .then(TxnOp::delete("a")),
    )
    .await
    .unwrap();
    drop(s);
    assert_eq!(layout(&path), 2u64.to_le_bytes());
    let s = open(&path, "").await;
    assert_eq!(s.get("c").await.unwrap(), Some(KvPair::new("c", "3", 3)));
}

#[tokio::test]
async fn a_malformed_transaction_record_is_a_backend_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    s.txn(
        Txn::new()
            .then(TxnOp::put("a", "1"))
            .then(TxnOp::put("b", "2")),
    )
    .await
    .unwrap();
    drop(s);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, &[u8]> =
                redb::TableDefinition::new("anykv_history");
            let mut t = txn.open_table(def).unwrap();
            t.insert(1, &[3u8, 2, 0, 0, 0, 200, 0, 0, 0][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let e = RedbStore::open(RedbConfig::new(&path)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("revision 1"), "{e}");
}
