//! The conformance suite against a real redis-server (at `ANYKV_REDIS_URL`,
//! or started on a free loopback port), and the change stream's history
//! bound, beside it on the same server: `cargo test -p anykv-redis --test
//! conformance`.

use std::sync::Arc;
use std::time::Duration;

use anykv_conformance::{conformance_tests, StoreFactory, UrlFactory};
use anykv_core::{
    async_trait, Error, ErrorKind, PutOptions, Result, Store, WatchEvent, WatchOptions, WatchStream,
};
use anykv_redis::RedisStore;
use anykv_testserver::redis::{restart_shared, shared_url};
use futures::StreamExt;

/// Opens a Redis store as `anykv::open` would, without the facade.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(RedisStore::open_url(url).await?))
}

/// The suite's factory: clients on `{shared server}/0/{root}`, the compact
/// hook (`XTRIM MINID`), and a restart hook for the shared server when the
/// tests started it.
struct RedisFactory(UrlFactory);

#[async_trait]
impl StoreFactory for RedisFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        self.0.open(root).await
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_redis::compact(&**store, revision).await
    }

    async fn restart_server(&self) -> Result<()> {
        match tokio::task::spawn_blocking(restart_shared).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::unsupported("redis", "restart_server", e)),
            Err(e) => Err(Error::Config(format!("restart failed: {e}"))),
        }
    }

    async fn pause_server(&self) -> Result<()> {
        anykv_testserver::redis::pause_shared(true)
            .map_err(|e| Error::unsupported("redis", "pause_server", e))
    }

    async fn resume_server(&self) -> Result<()> {
        anykv_testserver::redis::pause_shared(false)
            .map_err(|e| Error::unsupported("redis", "resume_server", e))
    }

    fn request_timeout(&self) -> Duration {
        SUITE_REQUEST_TIMEOUT
    }
}

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn factory() -> RedisFactory {
    RedisFactory(UrlFactory::new(
        format!(
            "{}/0?request_timeout={}ms",
            shared_url(),
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        |url| async move { open(&url).await },
    ))
}

conformance_tests!(factory());

async fn next(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// The change stream is bounded by `history`: a watch resuming from a
/// revision that was trimmed away yields `Compacted` and ends, while one
/// resuming within the kept history replays it. (A namespace of its own,
/// so the trimming touches no other test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_bound_yields_compacted() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = format!(
        "{}/0/h?namespace={}&history=100",
        shared_url(),
        anykv_testserver::unique_name("history")
    );
    let s = open(&url).await.unwrap();
    let first = s.put("k", "0".into(), PutOptions::new()).await.unwrap();
    let mut last = first;
    for i in 1..1000 {
        last = s
            .put("k", format!("{i}").into(), PutOptions::new())
            .await
            .unwrap();
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(first))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Compacted, "{e}"),
        other => panic!("expected Err(Compacted), got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .is_none());
    let mut w = s
        .watch("k", WatchOptions::from_revision(last - 10))
        .await
        .unwrap();
    for r in last - 9..=last {
        assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    }
    s.delete_tree("").await.unwrap();
    s.close().await.unwrap();
}

/// Resuming over more matching changes than the watch's buffer delivers
/// all of them (the catch-up comes ahead of the channel) instead of
/// lagging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_more_than_buffer() {
    let _server = anykv_conformance::shared_server_guard().await;
    let url = format!(
        "{}/0/{}",
        shared_url(),
        anykv_testserver::unique_name("resume-buffer")
    );
    let s = open(&url).await.unwrap();
    let first = s.put("k", "start".into(), PutOptions::new()).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..40 {
        revs.push(
            s.put("k", format!("{i}").into(), PutOptions::new())
                .await
                .unwrap(),
        );
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(first).with_buffer(4))
        .await
        .unwrap();
    for r in revs {
        assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    }
    let r = s.put("k", "live".into(), PutOptions::new()).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.revision == r));
    s.delete_tree("").await.unwrap();
    s.close().await.unwrap();
}
