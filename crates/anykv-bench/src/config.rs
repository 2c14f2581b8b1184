//! What to run: the workloads, the backend a URL names, and the run's
//! configuration.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::{BenchError, Result};

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Reads of existing keys, chosen at random.
    Get,
    /// Writes of existing keys, chosen at random.
    Put,
    /// Successful compare-and-swaps, each task on a key of its own.
    Cas,
    /// Writes of existing keys against the least work a revisioned store
    /// must do (Redis only: the raw side runs a script that bumps a
    /// revision counter, stores the value with its revision and appends
    /// a change record), so the ratio shows the abstraction's own cost.
    PutMin,
    /// Successful compare-and-swaps against the least work (Redis only:
    /// the raw script also reads and compares the key's revision first).
    CasMin,
    /// Successful two-key transactions, each task on two keys of its own:
    /// two compares on the keys' versions, two puts.
    Txn,
    /// Lists 10 keys under a prefix, with [`BenchConfig::list_keys`] other
    /// keys in the root.
    List,
    /// Time from a put returning to the change reaching each watcher.
    WatchLatency,
    /// Acquire and release a lock: each task its own lock, then
    /// [`BenchConfig::contenders`] tasks sharing one.
    Lock,
    /// 90% get, 10% put.
    Mixed,
    /// Client memory and connections of [`BenchConfig::watches`] watches
    /// on one store.
    WatchResources,
    /// One tree watch while 8 clients write under it: events delivered
    /// per second against writes per second, and `Synced` latency of
    /// watches opened during the writes (anykv only).
    WatchUnderLoad,
    /// Time from a leader's death (its store closed, its leadership
    /// dropped without resigning) to the next candidate leading, over
    /// [`BenchConfig::failover_rounds`] rounds (anykv only).
    ElectionFailover,
    /// A cached `Discovery::pick` and `Discovery::instances` against a
    /// plain `list` of the service's prefix, at each concurrency (anykv
    /// only).
    Discovery,
}

impl Workload {
    /// Every workload, in the order they run.
    pub const ALL: [Workload; 14] = [
        Workload::Get,
        Workload::Put,
        Workload::PutMin,
        Workload::Cas,
        Workload::CasMin,
        Workload::Txn,
        Workload::List,
        Workload::WatchLatency,
        Workload::Lock,
        Workload::Mixed,
        Workload::ElectionFailover,
        Workload::Discovery,
        Workload::WatchUnderLoad,
        Workload::WatchResources,
    ];

    /// The workload's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Cas => "cas",
            Workload::PutMin => "put-min",
            Workload::CasMin => "cas-min",
            Workload::Txn => "txn",
            Workload::List => "list",
            Workload::WatchLatency => "watch-latency",
            Workload::Lock => "lock",
            Workload::Mixed => "mixed",
            Workload::WatchResources => "watch-resources",
            Workload::WatchUnderLoad => "watch-under-load",
            Workload::ElectionFailover => "election-failover",
            Workload::Discovery => "discovery",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                BenchError::config(format!(
                    "unknown workload {s:?}; the workloads are {}",
                    names.join(", ")
                ))
            })
    }
}

/// The backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `memory://`
    Memory,
    /// `etcd://`
    Etcd,
    /// `redis://`
    Redis,
    /// `zk://`
    Zookeeper,
}

impl Backend {
    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Etcd => "etcd",
            Backend::Redis => "redis",
            Backend::Zookeeper => "zookeeper",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The store to measure (`memory://`, `etcd://…`, `redis://…`, `zk://…`).
    pub url: String,
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// The concurrencies (tasks sharing one store or client).
    pub concurrency: Vec<usize>,
    /// Measured time per row and side, split over the rounds.
    pub duration: Duration,
    /// Unmeasured warm-up before each round of each side.
    pub warmup: Duration,
    /// How many times the sides (anykv, the raw client, OpenDAL) take turns per row.
    pub rounds: usize,
    /// Keys of the `get`, `put` and `mixed` workloads.
    pub keys: usize,
    /// Other keys in the root beside the 10 that `list` reads.
    pub list_keys: usize,
    /// Watcher counts of `watch-latency`.
    pub watchers: Vec<usize>,
    /// Tasks sharing one lock in the contended `lock` row.
    pub contenders: usize,
    /// Watches opened by `watch-resources`.
    pub watches: usize,
    /// Rounds of `election-failover`.
    pub failover_rounds: usize,
    /// The candidates' lease TTL in `election-failover`.
    pub election_ttl: Duration,
    /// On etcd and Redis, also run OpenDAL's service as a second
    /// reference on the workloads it has (get, put, and list on etcd).
    pub opendal: bool,
    /// Progress messages on standard error.
    pub progress: bool,
}

impl BenchConfig {
    /// The defaults: every workload at concurrency 1 and 64, 5 s measured
    /// per row and side over 3 rounds, 100,000 other keys for `list`, 1
    /// and 1,000 watchers, 8 contenders, 10,000 watches, OpenDAL on.
    pub fn new(url: impl Into<String>) -> Self {
        BenchConfig {
            url: url.into(),
            workloads: Workload::ALL.to_vec(),
            concurrency: vec![1, 64],
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(500),
            rounds: 3,
            keys: 1000,
            list_keys: 100_000,
            watchers: vec![1, 1000],
            contenders: 8,
            watches: 10_000,
            failover_rounds: 10,
            election_ttl: Duration::from_secs(10),
            opendal: true,
            progress: false,
        }
    }

    /// Checks the numbers and the URL; returns the backend the URL names.
    pub fn validate(&self) -> Result<Backend> {
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return Err(BenchError::config(
                "--concurrency takes numbers of at least 1",
            ));
        }
        if self.watchers.is_empty() || self.watchers.contains(&0) {
            return Err(BenchError::config("--watchers takes numbers of at least 1"));
        }
        if self.rounds == 0 || self.keys == 0 || self.contenders == 0 || self.failover_rounds == 0 {
            return Err(BenchError::config(
                "--rounds, --keys, --contenders and --failover-rounds must be at least 1",
            ));
        }
        if self.duration.is_zero() {
            return Err(BenchError::config("--duration must be more than zero"));
        }
        backend_of(&self.url)
    }
}

fn backend_of(url: &str) -> Result<Backend> {
    let parsed = anykv::parse_url(url).map_err(|e| BenchError::config(e.to_string()))?;
    match parsed.scheme() {
        "memory" => Ok(Backend::Memory),
        "etcd" => Ok(Backend::Etcd),
        "redis" => Ok(Backend::Redis),
        "zk" => Ok(Backend::Zookeeper),
        "etcds" | "rediss" => Err(BenchError::config(format!(
            "{}:// (TLS) is not supported by the benchmark's raw clients; \
             benchmark over a plain connection",
            parsed.scheme()
        ))),
        other => Err(BenchError::config(format!(
            "unknown scheme {other}://; use memory://, etcd://, redis:// or zk://"
        ))),
    }
}
