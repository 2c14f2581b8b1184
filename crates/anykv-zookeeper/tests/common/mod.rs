//! What the ZooKeeper test files share: the suite's factory on the shared
//! server (with pause, restart and request-timeout hooks), opening stores
//! as the suite sees them, and helpers for reading watches and for
//! writing under load.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anykv_conformance::UrlFactory;
use anykv_core::{ErrorKind, PutOptions, Store, WatchEvent};
use anykv_testserver::zookeeper::shared_url;
use anykv_zookeeper::ZkStore;
use futures::StreamExt;

/// Opens the store `url` names as `anykv::open` would, without the
/// facade.
pub async fn open(url: &str) -> anykv_core::Result<Arc<dyn Store>> {
    Ok(Arc::new(ZkStore::open_url(url).await?))
}

/// The request timeout of the suite's stores: a frozen server's calls fail
/// within it.
pub const SUITE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn hook(name: &'static str, r: Result<(), String>) -> anykv_core::Result<()> {
    r.map_err(|e| anykv_core::Error::unsupported("zookeeper tests", name, e))
}

/// The shared server, with pause and restart hooks (the fault cases that
/// use them run alone).
pub fn factory() -> UrlFactory {
    UrlFactory::new(
        format!(
            "{}?request_timeout={}ms",
            shared_url(),
            SUITE_REQUEST_TIMEOUT.as_millis()
        ),
        |url| async move { open(&url).await },
    )
    .with_pause(
        || async { hook("pause_server", anykv_testserver::zookeeper::pause_shared()) },
        || async {
            hook(
                "resume_server",
                anykv_testserver::zookeeper::resume_shared(),
            )
        },
    )
    .with_restart(|| async {
        let r = tokio::task::spawn_blocking(anykv_testserver::zookeeper::restart_shared)
            .await
            .unwrap_or_else(|e| Err(format!("the restart panicked: {e}")));
        hook("restart_server", r)
    })
    .with_request_timeout(SUITE_REQUEST_TIMEOUT)
}

/// The next watch event, within 15 s.
pub async fn next(w: &mut anykv_core::WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

/// A fresh root on the shared server.
pub fn shared_root(name: &str) -> String {
    format!("{}/{}", shared_url(), anykv_testserver::unique_name(name))
}

/// Writers that put keys under `prefix` through their own stores (four
/// puts in flight per store) until told to stop; how many puts they made.
pub fn spawn_writers(
    stores: Vec<std::sync::Arc<dyn Store>>,
    prefix: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let mut tasks = Vec::new();
    for (w, s) in stores.into_iter().enumerate() {
        for lane in 0..4 {
            let stop = stop.clone();
            let prefix = prefix.to_owned();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("{prefix}/w{w}/k{}", lane + 4 * (n % 5));
                    s.put(&key, format!("{n}").into(), PutOptions::new())
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
    }
    tasks
}

/// Applies watch events to a map of key -> (value, revision), checking
/// that revisions strictly increase after `Synced`.
pub struct Follower {
    pub state: std::collections::BTreeMap<String, (anykv_core::Bytes, u64)>,
    pub synced: bool,
    pub last: u64,
    pub live: usize,
}

impl Follower {
    pub fn new() -> Self {
        Follower {
            state: Default::default(),
            synced: false,
            last: 0,
            live: 0,
        }
    }

    pub fn apply(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => {
                if self.synced {
                    assert!(
                        kv.revision > self.last,
                        "{} after {}",
                        kv.revision,
                        self.last
                    );
                    self.last = kv.revision;
                    self.live += 1;
                }
                self.state.insert(kv.key, (kv.value, kv.revision));
            }
            WatchEvent::Delete { key, revision } => {
                assert!(self.synced, "a delete before Synced");
                assert!(revision > self.last, "{revision} after {}", self.last);
                self.last = revision;
                self.live += 1;
                self.state.remove(&key);
            }
            WatchEvent::Synced { revision } => {
                assert!(
                    revision >= self.last,
                    "Synced {revision} after {}",
                    self.last
                );
                self.last = revision;
                self.synced = true;
            }
        }
    }

    /// Takes every event that comes within `quiet`.
    pub async fn take(&mut self, w: &mut anykv_core::WatchStream, quiet: Duration) {
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, w.next()).await {
            self.apply(ev.unwrap());
        }
    }

    pub fn as_list(&self) -> Vec<(String, anykv_core::Bytes, u64)> {
        self.state
            .iter()
            .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
            .collect()
    }
}

/// Whether `e` is what a call that could not reach the server must give.
pub fn retryable(e: &anykv_core::Error) -> bool {
    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) && e.is_retryable()
}
