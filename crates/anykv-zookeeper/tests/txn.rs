//! Transactions on a real ZooKeeper: one `multi` per transaction, so one
//! zxid for all its writes; compares and gets read first and proved in the
//! `multi`; TTL and leased puts; the limits; writers racing a transaction
//! (its retry); and what a watcher sees.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{
    Bytes, Compare, ErrorKind, KvPair, PutOptions, Store, Txn, TxnOp, TxnOpResult, WatchEvent,
    WatchOptions,
};
use anykv_zookeeper::{ZkConfig, ZkStore};
use zookeeper_client as zk;

async fn open(root: &str) -> (ZkStore, zk::Client) {
    let url = anykv_testserver::zookeeper::shared_url();
    let host = url.trim_start_matches("zk://").to_owned();
    let store = ZkStore::open(ZkConfig::new([host.clone()]).with_root(root))
        .await
        .unwrap();
    let raw = zk::Client::connect(&host).await.unwrap();
    (store, raw)
}

fn root(name: &str) -> String {
    anykv_testserver::unique_name(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_say_transactions() {
    let (store, _raw) = open(&root("txcaps")).await;
    assert!(store.capabilities().transactions);
    assert_eq!(store.capabilities().max_txn_ops, 128);
    store.close().await.unwrap();
}

/// Every compare kind, the first failed compare's index, the branch that
/// runs, and that the other branch's writes are not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compares_choose_the_branch() {
    let (store, _raw) = open(&root("txcmp")).await;
    let ra = store.put("a", "1".into(), PutOptions::new()).await.unwrap();
    let ok = store
        .txn(
            Txn::new()
                .when(Compare::revision("a", ra))
                .when(Compare::value("a", "1"))
                .when(Compare::present("a"))
                .when(Compare::absent("b"))
                .when(Compare::absent("deep/er/key"))
                .then(TxnOp::put("b", "2"))
                .then(TxnOp::get("a"))
                .or_else(TxnOp::put("c", "no")),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.failed_compare, None);
    let rev = ok.revision.unwrap();
    assert!(rev > ra);
    assert_eq!(
        ok.results,
        [
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Get(Some(KvPair::new("a", "1", ra))),
        ]
    );
    assert_eq!(
        store.get("b").await.unwrap(),
        Some(KvPair::new("b", "2", rev))
    );
    assert_eq!(store.get("c").await.unwrap(), None);

    // Each kind failing, with the index of the first that fails.
    let cases: Vec<(Vec<Compare>, usize)> = vec![
        (
            vec![Compare::present("a"), Compare::revision("a", ra + 1)],
            1,
        ),
        (vec![Compare::revision("nope", ra)], 0),
        (vec![Compare::present("a"), Compare::absent("a")], 1),
        (vec![Compare::absent("x/y"), Compare::present("x/y")], 1),
        (
            vec![
                Compare::value("b", "2"),
                Compare::value("b", "3"),
                Compare::absent("b"),
            ],
            1,
        ),
        (vec![Compare::value("nope", "")], 0),
    ];
    for (compares, index) in cases {
        let mut t = Txn::new()
            .then(TxnOp::put("c", "no"))
            .then(TxnOp::delete("a"))
            .or_else(TxnOp::get("b"))
            .or_else(TxnOp::delete("never"));
        t.compares = compares.clone();
        let r = store.txn(t).await.unwrap();
        assert!(!r.succeeded, "{compares:?}");
        assert_eq!(r.failed_compare, Some(index), "{compares:?}");
        assert_eq!(r.revision, None);
        assert_eq!(
            r.results,
            [
                TxnOpResult::Get(Some(KvPair::new("b", "2", rev))),
                TxnOpResult::Delete { existed: false },
            ]
        );
    }
    assert_eq!(store.get("c").await.unwrap(), None);
    assert_eq!(store.get("a").await.unwrap().unwrap().revision, ra);

    // No compares: the success branch runs.
    let r = store.txn(Txn::new().then(TxnOp::get("a"))).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, None);
    assert_eq!(r.get(0), Some(&KvPair::new("a", "1", ra)));
    // Nothing at all.
    let r = store.txn(Txn::new()).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.results, []);
    assert_eq!(r.revision, None);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// All writes of one transaction have the multi's zxid: every value
/// node's `mzxid`, and every deleted key node's delete mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_writes_share_one_zxid() {
    let r = root("txzxid");
    let (store, raw) = open(&r).await;
    store
        .put("old", "x".into(), PutOptions::new())
        .await
        .unwrap();
    store
        .put("gone", "x".into(), PutOptions::new())
        .await
        .unwrap();
    let resp = store
        .txn(
            Txn::new()
                .then(TxnOp::put("old", "y"))
                .then(TxnOp::put("new/deep/key", "z"))
                .then(TxnOp::put("new", "parent after child"))
                .then(TxnOp::put("@odd/🦀", ""))
                .then(TxnOp::delete("gone"))
                .then(TxnOp::delete("absent")),
        )
        .await
        .unwrap();
    let rev = resp.revision.unwrap();
    assert_eq!(
        resp.results,
        [
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Put { revision: rev },
            TxnOpResult::Delete { existed: true },
            TxnOpResult::Delete { existed: false },
        ]
    );
    for k in ["old", "new/deep/key", "new", "@odd/🦀"] {
        let p = store.get(k).await.unwrap().unwrap();
        assert_eq!(p.revision, rev, "{k}");
    }
    assert_eq!(store.get("gone").await.unwrap(), None);
    assert_eq!(store.get("absent").await.unwrap(), None);
    let (data, st) = raw.get_data(&format!("/{r}/gone")).await.unwrap();
    assert_eq!(data, b"d");
    assert_eq!(st.mzxid as u64, rev, "the delete mark has the txn's zxid");
    let (_, st) = raw.get_data(&format!("/{r}/old/@v")).await.unwrap();
    assert_eq!(st.mzxid as u64, rev);
    // A later write gets a later revision.
    let later = store
        .put("old", "z".into(), PutOptions::new())
        .await
        .unwrap();
    assert!(later > rev);
    // A delete of an absent key alone writes nothing.
    let r2 = store
        .txn(Txn::new().then(TxnOp::delete("absent")))
        .await
        .unwrap();
    assert_eq!(r2.revision, None);
    assert_eq!(r2.results, [TxnOpResult::Delete { existed: false }]);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// A put with a lease that is gone fails the whole transaction with
/// `LeaseLost` and writes nothing; in the branch that does not run, it
/// is no matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_writes_nothing() {
    let (store, _raw) = open(&root("txlease")).await;
    store
        .put("keep", "k".into(), PutOptions::new())
        .await
        .unwrap();
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let id = lease.id();
    lease.revoke().await.unwrap();
    let e = store
        .txn(
            Txn::new()
                .then(TxnOp::put("plain", "p"))
                .then(TxnOp::delete("keep"))
                .then(TxnOp::put_with(
                    "leased",
                    "l",
                    PutOptions::new().with_lease(id),
                )),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LeaseLost, "{e}");
    assert_eq!(store.get("plain").await.unwrap(), None);
    assert_eq!(store.get("leased").await.unwrap(), None);
    assert!(store.get("keep").await.unwrap().is_some());
    // The lost lease in the branch that does not run is no matter.
    let r = store
        .txn(
            Txn::new()
                .when(Compare::absent("keep"))
                .then(TxnOp::put_with(
                    "leased",
                    "l",
                    PutOptions::new().with_lease(id),
                ))
                .or_else(TxnOp::put("plain", "p")),
        )
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert!(r.revision.is_some());
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Leased puts are ephemeral nodes of the lease's session and go with the
/// lease; TTL puts are TTL nodes that expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_leased_puts() {
    let r = root("txttl");
    let (store, raw) = open(&r).await;
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let resp = store
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "l1",
                    "a",
                    PutOptions::new().with_lease(lease.id()),
                ))
                .then(TxnOp::put_with(
                    "dir/l2",
                    "b",
                    PutOptions::new().with_lease(lease.id()),
                ))
                .then(TxnOp::put_with(
                    "t",
                    "c",
                    PutOptions::new().with_ttl(Duration::from_millis(100)),
                ))
                .then(TxnOp::put("plain", "d")),
        )
        .await
        .unwrap();
    let rev = resp.revision.unwrap();
    let (_, st) = raw.get_data(&format!("/{r}/l1/@v")).await.unwrap();
    assert_ne!(st.ephemeral_owner, 0, "a leased key is an ephemeral node");
    assert_eq!(st.mzxid as u64, rev);
    let (_, st) = raw.get_data(&format!("/{r}/plain/@v")).await.unwrap();
    assert_eq!(st.ephemeral_owner, 0);
    let (flag, _) = raw.get_data(&format!("/{r}/t")).await.unwrap();
    assert_eq!(flag, b"t", "the key node marks a TTL value node");
    // The TTL (raised to min_ttl, 1 s) runs out.
    let start = Instant::now();
    while store.get("t").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the TTL key stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(500));
    // Rewriting a leased key in a txn without the lease keeps it on revoke.
    store
        .txn(Txn::new().then(TxnOp::put("dir/l2", "mine")))
        .await
        .unwrap();
    lease.revoke().await.unwrap();
    assert_eq!(store.get("l1").await.unwrap(), None);
    assert_eq!(
        store.get("dir/l2").await.unwrap().map(|p| p.value),
        Some(Bytes::from("mine"))
    );
    assert!(store.get("plain").await.unwrap().is_some());
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Leases on different sessions cannot share one multi: refused, nothing
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_two_sessions_are_refused() {
    let (store, _raw) = open(&root("txtwo")).await;
    let a = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let b = store.grant_lease(Duration::from_secs(6)).await.unwrap();
    let e = store
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "a",
                    "a",
                    PutOptions::new().with_lease(a.id()),
                ))
                .then(TxnOp::put_with(
                    "b",
                    "b",
                    PutOptions::new().with_lease(b.id()),
                )),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(store.get("a").await.unwrap(), None);
    // Two leases of one TTL share a session: fine.
    let c = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    store
        .txn(
            Txn::new()
                .then(TxnOp::put_with(
                    "a",
                    "a",
                    PutOptions::new().with_lease(a.id()),
                ))
                .then(TxnOp::put_with(
                    "c",
                    "c",
                    PutOptions::new().with_lease(c.id()),
                )),
        )
        .await
        .unwrap();
    c.revoke().await.unwrap();
    assert_eq!(store.get("c").await.unwrap(), None);
    assert!(store.get("a").await.unwrap().is_some());
    a.revoke().await.unwrap();
    b.revoke().await.unwrap();
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Too many operations, or values too large for one request, are refused
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_refused_before_sending() {
    let (store, _raw) = open(&root("txlim")).await;
    let many = (0..129).fold(Txn::new(), |t, i| t.then(TxnOp::put(format!("k{i}"), "v")));
    let e = store.txn(many).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let big = Bytes::from(vec![7u8; 600_000]);
    let e = store
        .txn(
            Txn::new()
                .then(TxnOp::put("big1", big.clone()))
                .then(TxnOp::put("big2", big.clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("jute.maxbuffer"), "{e}");
    assert_eq!(store.get("big1").await.unwrap(), None);
    // 128 small puts fit, and so does one value of the largest size.
    let most = (0..128).fold(Txn::new(), |t, i| {
        t.then(TxnOp::put(format!("many/k{i:03}"), format!("{i}")))
    });
    let r = store.txn(most).await.unwrap();
    let rev = r.revision.unwrap();
    let listed = store.list("many").await.unwrap();
    assert_eq!(listed.len(), 128);
    assert!(listed.iter().all(|p| p.revision == rev));
    let max = store.capabilities().max_value_size;
    let r = store
        .txn(Txn::new().then(TxnOp::put("max", vec![1u8; max])))
        .await
        .unwrap();
    assert!(r.revision.is_some());
    assert_eq!(store.get("max").await.unwrap().unwrap().value.len(), max);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Writers that keep changing the keys a transaction reads make its proofs
/// fail; it reads again and retries, and what it returns is one consistent
/// state: pairs written together are always seen together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_under_concurrent_writers() {
    let r = root("txrace");
    let (store, _raw) = open(&r).await;
    let store = Arc::new(store);
    store.put("x", "0".into(), PutOptions::new()).await.unwrap();
    store.put("y", "0".into(), PutOptions::new()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (other, _) = open(&r).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let v = format!("{w}-{n}");
                other
                    .txn(
                        Txn::new()
                            .then(TxnOp::put("x", v.clone()))
                            .then(TxnOp::put("y", v)),
                    )
                    .await
                    .unwrap();
                n += 1;
            }
            other.close().await.unwrap();
            n
        }));
    }
    // Plain puts racing transactions that compare on the counter.
    let counter = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut done = 0;
            while done < 40 {
                let cur = store.get("n").await.unwrap();
                let (next, cmp) = match &cur {
                    Some(p) => (
                        std::str::from_utf8(&p.value)
                            .unwrap()
                            .parse::<u64>()
                            .unwrap()
                            + 1,
                        Compare::revision("n", p.revision),
                    ),
                    None => (1, Compare::absent("n")),
                };
                let r = store
                    .txn(
                        Txn::new()
                            .when(cmp)
                            .then(TxnOp::put("n", next.to_string()))
                            .then(TxnOp::get("x")),
                    )
                    .await
                    .unwrap();
                if r.succeeded {
                    done += 1;
                }
            }
        })
    };
    let mut reads = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let resp = store
            .txn(Txn::new().then(TxnOp::get("x")).then(TxnOp::get("y")))
            .await
            .unwrap();
        let (x, y) = (resp.get(0).unwrap(), resp.get(1).unwrap());
        assert_eq!(x.value, y.value, "a torn read");
        assert_eq!(x.revision, y.revision);
        reads += 1;
    }
    counter.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(
        reads > 10 && written > 10,
        "{reads} reads, {written} writes"
    );
    assert_eq!(
        store.get("n").await.unwrap().map(|p| p.value),
        Some(Bytes::from("40"))
    );
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// A watcher gets a transaction's events together, all at its revision,
/// with no event of another revision between them, while other writes go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_the_whole_transaction() {
    let r = root("txwatch");
    let (store, _raw) = open(&r).await;
    for i in 0..4 {
        store
            .put(&format!("w/d{i}"), "x".into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = store.watch_tree("w", WatchOptions::new()).await.unwrap();
    loop {
        if let WatchEvent::Synced { .. } = common::next(&mut w).await {
            break;
        }
    }
    let (noise, _) = open(&r).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                noise
                    .put("w/noise", n.to_string().into(), PutOptions::new())
                    .await
                    .unwrap();
                n += 1;
            }
            noise.close().await.unwrap();
        })
    };
    let mut revs = Vec::new();
    for round in 0..5 {
        let mut t = Txn::new();
        for i in 0..3 {
            t = t.then(TxnOp::put(format!("w/t{round}/{i}"), "v"));
        }
        if round < 4 {
            t = t.then(TxnOp::delete(format!("w/d{round}")));
        }
        revs.push(store.txn(t).await.unwrap().revision.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let mut events: Vec<WatchEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = |rev: u64, evs: &[WatchEvent]| {
            evs.iter()
                .filter(|e| e.revision() == rev && !matches!(e, WatchEvent::Synced { .. }))
                .count()
        };
        if revs
            .iter()
            .enumerate()
            .all(|(i, r)| seen(*r, &events) == if i < 4 { 4 } else { 3 })
        {
            break;
        }
        assert!(Instant::now() < deadline, "missing events: {events:?}");
        events.push(common::next(&mut w).await);
    }
    for (i, rev) in revs.iter().enumerate() {
        let at: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.revision() == *rev && !matches!(e, WatchEvent::Synced { .. }))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(at.len(), if i < 4 { 4 } else { 3 }, "{events:?}");
        assert_eq!(
            at.last().unwrap() - at.first().unwrap() + 1,
            at.len(),
            "the events of revision {rev} are not contiguous: {events:?}"
        );
        if i < 4 {
            assert!(events.iter().any(|e| matches!(
                e,
                WatchEvent::Delete { key, revision } if *revision == *rev && key == &format!("w/d{i}")
            )));
        }
    }
    let mut last = 0;
    for e in &events {
        assert!(e.revision() >= last, "{events:?}");
        last = e.revision();
    }
    drop(w);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// A root that does not exist yet: compares and gets prove the absence of
/// its node (nothing is left behind), and a put creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_root_is_proved_absent() {
    let r = root("txfresh");
    let (store, raw) = open(&format!("{r}/sub")).await;
    let resp = store
        .txn(
            Txn::new()
                .when(Compare::absent("a/b"))
                .then(TxnOp::get("a/b/c"))
                .then(TxnOp::delete("x")),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, None);
    assert_eq!(
        resp.results,
        [
            TxnOpResult::Get(None),
            TxnOpResult::Delete { existed: false }
        ]
    );
    assert_eq!(raw.check_stat(&format!("/{r}")).await.unwrap(), None);
    let resp = store
        .txn(
            Txn::new()
                .when(Compare::absent("a/b"))
                .then(TxnOp::put("a/b", "1"))
                .then(TxnOp::get("a")),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.results[1], TxnOpResult::Get(None));
    let rev = resp.revision.unwrap();
    assert_eq!(
        store.get("a/b").await.unwrap(),
        Some(KvPair::new("a/b", "1", rev))
    );
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// With digest credentials, a transaction's nodes carry the store's ACLs:
/// another client's transaction is refused with `PermissionDenied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_acls_apply_to_transactions() {
    let url = anykv_testserver::zookeeper::shared_url();
    let host = url.trim_start_matches("zk://");
    let r = root("txacl");
    let owner = common::open(&format!("zk://bob:pw-9@{host}/{r}"))
        .await
        .unwrap();
    let lease = owner.grant_lease(Duration::from_secs(2)).await.unwrap();
    owner
        .txn(
            Txn::new()
                .then(TxnOp::put("k/deep", "v"))
                .then(TxnOp::put_with(
                    "l",
                    "v",
                    PutOptions::new().with_lease(lease.id()),
                )),
        )
        .await
        .unwrap();
    let anon = common::open(&format!("zk://{host}/{r}")).await.unwrap();
    for t in [
        Txn::new().then(TxnOp::get("k/deep")),
        Txn::new().then(TxnOp::put("k/deep", "x")),
        Txn::new().when(Compare::present("l")),
    ] {
        let e = anon.txn(t).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    }
    let r = owner
        .txn(Txn::new().then(TxnOp::get("k/deep")).then(TxnOp::get("l")))
        .await
        .unwrap();
    assert_eq!(r.get(0).map(|p| p.value.clone()), Some(Bytes::from("v")));
    assert!(r.get(1).is_some());
    lease.revoke().await.unwrap();
    owner.delete_tree("").await.unwrap();
    owner.close().await.unwrap();
    anon.close().await.unwrap();
}

/// The keys one transaction deletes come to a watcher as deletes at its
/// revision, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_of_one_transaction_share_its_revision_in_a_watch() {
    let (store, _raw) = open(&root("txwdel")).await;
    for i in 0..5 {
        store
            .put(&format!("d/{i}"), "x".into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = store.watch_tree("d", WatchOptions::new()).await.unwrap();
    loop {
        if let WatchEvent::Synced { .. } = common::next(&mut w).await {
            break;
        }
    }
    let t = (0..5).fold(Txn::new(), |t, i| t.then(TxnOp::delete(format!("d/{i}"))));
    let rev = store.txn(t).await.unwrap().revision.unwrap();
    for i in 0..5 {
        assert_eq!(
            common::next(&mut w).await,
            WatchEvent::Delete {
                key: format!("d/{i}"),
                revision: rev
            }
        );
    }
    drop(w);
    store.close().await.unwrap();
}

/// A server that does not answer: the transaction fails with `Timeout` or
/// `Unavailable` within about the request timeout; without TTL nodes on
/// the server, a TTL put in a transaction is `Unsupported` and nothing of
/// it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults() {
    use anykv_testserver::zookeeper::ZkServer;
    let server = ZkServer::start_without_ttl();
    let base = format!("{}/{}", server.url(), root("txfault"));
    let store = common::open(&format!(
        "{base}?request_timeout=1s&connect_timeout=1s&session_timeout=30s"
    ))
    .await
    .unwrap();
    let e = store
        .txn(
            Txn::new()
                .then(TxnOp::put("plain", "p"))
                .then(TxnOp::put_with(
                    "t",
                    "v",
                    PutOptions::new().with_ttl(Duration::from_secs(5)),
                )),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("extendedTypesEnabled"), "{e}");
    assert_eq!(store.get("plain").await.unwrap(), None);
    store
        .txn(Txn::new().then(TxnOp::put("k", "1")))
        .await
        .unwrap();

    server.pause();
    let started = Instant::now();
    let e = store
        .txn(
            Txn::new()
                .when(Compare::present("k"))
                .then(TxnOp::put("k", "2")),
        )
        .await
        .unwrap_err();
    assert!(common::retryable(&e), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    server.resume();
    let start = Instant::now();
    loop {
        match store.txn(Txn::new().then(TxnOp::get("k"))).await {
            Ok(r) => {
                assert!(r.get(0).is_some());
                break;
            }
            Err(e) => {
                assert!(common::retryable(&e), "{e}");
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no recovery: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    store.close().await.unwrap();
}
