//! `status()` on a redb file: the backend, the file, its revision and
//! durability, what the store holds; `Closed` after close.

use anykv_core::{ErrorKind, PutOptions, Store};
use anykv_redb::{RedbConfig, RedbStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_file_and_its_revision() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("status.redb");
    let store = RedbStore::open(RedbConfig::new(&path).with_root("app"))
        .await
        .expect("the file opens");
    let rev = store
        .put("k", "v".into(), PutOptions::new())
        .await
        .expect("a put");
    let _lease = store
        .grant_lease(std::time::Duration::from_secs(30))
        .await
        .expect("a lease");
    let status = store.status().await.expect("a status");
    assert_eq!(status.backend, "redb");
    assert_eq!(status.revision, Some(rev));
    assert!(status.servers.is_empty());
    assert_eq!(status.stats.leases, 1);
    let detail = |name: &str| {
        status
            .details
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        detail("file"),
        Some(store.path().display().to_string()),
        "{status:?}"
    );
    assert_eq!(detail("durability").as_deref(), Some("immediate"));
    assert_eq!(detail("root").as_deref(), Some("app"));
    store.close().await.expect("close");
    assert_eq!(store.status().await.unwrap_err().kind(), ErrorKind::Closed);
}
