//! What the etcd test files share: the suite's factory (the shared
//! server, or a test's own) and helpers for opening stores and reading
//! watches.

#![allow(dead_code)]

pub mod cluster;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_conformance::StoreFactory;
use anykv_core::{async_trait, PutOptions, Store, WatchEvent};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd::{shared_url, EtcdServer};
use futures::StreamExt;

/// Restarts a server (blocking).
pub type Restart = Arc<dyn Fn() + Send + Sync>;

/// Opens `{base}/{root}`; compacts through the store; restarts the server
/// when it owns one.
pub struct EtcdFactory {
    base: String,
    restart: Option<Restart>,
}

#[async_trait]
impl StoreFactory for EtcdFactory {
    async fn open(&self, root: &str) -> anykv_core::Result<Arc<dyn Store>> {
        let (base, query) = match self.base.split_once('?') {
            Some((b, q)) => (b.to_owned(), format!("?{q}")),
            None => (self.base.clone(), String::new()),
        };
        let store =
            EtcdStore::open_url(&format!("{}/{root}{query}", base.trim_end_matches('/'))).await?;
        Ok(Arc::new(store))
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> anykv_core::Result<()> {
        anykv_etcd::compact(&**store, revision).await
    }

    async fn restart_server(&self) -> anykv_core::Result<()> {
        let Some(restart) = self.restart.clone() else {
            return Err(anykv_core::Error::unsupported(
                "etcd tests",
                "restart_server",
                "the server at ANYKV_ETCD_URL is not ours to restart",
            ));
        };
        tokio::task::spawn_blocking(move || restart())
            .await
            .map_err(|e| anykv_core::Error::InvalidArgument(format!("restart failed: {e}")))
    }

    async fn pause_server(&self) -> anykv_core::Result<()> {
        pause_shared_server(true)
    }

    async fn resume_server(&self) -> anykv_core::Result<()> {
        pause_shared_server(false)
    }

    fn request_timeout(&self) -> Duration {
        SUITE_REQUEST_TIMEOUT
    }
}

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
pub const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn pause_shared_server(pause: bool) -> anykv_core::Result<()> {
    anykv_testserver::etcd::pause_shared(pause)
        .map_err(|e| anykv_core::Error::unsupported("etcd tests", "pause_server", e))
}

/// The suite's factory: the shared server, with restart and pause hooks
/// (the fault cases that use them run alone).
pub fn factory() -> EtcdFactory {
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
pub fn own_factory(server: &Arc<Mutex<EtcdServer>>, query: &str) -> EtcdFactory {
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

/// Opens the store `url` names, as the suite sees stores.
pub async fn open(url: &str) -> Arc<dyn Store> {
    let store = EtcdStore::open_url(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    Arc::new(store)
}

/// Puts `key`, retrying while the server comes back (a retry may apply a
/// write twice; the tests only count events after the returned revision).
pub async fn put_retrying(store: &dyn Store, key: &str) -> u64 {
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
pub async fn events_until(w: &mut anykv_core::WatchStream, last: u64) -> Vec<WatchEvent> {
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

pub async fn next(w: &mut anykv_core::WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}
