//! Store watches of one key or range share one etcd watch (a feed) when
//! they can start where it stands; each must still see exactly the
//! changes after its own start, also across a server restart.

use std::time::{Duration, Instant};

use anykv_core::{PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use anykv_etcd::{EtcdConfig, EtcdStore};
use anykv_testserver::etcd::EtcdServer;
use futures::StreamExt;

async fn open(server: &EtcdServer, root: &str) -> EtcdStore {
    EtcdStore::open(
        EtcdConfig::new([server.endpoint()])
            .with_root(root)
            .request_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("connect")
}

async fn next(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The revisions `w` delivers up to and including `last`.
async fn revisions_until(w: &mut WatchStream, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let rev = next(w).await.revision();
        seen.push(rev);
        if rev >= last {
            return seen;
        }
    }
}

/// Past the initial state: the `Synced` revision.
async fn synced(w: &mut WatchStream) -> u64 {
    loop {
        if let WatchEvent::Synced { revision } = next(w).await {
            return revision;
        }
    }
}

async fn put_retrying(store: &EtcdStore, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.put(key, "v".into(), PutOptions::new()).await {
            Ok(rev) => return rev,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_of_one_key_each_see_their_own_changes() {
    let server = EtcdServer::start_new();
    let store = open(&server, "s").await;
    let other = open(&server, "elsewhere").await;
    let mut a = store.watch("k", WatchOptions::new()).await.unwrap();
    let start_a = synced(&mut a).await;
    let r1 = store.put("k", "1".into(), PutOptions::new()).await.unwrap();
    // Revisions move on outside the watched key.
    other.put("x", "x".into(), PutOptions::new()).await.unwrap();
    // Starts after r1: joins the feed of `a` or gets its own.
    let mut b = store.watch("k", WatchOptions::new()).await.unwrap();
    let mut snapshot = Vec::new();
    let start_b = loop {
        match next(&mut b).await {
            WatchEvent::Synced { revision } => break revision,
            ev => snapshot.push(ev.revision()),
        }
    };
    assert_eq!(snapshot, vec![r1]);
    assert!(start_b > r1 && start_a < r1);
    // Resumes: one from before r1, one from exactly now.
    let mut c = store
        .watch("k", WatchOptions::from_revision(start_a))
        .await
        .unwrap();
    let mut d = store
        .watch("k", WatchOptions::from_revision(start_b))
        .await
        .unwrap();
    let r2 = store.put("k", "2".into(), PutOptions::new()).await.unwrap();
    assert!(store.delete("k").await.unwrap());
    let r4 = store.put("k", "4".into(), PutOptions::new()).await.unwrap();
    let got_a = revisions_until(&mut a, r4).await;
    assert_eq!(got_a.len(), 4, "{got_a:?}");
    assert_eq!((got_a[0], got_a[1], got_a[3]), (r1, r2, r4));
    let after_r1: Vec<u64> = got_a[1..].to_vec();
    assert_eq!(revisions_until(&mut b, r4).await, after_r1);
    assert_eq!(revisions_until(&mut c, r4).await, got_a);
    assert_eq!(revisions_until(&mut d, r4).await, after_r1);
    // One watch of a shared feed goes; the others go on.
    drop(a);
    drop(c);
    let r5 = store.put("k", "5".into(), PutOptions::new()).await.unwrap();
    assert_eq!(revisions_until(&mut b, r5).await, vec![r5]);
    assert_eq!(revisions_until(&mut d, r5).await, vec![r5]);
    store.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_watches_resume_after_a_restart() {
    let mut server = EtcdServer::start_new();
    let store = open(&server, "r").await;
    let other = open(&server, "elsewhere").await;
    let mut early = Vec::new();
    for _ in 0..20 {
        let mut w = store.watch_tree("t", WatchOptions::new()).await.unwrap();
        synced(&mut w).await;
        early.push(w);
    }
    let first = store
        .put("t/a", "1".into(), PutOptions::new())
        .await
        .unwrap();
    other.put("x", "x".into(), PutOptions::new()).await.unwrap();
    let now = other.put("y", "y".into(), PutOptions::new()).await.unwrap();
    // Starts later than the feed of `early`, with nothing in between.
    let mut late = store
        .watch_tree("t", WatchOptions::from_revision(now))
        .await
        .unwrap();
    server.stop();
    server.start();
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(put_retrying(&store, &format!("t/{i}")).await);
    }
    let last = *after.last().unwrap();
    // A retried put may have been applied twice, so every returned
    // revision must arrive, in order, perhaps among others.
    for w in &mut early {
        let got = revisions_until(w, last).await;
        assert_eq!(got[0], first, "{got:?}");
        assert!(got.windows(2).all(|p| p[0] < p[1]), "{got:?}");
        for rev in &after {
            assert!(got.contains(rev), "{rev} missing: {got:?}");
        }
    }
    let got = revisions_until(&mut late, last).await;
    assert!(got.windows(2).all(|p| p[0] < p[1]), "{got:?}");
    assert!(got[0] > now, "{got:?}");
    for rev in &after {
        assert!(got.contains(rev), "{rev} missing: {got:?}");
    }
    store.close().await.unwrap();
    other.close().await.unwrap();
}
