//! `Store::status` against a real ZooKeeper 3.8 server of its own (it is
//! paused at the end): every server of the URL with its version and mode
//! from the `srvr` command, a server of the URL that is not there listed
//! with its error, the session's details, `Closed` after close, and
//! `Unavailable` when no server answers.

use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, ServerStatus, Store};
use anykv_testserver::zookeeper::ZkServer;
use anykv_zookeeper::ZkStore;

/// The value of detail `name`.
fn detail<'a>(status: &'a anykv_core::StoreStatus, name: &str) -> Option<&'a str> {
    status
        .details
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The ZooKeeper version the test server runs (from its jar's manifest
/// name as `srvr` reports it): a dotted number such as `3.8.4`.
fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()) && parts[0] == "3"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_servers_session_and_failures() {
    let server = ZkServer::start();
    let root = anykv_testserver::unique_name("status");
    let url = format!(
        "zk://{}/{root}?request_timeout=1s&connect_timeout=1s",
        server.address()
    );
    let store = ZkStore::open_url(&url).await.unwrap();
    let rev = store
        .put("k", "v".into(), Default::default())
        .await
        .unwrap();
    assert!(rev > 0);
    let status = store.status().await.unwrap();
    assert_eq!(status.backend, "zookeeper");
    assert_eq!(status.revision, None);
    assert_eq!(status.stats, store.stats());
    assert_eq!(status.servers.len(), 1, "{status:?}");
    let s = &status.servers[0];
    assert_eq!(s.address, server.address());
    assert_eq!(s.role.as_deref(), Some("standalone"));
    assert_eq!(s.error, None);
    assert!(s.version.as_deref().is_some_and(is_version), "{s:?}");
    assert_eq!(
        detail(&status, "session_id"),
        Some(format!("0x{:x}", store.session_id()).as_str())
    );
    assert_eq!(detail(&status, "root"), Some(format!("/{root}").as_str()));
    assert_eq!(detail(&status, "syncs_reads"), Some("false"));
    assert_eq!(detail(&status, "loss_policy"), Some("session"));
    assert!(detail(&status, "session_timeout").is_some(), "{status:?}");
    assert_eq!(detail(&status, "session_error"), None);
    // The test server allows every four-letter command, `cons` included.
    assert_eq!(
        detail(&status, "connected_server"),
        Some(server.address().as_str())
    );
    let zxid = detail(&status, &format!("zxid {}", server.address())).unwrap();
    let zxid = u64::from_str_radix(zxid.trim_start_matches("0x"), 16).unwrap();
    assert!(
        zxid >= rev,
        "the server's zxid {zxid} is below a write's {rev}"
    );

    // A server of the URL that is not there is listed with its error; the
    // call still succeeds.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let two = ZkStore::open_url(&format!(
        "zk://{},{dead}/{root}?request_timeout=1s&connect_timeout=1s",
        server.address()
    ))
    .await
    .unwrap();
    let status = two.status().await.unwrap();
    assert_eq!(status.servers.len(), 2, "{status:?}");
    assert_eq!(status.servers[0].role.as_deref(), Some("standalone"));
    assert_eq!(status.servers[0].error, None);
    let missing = &status.servers[1];
    assert_eq!(
        (
            missing.address.as_str(),
            missing.version.as_deref(),
            missing.role.as_deref()
        ),
        (dead.as_str(), None, None)
    );
    assert!(
        missing
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("connect: ")),
        "{missing:?}"
    );
    two.close().await.unwrap();
    assert_eq!(two.status().await.unwrap_err().kind(), ErrorKind::Closed);

    // Credentials never show.
    let secret = ZkStore::open_url(&format!(
        "zk://alice:s3cret-pw@{}/{root}-auth?request_timeout=1s",
        server.address()
    ))
    .await
    .unwrap();
    let status = secret.status().await.unwrap();
    assert!(!format!("{status:?}").contains("s3cret-pw"));
    assert_eq!(
        status.servers,
        vec![ServerStatus::new(
            server.address(),
            status.servers[0].version.clone(),
            Some("standalone".to_owned())
        )]
    );
    secret.close().await.unwrap();

    // No server answers: `Unavailable`, within the request timeout.
    server.pause();
    let started = Instant::now();
    let e = store.status().await.unwrap_err();
    let took = started.elapsed();
    server.resume();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable),
        "{e} ({:?})",
        e.kind()
    );
    assert!(took < Duration::from_secs(4), "status took {took:?}");
    store.close().await.unwrap();
}
