//! Error messages: built from the gRPC code name, the server's message and
//! the innermost cause of a transport error, never from `Debug` text
//! (tonic's status, hyper's errors).

mod common;

use std::error::Error as _;

use anykv_core::{Error, ErrorKind, PutOptions, Store};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd::EtcdServer;

/// Fragments of `Debug` output that must never be in a message.
fn assert_no_debug_text(text: &str) {
    for bad in [
        "{",
        "}",
        "Custom",
        "hyper::Error",
        "kind:",
        "code: '",
        "transport error",
        "grpc request error",
        "source:",
    ] {
        assert!(!text.contains(bad), "{bad:?} in {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_gives_clean_messages() {
    let mut server = EtcdServer::start_new();
    let url = format!(
        "{}/errors?request_timeout=1s&connect_timeout=1s",
        server.url()
    );
    let store = EtcdStore::open_url(&url).await.unwrap();
    store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    server.stop();

    for call in 0..2 {
        let err = match call {
            0 => store.get("k").await.map(|_| ()).unwrap_err(),
            _ => store
                .put("k", "w".into(), PutOptions::new())
                .await
                .map(|_| ())
                .unwrap_err(),
        };
        eprintln!("call {call} on a stopped server: {err}");
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err}"
        );
        let text = err.to_string();
        assert_no_debug_text(&text);
        // The member's refusal, named with the member; or, once the
        // member is known down, that no member could be reached.
        let refused = format!(
            "({}): tcp connect error: Connection refused (os error 111)",
            server.endpoint()
        );
        assert!(
            text.ends_with(&refused)
                || text.ends_with(": no etcd member could be reached")
                || err.kind() == ErrorKind::Timeout,
            "{text}"
        );
    }

    // Opening against it names the endpoint and the innermost cause.
    let err = EtcdStore::open_url(&url).await.unwrap_err();
    eprintln!("open on a stopped server: {err}");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        text.starts_with(&format!(
            "etcd: unavailable: cannot reach http://{}: ",
            server.endpoint()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("Connection refused (os error 111)"),
        "{text}"
    );
    assert_no_debug_text(&text);
    // The client library's error stays attached.
    assert!(err.source().is_some(), "{err:?}");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_gives_the_code_and_the_servers_message() {
    let server = EtcdServer::start_new();
    let store = EtcdStore::open_url(&format!("{}/errors", server.url()))
        .await
        .unwrap();
    let rev = store.put("k", "v".into(), PutOptions::new()).await.unwrap();
    // Compacting at a revision the server has not reached yet.
    let err = store.compact(rev + 1000).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcd: compact: out_of_range: etcdserver: mvcc: required revision is a future revision"
    );
    assert!(
        matches!(
            &err,
            Error::Backend {
                source: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_debug_text(&err.to_string());
    store.close().await.unwrap();
}
