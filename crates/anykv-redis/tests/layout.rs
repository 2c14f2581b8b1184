//! The records' layout on the server: one string per key, a header then
//! the value, and a namespace written in the earlier layout (a hash per
//! key) refused at open with the data left as it was.

use std::time::Duration;

use anykv_core::{ErrorKind, PutOptions, Store};
use anykv_redis::RedisStore;
use anykv_testserver::redis::shared_url;
use anykv_testserver::resp::{command, command_ok, Reply};

const T: Duration = Duration::from_secs(5);

fn port_of(url: &str) -> u16 {
    let u = anykv_core::parse_url(url).unwrap();
    u.port().unwrap()
}

fn bulk(port: u16, args: &[&str]) -> Option<String> {
    match command_ok(port, args, T).unwrap() {
        Reply::Bulk(b) => b,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// A key's record is `<revision> <deadline> <lease>\n<value>`, and a new
/// namespace is marked with layout 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_one_string_per_key() {
    let ns = anykv_testserver::unique_name("layout");
    let base = shared_url();
    let port = port_of(&base);
    let s = RedisStore::open_url(&format!("{base}/0/app?namespace={ns}"))
        .await
        .unwrap();
    let rev = s
        .put("a/b", "x y\nz".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        bulk(port, &["GET", &format!("{{{ns}}}:k:app/a/b")]),
        Some(format!("{rev}  \nx y\nz"))
    );
    assert_eq!(
        bulk(port, &["GET", &format!("{{{ns}}}:layout")]),
        Some("2".into())
    );
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let rev = s
        .put("l", "v".into(), PutOptions::new().with_lease(lease.id()))
        .await
        .unwrap();
    assert_eq!(
        bulk(port, &["GET", &format!("{{{ns}}}:k:app/l")]),
        Some(format!("{rev}  {}\nv", lease.id().0))
    );
    let rev = s
        .put(
            "t",
            "v".into(),
            PutOptions::new().with_ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let record = bulk(port, &["GET", &format!("{{{ns}}}:k:app/t")]).unwrap();
    let (header, value) = record.split_once('\n').unwrap();
    let fields: Vec<&str> = header.split(' ').collect();
    assert_eq!(value, "v");
    assert_eq!(fields.len(), 3, "{record:?}");
    assert_eq!(fields[0], rev.to_string());
    assert!(
        fields[1].parse::<u64>().unwrap() > 1_600_000_000_000,
        "{record:?}"
    );
    assert_eq!(fields[2], "");
    // The reads parse it back.
    assert_eq!(s.get("a/b").await.unwrap().unwrap().value, "x y\nz");
    assert_eq!(s.get("t").await.unwrap().unwrap().value, "v");
    assert_eq!(s.list("").await.unwrap().len(), 3);
    lease.revoke().await.unwrap();
    s.close().await.unwrap();
}

/// A namespace that holds keys in the earlier layout (a hash per key, no
/// layout mark) is refused at open with a configuration error that says
/// what to do, and nothing in it is touched; an earlier namespace without
/// keys takes the new layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_layout_refused_at_open() {
    let ns = anykv_testserver::unique_name("layout-old");
    let base = shared_url();
    let port = port_of(&base);
    let hash = format!("{{{ns}}}:k:app/a");
    command_ok(port, &["HSET", &hash, "v", "old", "r", "7"], T).unwrap();
    command_ok(port, &["ZADD", &format!("{{{ns}}}:idx"), "0", "app/a"], T).unwrap();
    command_ok(port, &["SET", &format!("{{{ns}}}:rev"), "7"], T).unwrap();
    let err = RedisStore::open_url(&format!("{base}/0/app?namespace={ns}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("layout \"1\""), "{msg}");
    assert!(msg.contains("namespace"), "{msg}");
    assert_eq!(
        command(port, &["HGET", &hash, "v"], T).unwrap(),
        Reply::Bulk(Some("old".into()))
    );
    assert_eq!(bulk(port, &["GET", &format!("{{{ns}}}:layout")]), None);

    let empty = anykv_testserver::unique_name("layout-empty");
    command_ok(port, &["SET", &format!("{{{empty}}}:rev"), "3"], T).unwrap();
    let s = RedisStore::open_url(&format!("{base}/0/app?namespace={empty}"))
        .await
        .unwrap();
    assert_eq!(s.put("k", "v".into(), PutOptions::new()).await.unwrap(), 4);
    assert_eq!(
        bulk(port, &["GET", &format!("{{{empty}}}:layout")]),
        Some("2".into())
    );
    s.close().await.unwrap();
}
