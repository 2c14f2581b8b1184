//! What the cluster tests use: a three-member cluster off the runtime's
//! workers, URLs on chosen members, the conformance suite's factory on a
//! cluster, and timing helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anykv_conformance::StoreFactory;
use anykv_core::{async_trait, Store};
use anykv_etcd::EtcdStore;
use anykv_testserver::etcd_cluster::{EtcdCluster, MEMBERS};

/// The request timeout of the stores on a cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub type Shared = Arc<Mutex<EtcdCluster>>;

/// Starts a cluster (blocking, off the runtime's workers).
pub async fn start_cluster() -> Shared {
    let c = tokio::task::spawn_blocking(EtcdCluster::start)
        .await
        .expect("start the cluster");
    Arc::new(Mutex::new(c))
}

/// Runs `f` on the cluster off the runtime's workers (its calls block).
pub async fn on_cluster<T: Send + 'static>(
    c: &Shared,
    f: impl FnOnce(&mut EtcdCluster) -> T + Send + 'static,
) -> T {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&mut c.lock().unwrap_or_else(|e| e.into_inner())))
        .await
        .expect("cluster call")
}

/// The leader's index, once there is one (panics after 20 s).
pub async fn leader(c: &Shared) -> usize {
    on_cluster(c, |c| c.wait_for_leader(Duration::from_secs(20)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `etcd://` URL of the members in `order`, on `root`, with the file's
/// request timeout.
pub fn url_of(endpoints: &[String], order: &[usize], root: &str) -> String {
    let hosts: Vec<&str> = order.iter().map(|i| endpoints[*i].as_str()).collect();
    format!(
        "etcd://{}/{root}?request_timeout={}ms",
        hosts.join(","),
        REQUEST_TIMEOUT.as_millis()
    )
}

/// The members' endpoints, by index.
pub async fn endpoints(c: &Shared) -> Vec<String> {
    on_cluster(c, |c| c.endpoints()).await
}

/// The suite's factory on a cluster: stores on every member's endpoint.
/// `pause_server` freezes every member and `restart_server` kills two
/// members (the cluster loses its quorum), starts them again, then kills
/// and starts the third: both are outages of the whole cluster, which is
/// what the fault cases expect of "the server".
pub struct ClusterFactory {
    /// The cluster.
    pub cluster: Shared,
    /// Its members' endpoints.
    pub endpoints: Vec<String>,
}

#[async_trait]
impl StoreFactory for ClusterFactory {
    async fn open(&self, root: &str) -> anykv_core::Result<Arc<dyn Store>> {
        let url = url_of(&self.endpoints, &[0, 1, 2], root);
        Ok(Arc::new(EtcdStore::open_url(&url).await?))
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> anykv_core::Result<()> {
        anykv_etcd::compact(&**store, revision).await
    }

    async fn restart_server(&self) -> anykv_core::Result<()> {
        on_cluster(&self.cluster, |c| {
            let first = c.leader().unwrap_or(0);
            let (second, third) = ((first + 1) % MEMBERS, (first + 2) % MEMBERS);
            c.kill(first);
            c.kill(second);
            c.restart(first);
            c.restart(second);
            c.kill(third);
            c.restart(third);
        })
        .await;
        Ok(())
    }

    async fn pause_server(&self) -> anykv_core::Result<()> {
        on_cluster(&self.cluster, |c| (0..MEMBERS).try_for_each(|i| c.pause(i)))
            .await
            .map_err(anykv_core::Error::InvalidArgument)
    }

    async fn resume_server(&self) -> anykv_core::Result<()> {
        on_cluster(&self.cluster, |c| {
            (0..MEMBERS).try_for_each(|i| c.resume(i))
        })
        .await
        .map_err(anykv_core::Error::InvalidArgument)
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }
}

/// The `p`-th percentile of `samples` (sorted here).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// `n` gets of `key`, one after another; their latencies.
pub async fn timed_gets(store: &dyn Store, key: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        store.get(key).await.expect("get");
        out.push(t.elapsed());
    }
    out
}

/// Polls `f` every 10 ms until it holds; how long that took (panics
/// after `within`).
pub async fn time_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}
