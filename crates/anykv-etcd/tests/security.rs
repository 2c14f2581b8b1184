//! The backend's own security and configuration tests: authentication,
//! TLS and mutual TLS, several endpoints, bad URLs. Each test starts a
//! server of its own.

mod common;

use std::time::{Duration, Instant};

use anykv_core::{ErrorKind, KvPair, PutOptions, Store};
use anykv_etcd::{EtcdConfig, EtcdStore, TlsConfig};
use anykv_testserver::etcd::EtcdServer;
use common::open;

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

    let err = EtcdStore::open_url(&format!("etcd://root:wrong-pw@{host}/auth"))
        .await
        .unwrap_err();
    eprintln!("wrong password: {err}");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
    assert!(!format!("{err:?}").contains("wrong-pw"), "{err:?}");

    let err = EtcdStore::open_url(&format!("etcd://{host}/auth")).await;
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

    let err = EtcdStore::open_url(&format!("{}/tls?connect_timeout=2s", server.url()))
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
    let err = EtcdStore::open_url(&format!(
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

    let err = EtcdStore::open_url(&format!(
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

/// `open_url` with two hosts, a dead one (nothing listens on its port)
/// first and the live server second, and no timeouts set: the store opens
/// with both endpoints, and every write of a few rounds (which a client
/// that sent some requests to the dead endpoint would fail) is read back
/// exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_with_a_dead_host_first() {
    let server = EtcdServer::start_new();
    let live = server.endpoint();
    let dead = format!("127.0.0.1:{}", anykv_testserver::free_port());
    let store = EtcdStore::open_url(&format!("etcd://{dead},{live}/deadfirst"))
        .await
        .unwrap();
    assert_eq!(store.config().endpoints, vec![dead, live]);
    for i in 0..8 {
        let value = format!("v{i}");
        let rev = store
            .put("k", value.clone().into(), PutOptions::new())
            .await
            .unwrap();
        assert_eq!(
            store.get("k").await.unwrap(),
            Some(KvPair::new("k", value, rev))
        );
    }
    assert!(store.delete("k").await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), None);
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
        let err = EtcdStore::open_url(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        assert!(!err.to_string().contains("pw-secret"), "{err}");
    }
}
