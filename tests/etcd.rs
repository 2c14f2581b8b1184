//! The conformance suite against a real etcd server, plus fault and
//! security tests: `cargo test --test etcd --features etcd`.
//!
//! The suite uses the server at `ANYKV_ETCD_URL` if set, otherwise one the
//! tests start from the `etcd` binary on free loopback ports. The fault and
//! security tests always start servers of their own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv::async_trait;
use anykv::etcd::{EtcdConfig, EtcdStore, TlsConfig};
use anykv::{ErrorKind, PutOptions, Store, WatchEvent, WatchOptions};
use anykv_conformance::{conformance_tests, StoreFactory};
use anykv_testserver::etcd::{shared_url, EtcdServer};
use futures::StreamExt;

type Restart = Arc<dyn Fn() + Send + Sync>;

/// Opens `{base}/{root}`; compacts through the store; restarts the server
/// when it owns one.
struct EtcdFactory {
    base: String,
    restart: Option<Restart>,
}

#[async_trait]
impl StoreFactory for EtcdFactory {
    async fn open(&self, root: &str) -> anykv::Result<Arc<dyn Store>> {
        let (base, query) = match self.base.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (self.base.clone(), String::new()),
        };
        anykv::open(&format!("{}/{root}{query}", base.trim_end_matches('/'))).await
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> anykv::Result<()> {
        anykv::etcd::compact(&**store, revision).await
    }

    async fn restart_server(&self) -> anykv::Result<()> {
        let Some(restart) = self.restart.clone() else {
            return Err(anykv::Error::unsupported(
                "etcd tests",
                "restart_server",
                "the server at ANYKV_ETCD_URL is not ours to restart",
            ));
        };
        tokio::task::spawn_blocking(move || restart())
            .await
            .map_err(|e| anykv::Error::InvalidArgument(format!("restart failed: {e}")))
    }

    async fn pause_server(&self) -> anykv::Result<()> {
        pause_shared_server(true)
    }

    async fn resume_server(&self) -> anykv::Result<()> {
        pause_shared_server(false)
    }

    fn request_timeout(&self) -> Duration {
        SUITE_REQUEST_TIMEOUT
    }
}

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn pause_shared_server(pause: bool) -> anykv::Result<()> {
    anykv_testserver::etcd::pause_shared(pause)
        .map_err(|e| anykv::Error::unsupported("etcd tests", "pause_server", e))
}

/// The suite's factory: the shared server, with restart and pause hooks
/// (the fault cases that use them run alone).
fn factory() -> EtcdFactory {
    let restart: Option<Restart> = anykv_testserver::etcd::shared().map(|m| {
        let f: Restart = Arc::new(move || {
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            s.stop();
            s.start();
        });
        f
    });
    EtcdFactory {
        base: format!(
            "{}/conformance?request_timeout={}ms",
            shared_url(),
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        restart,
    }
}

/// A factory on a server of the test's own.
fn own_factory(server: &Arc<Mutex<EtcdServer>>, query: &str) -> EtcdFactory {
    let url = server.lock().unwrap().url();
    let s = server.clone();
    EtcdFactory {
        base: format!("{url}/fault{query}"),
        restart: Some(Arc::new(move || {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.stop();
            s.start();
        })),
    }
}

conformance_tests!(factory());

async fn open(url: &str) -> Arc<dyn Store> {
    anykv::open(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Puts `key`, retrying while the server comes back (a retry may apply a
/// write twice; the tests only count events after the returned revision).
async fn put_retrying(store: &dyn Store, key: &str) -> u64 {
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

/// Events up to and including revision `last`, checking that revisions
/// strictly increase.
async fn events_until(w: &mut anykv::WatchStream, last: u64) -> Vec<WatchEvent> {
    let mut seen: Vec<WatchEvent> = Vec::new();
    loop {
        let ev = next(w).await;
        if let Some(prev) = seen.last() {
            assert!(ev.revision() > prev.revision(), "{ev:?} after {prev:?}");
        }
        let rev = ev.revision();
        seen.push(ev);
        if rev >= last {
            return seen;
        }
    }
}

async fn next(w: &mut anykv::WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// etcd is stopped and started while a watch is open: calls during the
/// outage fail with `Unavailable` or `Timeout` within the request timeout,
/// the same store works again after the restart, and the watch delivers
/// every write made after the restart (and before it) without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_store_survive_a_server_restart() {
    let server = Arc::new(Mutex::new(EtcdServer::start_new()));
    let factory = own_factory(&server, "?request_timeout=1s&connect_timeout=1s");
    let store = factory.open("w").await.unwrap();
    let writer = factory.open("w").await.unwrap();
    let mut w = store
        .watch_tree("", WatchOptions::new())
        .await
        .expect("watch");
    assert!(matches!(next(&mut w).await, WatchEvent::Synced { .. }));
    let before = writer
        .put("k/0", "before".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.revision(), before);

    // A restart through the factory's hook while the watch is open:
    // writes after it arrive.
    factory.restart_server().await.unwrap();
    let mut after_hook = Vec::new();
    for i in 0..5 {
        after_hook.push(put_retrying(&*writer, &format!("h/{i}")).await);
    }
    let before = *after_hook.last().unwrap();
    let seen = events_until(&mut w, before).await;
    for rev in &after_hook {
        assert!(
            seen.iter().any(|e| e.revision() == *rev),
            "{rev} missing: {seen:?}"
        );
    }

    let stop = server.clone();
    tokio::task::spawn_blocking(move || stop.lock().unwrap().stop())
        .await
        .unwrap();
    for call in 0..3 {
        let started = Instant::now();
        let err = match call {
            0 => store.get("k/0").await.map(|_| ()).unwrap_err(),
            1 => store
                .put("k/x", "x".into(), PutOptions::new())
                .await
                .map(|_| ())
                .unwrap_err(),
            _ => store.list("").await.map(|_| ()).unwrap_err(),
        };
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "call {call} during the outage: {err}"
        );
        assert!(err.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "call {call} took {:?}",
            started.elapsed()
        );
    }
    let start = server.clone();
    tokio::task::spawn_blocking(move || start.lock().unwrap().start())
        .await
        .unwrap();

    // The same store works again without being reopened.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match writer.put("k/1", "after".into(), PutOptions::new()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    let mut expected = Vec::new();
    for i in 2..50 {
        expected.push(
            writer
                .put(&format!("k/{i}"), format!("v{i}").into(), PutOptions::new())
                .await
                .unwrap(),
        );
    }
    let got = store.get("k/1").await.expect("get after restart");
    assert_eq!(got.map(|p| p.value), Some("after".into()));

    // Every write after the restart arrives, in order, exactly once
    // (k/x and a retried k/1 may or may not have been applied).
    let last = *expected.last().unwrap();
    let seen = events_until(&mut w, last).await;
    let revs: Vec<u64> = seen
        .iter()
        .filter(|e| e.key().is_some_and(|k| k != "k/x" && k != "k/1"))
        .map(|e| e.revision())
        .collect();
    assert_eq!(revs, expected);
    assert!(seen.iter().any(|e| e.key() == Some("k/1")));
    store.close().await.unwrap();
    writer.close().await.unwrap();
}

/// A lease survives a restart shorter than its TTL, a lock works after
/// it, and an outage longer than a lease's TTL fires its lost signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_a_short_restart_and_lock_works_after() {
    let mut server = EtcdServer::start_new();
    let url = format!("{}/fault2?request_timeout=1s", server.url());
    let store = open(&url).await;
    let lease = store.grant_lease(Duration::from_secs(10)).await.unwrap();
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!lease.is_lost(), "a lease was lost across a short restart");
    let guard = store
        .lock("l", Default::default())
        .await
        .expect("lock after restart");
    assert!(guard.fencing_token() > 0);
    guard.release().await.unwrap();
    lease.revoke().await.unwrap();

    // An outage longer than a lease's TTL: its lost signal fires.
    let short = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    server.stop();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), short.lost())
        .await
        .expect("lost() did not fire while the server was down");
    assert!(started.elapsed() >= Duration::from_secs(1));
    server.start();
    let mut recovered = false;
    for _ in 0..50 {
        if store.get("k").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the store did not recover");
    store.close().await.unwrap();
}

fn lease_count(server: &EtcdServer) -> usize {
    server
        .lease_count()
        .unwrap_or_else(|e| panic!("cannot list leases: {e}"))
}

/// How many TTL marker keys (`\0anykv/ttl/...`) the server holds.
fn marker_count(server: &EtcdServer) -> usize {
    // key "\0anykv/ttl/", range_end "\0anykv/ttl0" (base64), count only.
    let body = server
        .gateway(
            "/v3/kv/range",
            r#"{"key":"AGFueWt2L3R0bC8=","range_end":"AGFueWt2L3R0bDA=","count_only":true}"#,
        )
        .unwrap_or_else(|e| panic!("cannot count markers: {e}"));
    // proto3 JSON leaves out a zero count.
    body.split("\"count\":")
        .nth(1)
        .map(|c| {
            c.trim_start_matches([' ', '"'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .map_or(0, |c| c.parse().unwrap_or(0))
}

/// A key rewritten a thousand times with a TTL leaves one live lease, not
/// a thousand; rewriting it without a TTL leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_rewrites_do_not_leak_leases() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/ttl", server.url())).await;
    for i in 0..1000 {
        store
            .put(
                "k",
                format!("{i}").into(),
                PutOptions::new().with_ttl(Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 1, "leases after 1000 TTL rewrites");
    store
        .put("k", "plain".into(), PutOptions::new())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 0, "leases after a plain rewrite");
    assert_eq!(
        store.get("k").await.unwrap().map(|p| p.value),
        Some("plain".into())
    );
    // Deleting a TTL key (alone, in a tree, or by compare-and-delete)
    // retires its lease (and its marker) too.
    let ttl = PutOptions::new().with_ttl(Duration::from_secs(60));
    store.put("k", "t".into(), ttl.clone()).await.unwrap();
    store.put("t/a", "t".into(), ttl.clone()).await.unwrap();
    store.put("t/b", "t".into(), ttl.clone()).await.unwrap();
    let rev = store.put("c", "t".into(), ttl).await.unwrap();
    assert_eq!(marker_count(&server), 4, "TTL markers of four TTL keys");
    assert!(store.delete("k").await.unwrap());
    assert_eq!(store.delete_tree("t").await.unwrap(), 2);
    store.atomic_delete("c", rev).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_count(&server) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lease_count(&server), 0, "leases after deleting TTL keys");
    assert_eq!(
        marker_count(&server),
        0,
        "TTL markers after deleting TTL keys"
    );
    store.close().await.unwrap();
}

/// A server that stops answering (paused, so keep-alives hang instead of
/// failing) fires `lost()` of a lease and of a lock before the lease can
/// have expired on the server, not after the (much longer) request
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_lease_expires_when_keep_alives_hang() {
    let server = EtcdServer::start_new();
    let url = format!("{}/hang?request_timeout=30s", server.url());
    let store = open(&url).await;
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let guard = store
        .lock(
            "l",
            anykv::LockOptions::new().with_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    // Let a few keep-alives succeed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!lease.is_lost() && !guard.is_lost());
    server.pause();
    let paused = Instant::now();
    // Every successful keep-alive was sent before the pause, so the server
    // holds each lease at most until `paused + 2 s`; `lost()` must fire
    // by then (a little scheduling slack allowed).
    let both = async {
        lease.lost().await;
        guard.lost().await;
    };
    let fired = tokio::time::timeout(Duration::from_millis(2300), both).await;
    let elapsed = paused.elapsed();
    server.resume();
    fired.unwrap_or_else(|_| panic!("lost() had not fired {elapsed:?} after the pause"));
    assert!(
        elapsed >= Duration::from_millis(900),
        "lost() fired too early: {elapsed:?}"
    );
    drop(guard);
    drop(lease);
    store.close().await.unwrap();
}

/// A resumed watch replays more history than its buffer without lagging
/// (the replay is read before the buffer counts); once caught up, a
/// consumer that falls more than the buffer behind still lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_more_than_the_buffer() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/resume", server.url())).await;
    let r0 = store.put("k", "0".into(), PutOptions::new()).await.unwrap();
    let mut last = r0;
    for i in 1..=100 {
        last = store
            .put("k", format!("{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = store
        .watch("k", WatchOptions::from_revision(r0).with_buffer(8))
        .await
        .unwrap();
    // Let the whole replay arrive before reading any of it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = events_until(&mut w, last).await;
    let puts: Vec<u64> = seen
        .iter()
        .filter(|e| matches!(e, WatchEvent::Put(_)))
        .map(WatchEvent::revision)
        .collect();
    assert_eq!(puts.len(), 100, "replayed puts: {puts:?}");
    assert_eq!(puts.last(), Some(&last));
    // Caught up: a burst of more than the buffer, unread, lags.
    for i in 0..40 {
        store
            .put("k", format!("b{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut lagged = false;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), w.next()).await {
        if let Err(e) = item {
            assert_eq!(e.kind(), ErrorKind::WatchLagged, "{e}");
            lagged = true;
            break;
        }
    }
    assert!(lagged, "a live burst beyond the buffer did not lag");
    store.close().await.unwrap();
}

/// Events that share one revision all arrive: a raw lease expiring
/// deletes all its keys at one revision, and a raw multi-key txn puts all
/// its keys at one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sharing_a_revision_all_arrive() {
    let server = EtcdServer::start_new();
    let store = open(&format!("{}/same", server.url())).await;
    let mut w = store.watch_tree("", WatchOptions::new()).await.unwrap();
    // A multi-key txn from a raw client.
    server
        .txn_put(
            &[("same/t/a", "1"), ("same/t/b", "2"), ("same/t/c", "3")],
            0,
        )
        .unwrap();
    // Three keys on a 2 s lease nobody keeps alive.
    let lease = server.grant_lease(2).unwrap();
    let granted = Instant::now();
    server
        .txn_put(
            &[("same/e/a", "1"), ("same/e/b", "2"), ("same/e/c", "3")],
            lease,
        )
        .unwrap();
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    let deadline = granted + Duration::from_secs(2 + 5);
    while deletes.len() < 3 {
        let ev = match tokio::time::timeout_at(deadline.into(), w.next()).await {
            Ok(Some(Ok(ev))) => ev,
            other => panic!("puts {puts:?} deletes {deletes:?}, then {other:?}"),
        };
        match ev {
            WatchEvent::Put(kv) => puts.push((kv.key, kv.revision)),
            WatchEvent::Delete { key, revision } => deletes.push((key, revision)),
            WatchEvent::Synced { .. } => {}
        }
    }
    let keys = |v: &[(String, u64)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        keys(&puts),
        ["t/a", "t/b", "t/c", "e/a", "e/b", "e/c"],
        "every put of both txns"
    );
    assert_eq!(keys(&deletes), ["e/a", "e/b", "e/c"], "every expired key");
    assert!(puts[..3].iter().all(|p| p.1 == puts[0].1));
    assert!(puts[3..].iter().all(|p| p.1 == puts[3].1));
    assert!(deletes.iter().all(|d| d.1 == deletes[0].1));
    store.close().await.unwrap();
}

/// With auth enabled the right password works; a wrong one is
/// `Unauthenticated`; the password shows neither in errors nor in `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_right_and_wrong_password() {
    let server = EtcdServer::start_with_auth("s3cret-pw");
    let host = server.endpoint();
    let store = open(&format!("etcd://root:s3cret-pw@{host}/auth")).await;
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().revision, rev);
    assert!(!format!("{store:?}").contains("s3cret-pw"));
    store.close().await.unwrap();

    let err = anykv::open(&format!("etcd://root:wrong-pw@{host}/auth"))
        .await
        .unwrap_err();
    eprintln!("wrong password: {err}");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
    assert!(!format!("{err:?}").contains("wrong-pw"), "{err:?}");

    let err = anykv::open(&format!("etcd://{host}/auth")).await;
    // Without credentials etcd refuses requests.
    if let Ok(s) = &err {
        let e = s.get("k").await.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Unauthenticated | ErrorKind::PermissionDenied
            ),
            "{e}"
        );
    }

    let config = EtcdConfig::new([host.clone()])
        .with_root("auth")
        .with_user("root", "s3cret-pw");
    assert!(!format!("{config:?}").contains("s3cret-pw"));
    let typed = EtcdStore::open(config).await.unwrap();
    assert_eq!(typed.get("k").await.unwrap().unwrap().revision, rev);
    typed.close().await.unwrap();
}

/// An etcd serving TLS with a CA made by the test is reached over TLS
/// (URL and builder); a client without the CA is refused with a clear
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_and_without_the_ca() {
    let server = EtcdServer::start_tls();
    let ca = server.ca_file().unwrap();
    let url = format!("{}/tls?ca_file={}", server.url(), ca.display());
    let store = open(&url).await;
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().revision, rev);
    store.close().await.unwrap();

    let typed = EtcdStore::open(
        EtcdConfig::new([server.endpoint()])
            .with_root("tls")
            .with_tls(TlsConfig {
                ca_file: Some(ca.clone()),
                ..TlsConfig::default()
            }),
    )
    .await
    .unwrap();
    assert_eq!(typed.get("k").await.unwrap().unwrap().revision, rev);
    typed.close().await.unwrap();

    let err = anykv::open(&format!("{}/tls?connect_timeout=2s", server.url()))
        .await
        .unwrap_err();
    eprintln!("without the CA: {err}");
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("issuer") || msg.contains("tls"),
        "the error does not say what is wrong: {err}"
    );

    // A plain client to a TLS server fails too, and does not hang.
    let started = Instant::now();
    let err = anykv::open(&format!(
        "etcd://{}/tls?connect_timeout=2s&request_timeout=2s",
        server.endpoint()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Mutual TLS: a server that requires client certificates accepts the
/// client's certificate and key (URL and builder) and refuses a client
/// without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let server = EtcdServer::start_tls_client_auth();
    let ca = server.ca_file().unwrap();
    let (cert, key) = server.client_cert().unwrap();
    let url = format!(
        "{}/mtls?ca_file={}&cert_file={}&key_file={}",
        server.url(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let store = open(&url).await;
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().revision, rev);
    store.close().await.unwrap();

    let typed = EtcdStore::open(
        EtcdConfig::new([server.endpoint()])
            .with_root("mtls")
            .with_tls(TlsConfig {
                ca_file: Some(ca.clone()),
                cert_file: Some(cert),
                key_file: Some(key),
                domain: Some("localhost".into()),
            }),
    )
    .await
    .unwrap();
    assert_eq!(typed.get("k").await.unwrap().unwrap().revision, rev);
    typed.close().await.unwrap();

    let err = anykv::open(&format!(
        "{}/mtls?ca_file={}&connect_timeout=2s",
        server.url(),
        ca.display()
    ))
    .await
    .unwrap_err();
    eprintln!("without a client certificate: {err}");
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// Several endpoints: a dead one beside a live one still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints() {
    let server = EtcdServer::start_new();
    let dead = anykv_testserver::free_port();
    let store = open(&format!(
        "etcd://127.0.0.1:{dead}/multi?endpoints={}&connect_timeout=2s",
        server.endpoint()
    ))
    .await;
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().revision, rev);
    store.delete_tree("").await.unwrap();
    store.close().await.unwrap();
}

/// Bad URLs are `Config` errors that never show a password.
#[tokio::test]
async fn bad_urls_are_config_errors() {
    for url in [
        "etcd://u:pw-secret@127.0.0.1:1/a//b",
        "etcd://u:pw-secret@127.0.0.1:1/a?bogus=1",
        "etcd://u:pw-secret@127.0.0.1:1/a?request_timeout=soon",
    ] {
        let err = anykv::open(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        assert!(!err.to_string().contains("pw-secret"), "{err}");
    }
}
