//! Transactions on a real etcd server, as one etcd `Txn`: `cargo test -p
//! anykv-etcd --test txn`. Most cases use the shared test server, each
//! under a root of its own; the ones that count the server's leases or
//! revisions start a server of their own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{
    Compare, Error, KvPair, LeaseId, PutOptions, Store, Txn, TxnOp, TxnOpResult, WatchEvent,
    WatchOptions,
};
use anykv_etcd::{EtcdConfig, EtcdStore, DEFAULT_MAX_TXN_OPS, MAX_VALUE_SIZE};
use anykv_testserver::etcd::{shared_url, EtcdServer};

async fn store(root: &str) -> Arc<dyn Store> {
    common::open(&format!("{}/txn-tests/{root}", shared_url())).await
}

async fn put(s: &dyn Store, key: &str, value: &str) -> u64 {
    s.put(key, value.to_owned().into(), PutOptions::new())
        .await
        .expect("put")
}

async fn value(s: &dyn Store, key: &str) -> Option<(String, u64)> {
    s.get(key).await.expect("get").map(|p| {
        (
            String::from_utf8(p.value.to_vec()).expect("utf-8"),
            p.revision,
        )
    })
}

#[tokio::test]
async fn capabilities_say_transactions() {
    let s = store("caps").await;
    assert!(s.capabilities().transactions);
    assert_eq!(s.capabilities().max_txn_ops, 64);
    assert_eq!(DEFAULT_MAX_TXN_OPS, 64);
}

#[tokio::test]
async fn all_or_nothing() {
    let s = store("all-or-nothing").await;
    s.delete_tree("").await.expect("clean");
    let r0 = put(&*s, "a", "1").await;

    // A compare that fails: nothing of the success branch is written.
    let failed = s
        .txn(
            Txn::new()
                .when(Compare::value("a", "2"))
                .then(TxnOp::put("b", "x"))
                .then(TxnOp::delete("a"))
                .or_else(TxnOp::get("a")),
        )
        .await
        .expect("txn");
    assert!(!failed.succeeded);
    assert_eq!(failed.failed_compare, Some(0));
    assert_eq!(
        failed.results,
        vec![TxnOpResult::Get(Some(KvPair::new("a", "1", r0)))]
    );
    assert_eq!(failed.revision, None);
    assert_eq!(value(&*s, "b").await, None);
    assert_eq!(value(&*s, "a").await, Some(("1".into(), r0)));

    // The same with a compare that holds: everything, at one revision.
    let done = s
        .txn(
            Txn::new()
                .when(Compare::value("a", "1"))
                .then(TxnOp::put("b", "x"))
                .then(TxnOp::put("c", "y"))
                .then(TxnOp::delete("a"))
                .then(TxnOp::get("d"))
                .or_else(TxnOp::get("a")),
        )
        .await
        .expect("txn");
    assert!(done.succeeded);
    assert_eq!(done.failed_compare, None);
    let rev = done.revision.expect("the branch wrote");
    assert!(rev > r0);
    assert_eq!(
        done.results,
        vec![
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Delete { existed: true },
            TxnOpResult::Get(None),
        ]
    );
    assert_eq!(value(&*s, "a").await, None);
    assert_eq!(value(&*s, "b").await, Some(("x".into(), rev)));
    assert_eq!(value(&*s, "c").await, Some(("y".into(), rev)));
    // Keys map through the root like single writes: a store on the
    // parent root sees them under the child's prefix.
    let parent = store("").await;
    assert_eq!(
        value(&*parent, "all-or-nothing/b").await,
        Some(("x".into(), rev))
    );
}

#[tokio::test]
async fn each_compare_kind() {
    let s = store("compare-kinds").await;
    s.delete_tree("").await.expect("clean");
    let ra = put(&*s, "a", "va").await;
    let empty = put(&*s, "e", "").await;
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::revision("a", ra), true),
        (Compare::revision("a", ra + 1), false),
        (Compare::revision("a", 0), false),
        (Compare::revision("a", u64::MAX), false),
        (Compare::revision("missing", ra), false),
        (Compare::revision("missing", 0), false),
        (Compare::absent("missing"), true),
        (Compare::absent("a"), false),
        (Compare::absent("e"), false),
        (Compare::present("a"), true),
        (Compare::present("e"), true),
        (Compare::present("missing"), false),
        (Compare::value("a", "va"), true),
        (Compare::value("a", "vb"), false),
        (Compare::value("a", ""), false),
        (Compare::value("e", ""), true),
        (Compare::revision("e", empty), true),
        // A missing key never holds a value, not even the empty one.
        (Compare::value("missing", ""), false),
        (Compare::value("missing", "x"), false),
    ];
    for (compare, holds) in cases {
        let r = s
            .txn(Txn::new().when(compare.clone()).then(TxnOp::get("a")))
            .await
            .unwrap_or_else(|e| panic!("{compare:?}: {e}"));
        assert_eq!(r.succeeded, holds, "{compare:?}");
        assert_eq!(
            r.failed_compare,
            (!holds).then_some(0),
            "{compare:?}: failed_compare"
        );
        let expected = if holds {
            vec![TxnOpResult::Get(Some(KvPair::new("a", "va", ra)))]
        } else {
            Vec::new()
        };
        assert_eq!(r.results, expected, "{compare:?}");
        assert_eq!(r.revision, None);
    }
    // Nothing was written.
    assert_eq!(value(&*s, "a").await, Some(("va".into(), ra)));
    assert_eq!(value(&*s, "missing").await, None);
}

#[tokio::test]
async fn failed_compare_is_the_first_that_does_not_hold() {
    let s = store("failed-compare").await;
    s.delete_tree("").await.expect("clean");
    let ra = put(&*s, "a", "1").await;
    let rc = put(&*s, "c", "z").await;
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("a"))
                .when(Compare::absent("b"))
                .when(Compare::revision("a", ra))
                .when(Compare::value("c", "x"))
                .when(Compare::revision("a", ra + 100))
                .when(Compare::present("nope"))
                .then(TxnOp::put("written", "no"))
                .or_else(TxnOp::get("c"))
                .or_else(TxnOp::put("a", "2"))
                .or_else(TxnOp::delete("nothing")),
        )
        .await
        .expect("txn");
    assert!(!r.succeeded);
    assert_eq!(r.failed_compare, Some(3));
    let rev = r.revision.expect("the failure branch wrote");
    // Only the user's operations' results: the reads of the compared keys
    // are not among them.
    assert_eq!(
        r.results,
        vec![
            TxnOpResult::Get(Some(KvPair::new("c", "z", rc))),
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Delete { existed: false },
        ]
    );
    assert_eq!(value(&*s, "a").await, Some(("2".into(), rev)));
    assert_eq!(value(&*s, "written").await, None);

    // The compared key written by the failure branch is read before it.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::absent("a"))
                .or_else(TxnOp::put("a", "3"))
                .or_else(TxnOp::get("x")),
        )
        .await
        .expect("txn");
    assert_eq!(r.failed_compare, Some(0));
    let rev2 = r.revision.expect("wrote");
    assert_eq!(
        r.results,
        vec![TxnOpResult::Put { revision: rev2 }, TxnOpResult::Get(None)]
    );
    // A key compared twice, the second compare failing.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::value("a", "3"))
                .when(Compare::revision("a", rev2))
                .when(Compare::value("a", "2")),
        )
        .await
        .expect("txn");
    assert_eq!((r.succeeded, r.failed_compare), (false, Some(2)));
    assert_eq!(r.results, Vec::new());
}

#[tokio::test]
async fn writes_share_one_revision_and_empty_branches_have_none() {
    let s = store("one-revision").await;
    s.delete_tree("").await.expect("clean");
    put(&*s, "old", "x").await;
    let before = put(&*s, "keep", "k").await;
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::delete("old"))
                .then(TxnOp::put("new/1", "a"))
                .then(TxnOp::put("new/2", "b"))
                .then(TxnOp::delete("absent"))
                .then(TxnOp::get("keep")),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    let rev = r.revision.expect("wrote");
    assert!(rev > before);
    assert_eq!(
        r.results,
        vec![
            TxnOpResult::Delete { existed: true },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Delete { existed: false },
            TxnOpResult::Get(Some(KvPair::new("keep", "k", before))),
        ]
    );
    let listed: Vec<u64> = s
        .list("new")
        .await
        .expect("list")
        .iter()
        .map(|p| p.revision)
        .collect();
    assert_eq!(listed, vec![rev, rev]);

    // A delete that removes something is a write on its own.
    let r = s
        .txn(Txn::new().then(TxnOp::delete("new/1")))
        .await
        .expect("txn");
    let del = r.revision.expect("the delete wrote");
    assert!(del > rev);
    assert_eq!(r.results, vec![TxnOpResult::Delete { existed: true }]);

    // Only gets and deletes of absent keys: no revision.
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::delete("absent"))
                .then(TxnOp::delete("new/1"))
                .then(TxnOp::get("keep")),
        )
        .await
        .expect("txn");
    assert_eq!(r.revision, None);
    assert_eq!(
        r.results,
        vec![
            TxnOpResult::Delete { existed: false },
            TxnOpResult::Delete { existed: false },
            TxnOpResult::Get(Some(KvPair::new("keep", "k", before))),
        ]
    );
    // An empty transaction: nothing at all.
    let r = s.txn(Txn::new()).await.expect("txn");
    assert!(r.succeeded);
    assert_eq!((r.failed_compare, r.revision), (None, None));
    assert!(r.results.is_empty());
}

#[tokio::test]
async fn ttl_put_and_lease_put() {
    let s = store("ttl-lease").await;
    s.delete_tree("").await.expect("clean");
    let lease = s.grant_lease(Duration::from_secs(30)).await.expect("lease");
    let r = s
        .txn(
            Txn::new()
                .when(Compare::absent("t"))
                .then(TxnOp::put_with(
                    "t",
                    "short",
                    PutOptions::new().with_ttl(Duration::from_millis(100)),
                ))
                .then(TxnOp::put_with(
                    "l",
                    "leased",
                    PutOptions::new().with_lease(lease.id()),
                ))
                .then(TxnOp::put("p", "permanent"))
                .or_else(TxnOp::put_with(
                    "other",
                    "x",
                    PutOptions::new().with_ttl(Duration::from_secs(60)),
                )),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    let rev = r.revision.expect("wrote");
    assert_eq!(value(&*s, "t").await, Some(("short".into(), rev)));
    assert_eq!(value(&*s, "l").await, Some(("leased".into(), rev)));
    assert_eq!(value(&*s, "other").await, None);
    // The TTL (raised to etcd's 2 s) ends the key; the others stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&*s, "t").await.is_some() {
        assert!(Instant::now() < deadline, "the TTL key outlived its TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(value(&*s, "l").await, Some(("leased".into(), rev)));
    assert_eq!(value(&*s, "p").await, Some(("permanent".into(), rev)));
    // The lease's keys go with it.
    lease.revoke().await.expect("revoke");
    assert_eq!(value(&*s, "l").await, None);
    assert_eq!(value(&*s, "p").await, Some(("permanent".into(), rev)));
}

#[tokio::test]
async fn a_lease_that_is_gone_fails_the_whole_txn() {
    let s = store("lease-gone").await;
    s.delete_tree("").await.expect("clean");
    let live = s.grant_lease(Duration::from_secs(30)).await.expect("lease");
    let gone = s.grant_lease(Duration::from_secs(30)).await.expect("lease");
    let gone_id = gone.id();
    gone.revoke().await.expect("revoke");
    let before = put(&*s, "existing", "e").await;

    let e = s
        .txn(
            Txn::new()
                .then(TxnOp::put("plain", "p"))
                .then(TxnOp::put_with(
                    "ttl",
                    "t",
                    PutOptions::new().with_ttl(Duration::from_secs(30)),
                ))
                .then(TxnOp::put_with(
                    "live",
                    "l",
                    PutOptions::new().with_lease(live.id()),
                ))
                .then(TxnOp::put_with(
                    "dead",
                    "d",
                    PutOptions::new().with_lease(gone_id),
                ))
                .then(TxnOp::delete("existing")),
        )
        .await
        .expect_err("a put on a revoked lease");
    match e {
        Error::LeaseLost { lease, .. } => assert_eq!(lease, gone_id.0),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    for k in ["plain", "ttl", "live", "dead"] {
        assert_eq!(value(&*s, k).await, None, "{k}");
    }
    assert_eq!(value(&*s, "existing").await, Some(("e".into(), before)));

    // A lease id etcd could never have is gone too.
    let e = s
        .txn(Txn::new().then(TxnOp::put_with(
            "x",
            "x",
            PutOptions::new().with_lease(LeaseId(u64::MAX)),
        )))
        .await
        .expect_err("a lease etcd cannot have");
    assert!(
        matches!(e, Error::LeaseLost { lease, .. } if lease == u64::MAX),
        "{e:?}"
    );
    // Nor lease 0 (to etcd, "no lease"): in a txn as in a put.
    let e = s
        .txn(Txn::new().then(TxnOp::put_with(
            "x",
            "x",
            PutOptions::new().with_lease(LeaseId(0)),
        )))
        .await
        .expect_err("lease 0");
    assert!(matches!(e, Error::LeaseLost { lease: 0, .. }), "{e:?}");
    let e = s
        .put("x", "x".into(), PutOptions::new().with_lease(LeaseId(0)))
        .await
        .expect_err("lease 0");
    assert!(matches!(e, Error::LeaseLost { lease: 0, .. }), "{e:?}");
    assert_eq!(value(&*s, "x").await, None);

    // A gone lease in the branch that does not run is no error.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("existing"))
                .then(TxnOp::put("ok", "1"))
                .or_else(TxnOp::put_with(
                    "dead",
                    "d",
                    PutOptions::new().with_lease(gone_id),
                )),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    assert!(r.revision.is_some());
    live.revoke().await.expect("revoke");
}

#[tokio::test]
async fn limits_are_refused_before_sending() {
    let s = store("limits").await;
    s.delete_tree("").await.expect("clean");
    let max = s.capabilities().max_txn_ops;
    let over = (0..=max).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("k{i}"), "x")));
    let e = s.txn(over).await.expect_err("too many operations");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let over = (0..=max).fold(Txn::new().then(TxnOp::put("k", "x")), |t, i| {
        t.when(Compare::absent(format!("c{i}")))
    });
    let e = s.txn(over).await.expect_err("too many compares");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let over = (0..=max).fold(Txn::new().then(TxnOp::put("k", "x")), |t, i| {
        t.or_else(TxnOp::get(format!("g{i}")))
    });
    let e = s.txn(over).await.expect_err("too many failure operations");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    // Two values at the size limit make a request over etcd's.
    let big = vec![b'v'; MAX_VALUE_SIZE];
    let e = s
        .txn(
            Txn::new()
                .then(TxnOp::put("big1", big.clone()))
                .then(TxnOp::put("big2", big.clone())),
        )
        .await
        .expect_err("too large");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let e = s
        .txn(Txn::new().then(TxnOp::put("bad//key", "x")))
        .await
        .expect_err("bad key");
    assert!(matches!(e, Error::InvalidKey { .. }), "{e:?}");
    assert!(s.list("").await.expect("list").is_empty());

    // One value at the limit is fine.
    let r = s
        .txn(Txn::new().then(TxnOp::put("big", big.clone())))
        .await
        .expect("one value at the limit");
    assert_eq!(
        s.get("big").await.expect("get").map(|p| p.value.len()),
        Some(MAX_VALUE_SIZE)
    );
    assert!(r.revision.is_some());
}

#[tokio::test]
async fn replies_larger_than_grpc_default_limit() {
    let s = store("big-replies").await;
    s.delete_tree("").await.expect("clean");
    let big = vec![b'v'; MAX_VALUE_SIZE - 1000];
    for i in 0..8 {
        s.put(&format!("b{i}"), big.clone().into(), PutOptions::new())
            .await
            .expect("put");
    }
    // Four replaced values and four read ones: some 12 MB of reply.
    let mut t = Txn::new();
    for i in 0..4 {
        t = t
            .when(Compare::present(format!("b{}", i + 4)))
            .then(TxnOp::put(format!("b{i}"), "small"))
            .then(TxnOp::get(format!("b{}", i + 4)));
    }
    let r = s.txn(t).await.expect("a txn with a large reply");
    assert!(r.succeeded);
    for i in 0..4 {
        assert_eq!(r.get(2 * i + 1).map(|p| p.value.len()), Some(big.len()));
        assert_eq!(
            value(&*s, &format!("b{i}")).await.map(|v| v.0),
            Some("small".into())
        );
    }
    // The failure branch reads the compared values, too.
    let mut t = Txn::new();
    for i in 4..8 {
        t = t.when(Compare::value(format!("b{i}"), "not it"));
    }
    let r = s.txn(t.or_else(TxnOp::delete("b5"))).await.expect("txn");
    assert_eq!(r.failed_compare, Some(0));
    assert_eq!(r.results, vec![TxnOpResult::Delete { existed: true }]);
    s.delete_tree("").await.expect("clean");
}

#[tokio::test]
async fn the_largest_transaction_fits_the_server() {
    let s = store("largest").await;
    s.delete_tree("").await.expect("clean");
    let max = s.capabilities().max_txn_ops;
    // As many distinct compared keys (all read by the failure branch) as
    // failure operations, all TTL puts (each with its marker): more than
    // etcd's 128 operations if sent in one branch.
    let mut t = Txn::new();
    for i in 0..max {
        t = t
            .when(Compare::present(format!("c{i}")))
            .then(TxnOp::put(format!("s{i}"), "x"))
            .or_else(TxnOp::put_with(
                format!("f{i}"),
                "y",
                PutOptions::new().with_ttl(Duration::from_secs(30)),
            ));
    }
    let r = s.txn(t).await.expect("the largest transaction");
    assert!(!r.succeeded);
    assert_eq!(r.failed_compare, Some(0));
    let rev = r.revision.expect("wrote");
    assert_eq!(r.results, vec![TxnOpResult::Put { revision: rev }; max]);
    assert_eq!(s.list("").await.expect("list").len(), max);

    // And the success branch: every put with a TTL.
    let mut t = Txn::new();
    for i in 0..max {
        t = t
            .when(Compare::present(format!("f{i}")))
            .then(TxnOp::put_with(
                format!("f{i}"),
                "z",
                PutOptions::new().with_ttl(Duration::from_secs(30)),
            ))
            .or_else(TxnOp::get(format!("f{i}")));
    }
    let r = s.txn(t).await.expect("the largest transaction");
    assert!(r.succeeded);
    let rev2 = r.revision.expect("wrote");
    assert_eq!(r.results, vec![TxnOpResult::Put { revision: rev2 }; max]);
    let values: Vec<_> = s
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|p| (p.value, p.revision))
        .collect();
    assert_eq!(values, vec![(anykv_core::Bytes::from("z"), rev2); max]);
    s.delete_tree("").await.expect("clean");
}

#[tokio::test]
async fn max_txn_ops_is_configurable() {
    let s = common::open(&format!(
        "{}/txn-tests/configured?max_txn_ops=10",
        shared_url()
    ))
    .await;
    s.delete_tree("").await.expect("clean");
    assert_eq!(s.capabilities().max_txn_ops, 10);
    let over = (0..11).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("k{i}"), "x")));
    let e = s.txn(over).await.expect_err("over the configured limit");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    // Ten compared keys, ten TTL puts and their markers in the failure
    // branch: over the 20 operations assumed of the server, so the
    // markers go ahead of it.
    let mut t = Txn::new();
    for i in 0..10 {
        t = t
            .when(Compare::present(format!("c{i}")))
            .or_else(TxnOp::put_with(
                format!("f{i}"),
                "y",
                PutOptions::new().with_ttl(Duration::from_secs(30)),
            ));
    }
    let r = s.txn(t).await.expect("txn");
    assert_eq!(r.failed_compare, Some(0));
    assert_eq!(s.list("").await.expect("list").len(), 10);
    s.delete_tree("").await.expect("clean");

    // A limit above half the server's: the server refuses what does not
    // fit, as a whole.
    let s = common::open(&format!(
        "{}/txn-tests/too-high?max_txn_ops=200",
        shared_url()
    ))
    .await;
    s.delete_tree("").await.expect("clean");
    let big = (0..150).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("k{i}"), "x")));
    let e = s.txn(big).await.expect_err("over the server's limit");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(s.list("").await.expect("list").is_empty());
}

#[tokio::test]
async fn watchers_see_the_whole_txn_at_one_revision() {
    let s = store("watch").await;
    s.delete_tree("").await.expect("clean");
    let r0 = put(&*s, "w/gone", "g").await;
    let mut w = s
        .watch_tree("w", WatchOptions::from_revision(r0))
        .await
        .expect("watch");
    let r = s
        .txn(
            Txn::new()
                .then(TxnOp::put("w/a", "1"))
                .then(TxnOp::delete("w/gone"))
                .then(TxnOp::put_with(
                    "w/b",
                    "2",
                    PutOptions::new().with_ttl(Duration::from_secs(30)),
                ))
                .then(TxnOp::put("elsewhere", "3")),
        )
        .await
        .expect("txn");
    let rev = r.revision.expect("wrote");
    let after = put(&*s, "w/c", "4").await;
    let events = events_through(&mut w, after).await;
    let mut txn_events: Vec<String> = events
        .iter()
        .take(3)
        .map(|e| {
            assert_eq!(e.revision(), rev, "{events:?}");
            match e {
                WatchEvent::Put(p) => format!("put {}={:?}", p.key, p.value),
                WatchEvent::Delete { key, .. } => format!("delete {key}"),
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect();
    txn_events.sort();
    assert_eq!(
        txn_events,
        vec![
            "delete w/gone".to_owned(),
            "put w/a=b\"1\"".to_owned(),
            "put w/b=b\"2\"".to_owned(),
        ]
    );
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3].revision(), after);

    // Resuming at the transaction's revision skips all of it.
    let mut w = s
        .watch_tree("w", WatchOptions::from_revision(rev))
        .await
        .expect("watch");
    let ev = common::next(&mut w).await;
    assert_eq!(ev.revision(), after, "{ev:?}");
    s.delete_tree("").await.expect("clean");
}

#[tokio::test]
async fn a_read_only_txn_bumps_no_revision_and_unused_leases_are_revoked() {
    let server = EtcdServer::start_new();
    let s = EtcdStore::open(
        EtcdConfig::new([server.endpoint()])
            .with_root("own")
            .request_timeout(Duration::from_secs(2)),
    )
    .await
    .expect("open");
    let r1 = put(&s, "a", "1").await;
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("a"))
                .then(TxnOp::delete("absent"))
                .then(TxnOp::get("a"))
                .or_else(TxnOp::put("never", "x")),
        )
        .await
        .expect("txn");
    assert_eq!(r.revision, None);
    assert_eq!(
        r.results,
        vec![
            TxnOpResult::Delete { existed: false },
            TxnOpResult::Get(Some(KvPair::new("a", "1", r1))),
        ]
    );
    // etcd's revision did not move: the next write is the very next one.
    assert_eq!(put(&s, "b", "2").await, r1 + 1);

    // TTL puts in both branches: one lease each, and the one of the branch
    // that did not run is revoked (with its marker).
    assert_eq!(server.lease_count(), Ok(0));
    let r = s
        .txn(
            Txn::new()
                .when(Compare::absent("t"))
                .then(TxnOp::put_with(
                    "t",
                    "1",
                    PutOptions::new().with_ttl(Duration::from_secs(30)),
                ))
                .or_else(TxnOp::put_with(
                    "u",
                    "1",
                    PutOptions::new().with_ttl(Duration::from_secs(30)),
                )),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    wait_for_leases(&server, 1).await;
    // Rewriting the TTL key retires its lease; a failed txn keeps none.
    let r = s
        .txn(
            Txn::new()
                .when(Compare::present("t"))
                .then(TxnOp::put("t", "permanent")),
        )
        .await
        .expect("txn");
    assert!(r.succeeded);
    wait_for_leases(&server, 0).await;
    let lease = s.grant_lease(Duration::from_secs(30)).await.expect("lease");
    let id = lease.id();
    lease.revoke().await.expect("revoke");
    let e = s
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "x",
                    "1",
                    PutOptions::new().with_ttl(Duration::from_secs(30)),
                ))
                .then(TxnOp::put_with("y", "1", PutOptions::new().with_lease(id))),
        )
        .await
        .expect_err("lease gone");
    assert!(
        matches!(e, Error::LeaseLost { lease, .. } if lease == id.0),
        "{e:?}"
    );
    wait_for_leases(&server, 0).await;
    assert_eq!(value(&s, "x").await, None);
    s.close().await.expect("close");
}

async fn wait_for_leases(server: &EtcdServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = server.lease_count().expect("lease count");
        if count == n {
            return;
        }
        assert!(Instant::now() < deadline, "{count} leases, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events `w` delivers up to and including revision `last`.
async fn events_through(w: &mut anykv_core::WatchStream, last: u64) -> Vec<WatchEvent> {
    let mut seen = Vec::new();
    loop {
        let ev = common::next(w).await;
        let rev = ev.revision();
        seen.push(ev);
        if rev >= last {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_lost_reply_is_timeout_or_unavailable() {
    let server = EtcdServer::start_new();
    let s = EtcdStore::open(
        EtcdConfig::new([server.endpoint()])
            .with_root("paused")
            .request_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("open");
    put(&s, "a", "1").await;
    server.pause();
    let started = Instant::now();
    let write = s
        .txn(
            Txn::new()
                .when(Compare::present("a"))
                .then(TxnOp::put("b", "2"))
                .then(TxnOp::delete("a")),
        )
        .await;
    let read = s.txn(Txn::new().then(TxnOp::get("a"))).await;
    server.resume();
    for r in [write, read] {
        match r {
            Err(Error::Timeout { .. } | Error::Unavailable { .. }) => {}
            other => panic!("expected Timeout or Unavailable, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Once the server answers again, the store works.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.txn(Txn::new().then(TxnOp::put("c", "3"))).await {
            Ok(r) => {
                assert!(r.revision.is_some());
                break;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("txn after resume: {e}"),
        }
    }
    s.close().await.expect("close");
}
