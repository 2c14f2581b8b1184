//! The recipe workloads, anykv only (the raw clients have no election or
//! discovery to compare with):
//!
//! - `election-failover`: the time from a leader's death to the next
//!   candidate leading, over [`BenchConfig::failover_rounds`] rounds. Two
//!   clients of the store campaign in one election; the leader is then
//!   *killed*: its store is closed and its [`Leadership`] dropped, never
//!   resigned. Closing a store gives its leases back (etcd revokes them,
//!   ZooKeeper closes the session, memory releases them), as when a process
//!   exits and its connection closes; the figure is therefore the handover
//!   after a clean exit without resigning, not after a crash that leaves
//!   the lease to expire (that takes the TTL on top).
//! - `discovery`: a cached [`Discovery::pick`] and [`Discovery::instances`]
//!   against a plain `list` of the service's prefix (parsing each
//!   instance), in operations per second at each concurrency, with
//!   [`DISCOVERY_INSTANCES`] registered instances.
//!
//! [`Leadership`]: anykv::recipes::Leadership

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::recipes::{
    Discovery, DiscoveryOptions, Election, ElectionOptions, Instance, Registry, RegistryOptions,
    DEFAULT_SERVICES_PREFIX,
};
use anykv::Store;
use serde::Serialize;

use crate::{BenchConfig, BenchError, Result};

/// Instances registered for `discovery`.
pub const DISCOVERY_INSTANCES: usize = 10;

/// The `election-failover` figures.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// Rounds measured.
    pub rounds: usize,
    /// The candidates' lease TTL.
    pub ttl_secs: f64,
    /// Median milliseconds from the kill to the next leader.
    pub p50_ms: f64,
    /// Slowest round.
    pub max_ms: f64,
    /// Every round, in order.
    pub samples_ms: Vec<f64>,
}

/// One concurrency of `discovery`.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryRow {
    /// Tasks sharing one store and one discovery.
    pub concurrency: usize,
    /// `Discovery::pick` per second.
    pub pick_ops_per_sec: f64,
    /// `Discovery::instances` per second.
    pub instances_ops_per_sec: f64,
    /// `list` of the service prefix (and parsing) per second.
    pub list_ops_per_sec: f64,
}

/// The `discovery` figures.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryFigures {
    /// Instances of the service.
    pub instances: usize,
    /// Measured seconds per cell.
    pub seconds: f64,
    /// One row per concurrency.
    pub rows: Vec<DiscoveryRow>,
}

/// Two clients of the store `url` names: for `memory://` a named store of
/// this run, so both see one state.
async fn client(url: &str) -> Result<Arc<dyn Store>> {
    let parsed = anykv::parse_url(url).map_err(|e| BenchError::config(e.to_string()))?;
    let url = if parsed.scheme() == "memory" {
        format!("memory://anykv-bench-recipes-{}", std::process::id())
    } else {
        url.to_owned()
    };
    Ok(anykv::open(&url).await?)
}

/// `election-failover`: see the [module](self).
pub async fn election_failover(config: &BenchConfig) -> Result<Failover> {
    let options = ElectionOptions::new().with_ttl(config.election_ttl);
    let mut samples = Vec::with_capacity(config.failover_rounds);
    for round in 0..config.failover_rounds {
        let name = format!("anykv-bench-{}-{round}", std::process::id());
        let first = client(&config.url).await?;
        let second = client(&config.url).await?;
        let leader = Election::new(first.clone(), options.clone())
            .campaign(&name, "first")
            .await?;
        let election = Election::new(second.clone(), options.clone());
        let waiting = {
            let name = name.clone();
            tokio::spawn(async move { election.campaign(&name, "second").await })
        };
        // The second candidate queues behind the leader before the kill.
        let queued = Election::new(second.clone(), options.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued.candidates(&name).await?.len() < 2 {
            if Instant::now() > deadline {
                return Err(BenchError::new("the second candidate never queued"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = Instant::now();
        let _ = first.close().await;
        drop(leader);
        let next = tokio::time::timeout(config.election_ttl * 4 + Duration::from_secs(10), waiting)
            .await
            .map_err(|_| BenchError::new("no new leader after the kill"))?
            .map_err(|e| BenchError::new(format!("the campaign task failed: {e}")))??;
        samples.push(killed.elapsed().as_secs_f64() * 1000.0);
        let _ = next.resign().await;
        let _ = second.close().await;
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Failover {
        rounds: samples.len(),
        ttl_secs: config.election_ttl.as_secs_f64(),
        p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        samples_ms: samples,
    })
}

/// Runs `op` on `tasks` tasks for `seconds`; returns operations per second.
async fn throughput<F, Fut>(tasks: usize, seconds: Duration, op: F) -> Result<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + seconds;
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (op, count) = (op.clone(), count.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                op().await?;
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            count.fetch_add(n, Ordering::Relaxed);
            Ok::<(), BenchError>(())
        }));
    }
    for h in handles {
        h.await
            .map_err(|e| BenchError::new(format!("a task failed: {e}")))??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// `discovery`: see the [module](self).
pub async fn discovery(config: &BenchConfig) -> Result<DiscoveryFigures> {
    let store = client(&config.url).await?;
    let service = format!("anykv-bench-{}", std::process::id());
    let registry = Registry::new(store.clone(), RegistryOptions::new())?;
    let mut held = Vec::new();
    for i in 0..DISCOVERY_INSTANCES {
        let port = u16::try_from(8000 + i).unwrap_or(8000);
        held.push(
            registry
                .register(Instance::new(
                    service.as_str(),
                    format!("i{i}"),
                    "10.0.0.1",
                    port,
                ))
                .await?,
        );
    }
    let result = discovery_rows(config, &store, &service).await;
    let _ = registry.close().await;
    let _ = store.close().await;
    drop(held);
    result
}

async fn discovery_rows(
    config: &BenchConfig,
    store: &Arc<dyn Store>,
    service: &str,
) -> Result<DiscoveryFigures> {
    let found = Arc::new(Discovery::open(store.clone(), service, DiscoveryOptions::new()).await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while found.all_instances().len() < DISCOVERY_INSTANCES {
        if Instant::now() > deadline {
            return Err(BenchError::new("discovery never saw every instance"));
        }
        found.changed().await;
    }
    let seconds = config.duration;
    let prefix = format!("{DEFAULT_SERVICES_PREFIX}/{service}");
    let mut rows = Vec::new();
    for &c in &config.concurrency {
        let d = found.clone();
        let pick = throughput(c, seconds, move || {
            let picked = d.pick();
            async move {
                picked
                    .map(|_| ())
                    .ok_or_else(|| BenchError::new("pick found no instance"))
            }
        })
        .await?;
        let d = found.clone();
        let instances = throughput(c, seconds, move || {
            let n = d.instances().len();
            async move {
                if n == DISCOVERY_INSTANCES {
                    Ok(())
                } else {
                    Err(BenchError::new(format!("instances returned {n}")))
                }
            }
        })
        .await?;
        let (s, p) = (store.clone(), prefix.clone());
        let list = throughput(c, seconds, move || {
            let (s, p) = (s.clone(), p.clone());
            async move {
                let pairs = s.list(&p).await?;
                let n = pairs
                    .iter()
                    .filter(|kv| Instance::from_json(&kv.value).is_ok())
                    .count();
                if n == DISCOVERY_INSTANCES {
                    Ok(())
                } else {
                    Err(BenchError::new(format!("list returned {n} instances")))
                }
            }
        })
        .await?;
        rows.push(DiscoveryRow {
            concurrency: c,
            pick_ops_per_sec: pick,
            instances_ops_per_sec: instances,
            list_ops_per_sec: list,
        });
    }
    Ok(DiscoveryFigures {
        instances: DISCOVERY_INSTANCES,
        seconds: seconds.as_secs_f64(),
        rows,
    })
}
