//! `Store::status`: every endpoint's version and role from etcd's
//! maintenance `Status`, the revision from its reply header, unreachable
//! members listed with their error (never failing the call), `Closed`
//! after close and `Unavailable` when no member answers.

mod common;

use std::time::Duration;

use anykv_core::{ErrorKind, LockOptions, PutOptions, Store, StoreStats};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd::EtcdServer;
use anykv_testserver::etcd_cluster::MEMBERS;
use common::cluster::{endpoints, leader, on_cluster, start_cluster, url_of};

fn detail<'a>(details: &'a [(String, String)], name: &str) -> Option<&'a str> {
    details
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One server, with a dead endpoint beside it: the live one is the
/// leader at the version the server runs, the dead one is listed with its
/// error, the revision is the last write's, and the details carry the
/// cluster id and the member's sizes and raft indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_server_and_a_dead_endpoint() {
    let mut server = EtcdServer::start_new();
    let live = server.endpoint();
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let store = EtcdStore::open_url(&format!(
        "etcd://{live},{dead}/status?request_timeout=1s&connect_timeout=1s"
    ))
    .await
    .unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    let guard = store.lock("l", LockOptions::new()).await.unwrap();

    let status = store.status().await.unwrap();
    assert_eq!(status.backend, "etcd");
    assert!(status.revision >= Some(rev + 1), "{status:?}");
    assert_eq!(status.stats, StoreStats::new(0, 0, 1, 1));
    assert_eq!(status.servers.len(), 2, "{status:?}");
    let first = &status.servers[0];
    assert_eq!(first.address, live);
    assert_eq!(first.role.as_deref(), Some("leader"));
    assert_eq!(first.error, None);
    let version = first.version.as_deref().unwrap_or_default();
    assert!(version.starts_with("3."), "{version}");
    let second = &status.servers[1];
    assert_eq!(
        (second.address.as_str(), second.version.as_deref()),
        (dead.as_str(), None)
    );
    assert!(second.error.is_some(), "{second:?}");
    assert!(detail(&status.details, "cluster_id").is_some_and(|v| !v.is_empty()));
    assert_eq!(detail(&status.details, "leader"), Some(live.as_str()));
    assert_eq!(detail(&status.details, "root"), Some("status"));
    let size: i64 = detail(&status.details, &format!("{live} db_size"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0);
    let term: u64 = detail(&status.details, &format!("{live} raft_term"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(term >= 1);
    guard.release().await.unwrap();

    // No member answers: Unavailable, within the request timeout.
    server.stop();
    let err = store.status().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&live), "{err}");

    store.close().await.unwrap();
    assert_eq!(store.status().await.unwrap_err().kind(), ErrorKind::Closed);
}

/// A three-member cluster with a follower paused: the call still answers,
/// with one leader, one follower and the paused member's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_cluster_with_a_paused_follower() {
    let cluster = start_cluster().await;
    let eps = endpoints(&cluster).await;
    let lead = leader(&cluster).await;
    let paused = (lead + 1) % MEMBERS;
    let store = EtcdStore::open_url(&url_of(&eps, &[0, 1, 2], "status"))
        .await
        .unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    on_cluster(&cluster, move |c| c.pause(paused))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let status = store.status().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    on_cluster(&cluster, move |c| c.resume(paused))
        .await
        .unwrap();
    assert!(status.revision >= Some(rev), "{status:?}");
    let roles: Vec<Option<&str>> = status.servers.iter().map(|s| s.role.as_deref()).collect();
    let mut expected = vec![Some("follower"); MEMBERS];
    expected[lead] = Some("leader");
    expected[paused] = None;
    assert_eq!(roles, expected, "{status:?}");
    for (i, s) in status.servers.iter().enumerate() {
        assert_eq!(s.address, eps[i]);
        assert_eq!(s.error.is_some(), i == paused, "{s:?}");
    }
    assert_eq!(detail(&status.details, "leader"), Some(eps[lead].as_str()));
    store.close().await.unwrap();
}
