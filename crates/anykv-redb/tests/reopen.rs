//! What a file keeps when every store on it closes and a later one opens
//! it again: pairs, revisions, TTL deadlines, the history; what it drops:
//! leases. And files that are not what they should be.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anykv_core::{
    Bytes, Error, ErrorKind, KvPair, ListOptions, PutOptions, Store, WatchEvent, WatchOptions,
    WatchStream,
};
use anykv_redb::{RedbConfig, RedbStore};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data.redb")
}

async fn open(path: &Path, root: &str) -> RedbStore {
    RedbStore::open(RedbConfig::new(path).with_root(root))
        .await
        .expect("the file opens")
}

async fn next(w: &mut WatchStream) -> Option<anykv_core::Result<WatchEvent>> {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an event within the wait")
}

async fn event(w: &mut WatchStream) -> WatchEvent {
    next(w)
        .await
        .expect("the stream goes on")
        .expect("an event, not an error")
}

fn put_event(key: &str, value: &'static str, revision: u64) -> WatchEvent {
    WatchEvent::Put(KvPair::new(key, value, revision))
}

fn delete_event(key: &str, revision: u64) -> WatchEvent {
    WatchEvent::Delete {
        key: key.into(),
        revision,
    }
}

#[tokio::test]
async fn revisions_and_pairs_go_on_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "app").await;
    let a = s.put("a", "1".into(), PutOptions::new()).await.unwrap();
    let b = s.put("a", "2".into(), PutOptions::new()).await.unwrap();
    s.delete("a").await.unwrap();
    let c = s.put("c", "3".into(), PutOptions::new()).await.unwrap();
    assert_eq!((a, b, c), (1, 2, 4));
    s.close().await.unwrap();
    drop(s);

    let s = open(&path, "app").await;
    assert_eq!(s.revision().unwrap(), 4);
    assert_eq!(s.get("c").await.unwrap(), Some(KvPair::new("c", "3", 4)));
    // No ABA: a key re-created after the restart gets a new revision, and a
    // compare-and-swap on its revision from before fails.
    let again = s.put("a", "1".into(), PutOptions::new()).await.unwrap();
    assert_eq!(again, 5);
    let e = s
        .atomic_put("a", "x".into(), Some(a), PutOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        Error::KeyModified {
            expected: 1,
            actual: 5,
            ..
        }
    ));
    let listed = s.list("").await.unwrap();
    assert_eq!(
        listed,
        vec![KvPair::new("a", "1", 5), KvPair::new("c", "3", 4)]
    );
}

#[tokio::test]
async fn a_key_due_while_closed_is_gone_with_its_delete_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    let keep = s.put("keep", "k".into(), PutOptions::new()).await.unwrap();
    let short = s
        .put(
            "short",
            "s".into(),
            PutOptions::new().with_ttl(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let long = s
        .put(
            "long",
            "l".into(),
            PutOptions::new().with_ttl(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let s = open(&path, "").await;
    assert_eq!(s.get("short").await.unwrap(), None);
    assert_eq!(
        s.get("long").await.unwrap(),
        Some(KvPair::new("long", "l", long))
    );
    // The expiry at reopen took the next revision, and a watch resuming
    // from before the restart sees it.
    assert_eq!(s.revision().unwrap(), long + 1);
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(keep))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("short", "s", short));
    assert_eq!(event(&mut w).await, put_event("long", "l", long));
    assert_eq!(event(&mut w).await, delete_event("short", long + 1));
    // The other deadline still holds, in this process.
    assert_eq!(event(&mut w).await, delete_event("long", long + 2));
    assert_eq!(s.get("long").await.unwrap(), None);
}

#[tokio::test]
async fn watches_resume_from_the_history_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "r").await;
    let first = s.put("k", "1".into(), PutOptions::new()).await.unwrap();
    let second = s.put("k", "2".into(), PutOptions::new()).await.unwrap();
    let third = s.delete("k").await.map(|_| second + 1).unwrap();
    drop(s);

    let s = open(&path, "r").await;
    let mut w = s
        .watch("k", WatchOptions::from_revision(first))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("k", "2", second));
    assert_eq!(event(&mut w).await, delete_event("k", third));
    let fourth = s.put("k", "4".into(), PutOptions::new()).await.unwrap();
    assert_eq!(event(&mut w).await, put_event("k", "4", fourth));

    // A compaction is kept too.
    anykv_redb::compact(&s, second).await.unwrap();
    drop(w);
    drop(s);
    let s = open(&path, "r").await;
    let mut w = s
        .watch("k", WatchOptions::from_revision(first))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut w).await,
        Some(Err(Error::Compacted {
            requested: 1,
            oldest: 2,
            ..
        }))
    ));
    assert!(next(&mut w).await.is_none());
    let mut w = s
        .watch("k", WatchOptions::from_revision(second))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, delete_event("k", third));

    // Compacting everything, then reopening: the history is empty, and
    // resuming from the last revision waits for the next change.
    anykv_redb::compact(&s, fourth).await.unwrap();
    drop(w);
    drop(s);
    let s = open(&path, "r").await;
    let mut w = s
        .watch("k", WatchOptions::from_revision(third))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut w).await,
        Some(Err(Error::Compacted {
            requested: 3,
            oldest: 4,
            ..
        }))
    ));
    let mut w = s
        .watch("k", WatchOptions::from_revision(fourth))
        .await
        .unwrap();
    let fifth = s.put("k", "5".into(), PutOptions::new()).await.unwrap();
    assert_eq!(event(&mut w).await, put_event("k", "5", fifth));
}

#[tokio::test]
async fn a_smaller_history_at_reopen_trims_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    for i in 0..10u64 {
        s.put("k", Bytes::from(i.to_string()), PutOptions::new())
            .await
            .unwrap();
    }
    drop(s);
    let s = RedbStore::open(RedbConfig::new(&path).with_history(3))
        .await
        .unwrap();
    let mut w = s.watch("k", WatchOptions::from_revision(6)).await.unwrap();
    assert!(matches!(
        next(&mut w).await,
        Some(Err(Error::Compacted {
            requested: 6,
            oldest: 7,
            ..
        }))
    ));
    let mut w = s.watch("k", WatchOptions::from_revision(7)).await.unwrap();
    assert_eq!(event(&mut w).await.revision(), 8);
}

#[tokio::test]
async fn closing_revokes_leases_and_their_keys_stay_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    s.put(
        "bound",
        "b".into(),
        PutOptions::new().with_lease(lease.id()),
    )
    .await
    .unwrap();
    s.put("free", "f".into(), PutOptions::new()).await.unwrap();
    s.close().await.unwrap();
    assert!(lease.is_lost());
    drop(s);
    let s = open(&path, "").await;
    let keys: Vec<String> = s
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["free"]);
}

#[tokio::test]
async fn stores_on_one_file_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let path = file(&dir);
    let a = open(&path, "x").await;
    // Another spelling of the same file, and a root nested in the first.
    let other = dir.path().join("sub").join("..").join("data.redb");
    let b = RedbStore::open(RedbConfig::new(&other).with_root("x/y"))
        .await
        .unwrap();
    assert_eq!(a.path(), b.path());
    let mut w = a.watch_tree("y", WatchOptions::new()).await.unwrap();
    assert!(matches!(
        event(&mut w).await,
        WatchEvent::Synced { revision: 0 }
    ));
    let rev = b.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(event(&mut w).await, put_event("y/k", "v", rev));
    assert_eq!(a.revision().unwrap(), b.revision().unwrap());
    // Locks are shared too.
    let held = a.lock("y/l", Default::default()).await.unwrap();
    assert!(b.try_lock("l", Default::default()).await.unwrap().is_none());
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_malformed_pair_is_a_backend_error_and_can_be_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    s.put("good", "g".into(), PutOptions::new()).await.unwrap();
    drop(s);
    {
        // Another program scribbles on the pairs table.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("anykv_kv");
            let mut t = txn.open_table(def).unwrap();
            t.insert("bad", &[1u8, 2, 3][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = open(&path, "").await;
    for e in [
        s.get("bad").await.unwrap_err(),
        s.list("").await.unwrap_err(),
        s.atomic_delete("bad", 1).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert!(e.to_string().contains("\"bad\""), "{e}");
    }
    let e = s
        .list_with("", ListOptions::new().keys_only())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    // What lies around it still reads.
    let after = ListOptions::new().start_after("bad");
    let rest = s.list_with("", after).await.unwrap();
    assert_eq!(rest, vec![KvPair::new("good", "g", 1)]);
    // A write replaces it; a delete removes it.
    let rev = s
        .put("bad", "fixed".into(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        s.get("bad").await.unwrap(),
        Some(KvPair::new("bad", "fixed", rev))
    );
    assert!(s.delete("bad").await.unwrap());
    assert_eq!(s.get("good").await.unwrap().map(|p| p.revision), Some(1));
}

#[tokio::test]
async fn files_that_cannot_be_opened_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("x.redb");
    let e = RedbStore::open(RedbConfig::new(&missing))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("no-such-dir"), "{e}");

    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 64 * 1024]).unwrap();
    let e = RedbStore::open(RedbConfig::new(&junk)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("junk.redb"), "{e}");
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5a; 64 * 1024]);

    let e = RedbStore::open(RedbConfig::new(file(&dir)).with_root("a//b"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(!file(&dir).exists(), "a bad root creates no file");

    // Counters that make no sense: a Backend error, the file untouched.
    let path = file(&dir);
    drop(open(&path, "").await);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("anykv_meta");
            let mut t = txn.open_table(def).unwrap();
            t.insert("state", &[7u8; 3][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let e = RedbStore::open(RedbConfig::new(&path)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("counters"), "{e}");
}

#[tokio::test]
async fn a_restart_keeps_leases_locks_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let bound = s
        .put(
            "bound",
            "b".into(),
            PutOptions::new().with_lease(lease.id()),
        )
        .await
        .unwrap();
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(bound))
        .await
        .unwrap();
    s.restart(Duration::from_millis(50)).await.unwrap();
    assert_eq!(
        s.get("bound").await.unwrap(),
        Some(KvPair::new("bound", "b", bound))
    );
    let next_rev = s.put("after", "a".into(), PutOptions::new()).await.unwrap();
    assert_eq!(next_rev, bound + 1);
    assert_eq!(event(&mut w).await, put_event("after", "a", next_rev));
    lease.revoke().await.unwrap();
    assert_eq!(event(&mut w).await, delete_event("bound", next_rev + 1));
}

/// Writes `raw` under `key` in the table `table` of the file, as another
/// program scribbling on it would.
fn scribble<K: redb::Key + 'static>(path: &Path, table: &str, key: K::SelfType<'_>, raw: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<K, &[u8]> = redb::TableDefinition::new(table);
        let mut t = txn.open_table(def).unwrap();
        t.insert(key, raw).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_malformed_pair_due_while_closed_does_not_keep_the_file_shut() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    let ttl = PutOptions::new().with_ttl(Duration::from_millis(100));
    s.put("due", "d".into(), ttl).await.unwrap();
    s.put("fine", "f".into(), PutOptions::new()).await.unwrap();
    drop(s);
    scribble::<&str>(&path, "anykv_kv", "due", &[1, 0]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s = open(&path, "").await;
    assert_eq!(s.get("due").await.unwrap_err().kind(), ErrorKind::Backend);
    assert_eq!(s.get("fine").await.unwrap().map(|p| p.revision), Some(2));
    assert!(s.delete("due").await.unwrap());
}

#[tokio::test]
async fn a_malformed_change_in_the_history_is_a_backend_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let s = open(&path, "").await;
    s.put("k", "v".into(), PutOptions::new()).await.unwrap();
    drop(s);
    scribble::<u64>(&path, "anykv_history", 1, &[9, 9]);
    let e = RedbStore::open(RedbConfig::new(&path)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("revision 1"), "{e}");
    // The data is as it was, and the file is closed again.
    let db = redb::Database::create(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("anykv_kv");
    let t = txn.open_table(def).unwrap();
    let raw = redb::ReadableTable::get(&t, "k")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(&raw[25..], b"v");
}

#[tokio::test]
async fn the_registered_scheme_opens_files_by_url() {
    anykv_redb::register();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("redb://{}/by-url.redb", dir.path().display());
    let a = anykv_core::open(&format!("{base}/app")).await.unwrap();
    let b = anykv_core::open(&format!("{base}?root=app&durability=eventual"))
        .await
        .unwrap();
    assert_eq!(a.capabilities().backend, "redb");
    let rev = a.put("k", "v".into(), PutOptions::new()).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), Some(KvPair::new("k", "v", rev)));
    let e = anykv_core::open("redb://host/x.redb").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let shown = format!("{:?}", a.as_any().downcast_ref::<RedbStore>().unwrap());
    assert!(
        shown.contains("by-url.redb") && shown.contains("app"),
        "{shown}"
    );
}

#[tokio::test]
async fn eventual_durability_closed_cleanly_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir);
    let config = RedbConfig::new(&path).with_durability(anykv_redb::Durability::Eventual);
    let s = RedbStore::open(config.clone()).await.unwrap();
    let mut last = 0;
    for i in 0..50u64 {
        last = s
            .put(
                &format!("k{i}"),
                Bytes::from(i.to_string()),
                PutOptions::new(),
            )
            .await
            .unwrap();
    }
    s.close().await.unwrap();
    drop(s);
    let s = RedbStore::open(config).await.unwrap();
    assert_eq!(s.list("").await.unwrap().len(), 50);
    // No revisions skipped after a clean close, and the history resumes.
    assert_eq!(s.revision().unwrap(), last);
    let mut w = s
        .watch_tree("", WatchOptions::from_revision(last - 1))
        .await
        .unwrap();
    assert_eq!(event(&mut w).await, put_event("k49", "49", last));
}
