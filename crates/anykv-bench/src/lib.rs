//! Measures what anykv costs compared with the raw client of each backend,
//! side by side, in one run, on the same server.
//!
//! Every workload runs twice per round: once through anykv (one
//! `Arc<dyn Store>` shared by all tasks) and once through the raw client
//! doing the same job the way a careful user would (one client shared by
//! all tasks: `etcd-client`, `redis`, `zookeeper-client`, or for the
//! memory backend a `BTreeMap` behind a `tokio::sync::RwLock`). The two
//! sides alternate over several short rounds, so drift and noise hit
//! both, and their counts and latency histograms are summed. Each side
//! writes in a namespace of its own and everything is deleted at the end.
//!
//! ```no_run
//! # async fn demo() -> Result<(), anykv_bench::BenchError> {
//! use anykv_bench::{run, BenchConfig, Workload};
//! let mut config = BenchConfig::new("memory://");
//! config.workloads = vec![Workload::Get, Workload::Put];
//! let report = run(&config).await?;
//! println!("{}", report.to_markdown());
//! # Ok(()) }
//! ```
//!
//! Workloads ([`Workload`]): `get` (existing keys), `put`, `cas`
//! (successful compare-and-swap), `list` (10 keys under a prefix beside
//! [`BenchConfig::list_keys`] other keys), `watch-latency` (from a put
//! returning to the change reaching each watcher), `lock` (acquire and
//! release, each task its own lock, plus one row of contenders sharing a
//! lock), `mixed` (90% get, 10% put), `watch-under-load` (events a tree
//! watch delivers per second while 8 clients write under it, and the
//! `Synced` latency of watches opened meanwhile; anykv only), and
//! `watch-resources` (client memory and connections of many watches on one
//! store).

#![deny(rustdoc::broken_intra_doc_links)]

pub mod kv;
pub mod load;
pub mod sys;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;

use kv::{AnykvKv, EtcdRaw, Kv, MemoryBaseline, RedisRaw, ZkRaw};

/// An error of the benchmark: a bad configuration (the command line, the
/// URL) or a failure while running.
#[derive(Debug)]
pub struct BenchError {
    message: String,
    config: bool,
}

impl BenchError {
    /// A failure while running.
    pub fn new(message: impl Into<String>) -> Self {
        BenchError {
            message: message.into(),
            config: false,
        }
    }

    /// A bad configuration.
    pub fn config(message: impl Into<String>) -> Self {
        BenchError {
            message: message.into(),
            config: true,
        }
    }

    /// Whether the configuration (not the run) is at fault.
    pub fn is_config(&self) -> bool {
        self.config
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BenchError {}

impl From<anykv::Error> for BenchError {
    fn from(e: anykv::Error) -> Self {
        BenchError {
            message: format!("anykv: {e}"),
            config: e.kind() == anykv::ErrorKind::Config,
        }
    }
}

impl From<etcd_client::Error> for BenchError {
    fn from(e: etcd_client::Error) -> Self {
        BenchError::new(format!("etcd-client: {e}"))
    }
}

impl From<redis::RedisError> for BenchError {
    fn from(e: redis::RedisError) -> Self {
        BenchError::new(format!("redis: {e}"))
    }
}

impl From<zookeeper_client::Error> for BenchError {
    fn from(e: zookeeper_client::Error) -> Self {
        BenchError::new(format!("zookeeper-client: {e}"))
    }
}

/// The result type of the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;

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
}

impl Workload {
    /// Every workload, in the order they run.
    pub const ALL: [Workload; 9] = [
        Workload::Get,
        Workload::Put,
        Workload::Cas,
        Workload::List,
        Workload::WatchLatency,
        Workload::Lock,
        Workload::Mixed,
        Workload::WatchUnderLoad,
        Workload::WatchResources,
    ];

    /// The workload's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Cas => "cas",
            Workload::List => "list",
            Workload::WatchLatency => "watch-latency",
            Workload::Lock => "lock",
            Workload::Mixed => "mixed",
            Workload::WatchResources => "watch-resources",
            Workload::WatchUnderLoad => "watch-under-load",
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
    /// How many times anykv and the raw client alternate per row.
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
    /// Progress messages on standard error.
    pub progress: bool,
}

impl BenchConfig {
    /// The defaults: every workload at concurrency 1 and 64, 5 s measured
    /// per row and side over 3 rounds, 100,000 other keys for `list`, 1
    /// and 1,000 watchers, 8 contenders, 10,000 watches.
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
        if self.rounds == 0 || self.keys == 0 || self.contenders == 0 {
            return Err(BenchError::config(
                "--rounds, --keys and --contenders must be at least 1",
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

/// Latency figures of one side of a row, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct SideStats {
    /// What ran ("anykv", "etcd-client", ...).
    pub label: String,
    /// Operations measured (all rounds).
    pub operations: u64,
    /// Measured seconds (all rounds).
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Latency samples (for `watch-latency`, one per watcher and put).
    pub samples: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest latency, µs.
    pub max_us: f64,
}

/// A target checked against a row.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// The target, in words.
    pub target: String,
    /// Whether the row meets it.
    pub met: bool,
}

/// One row of the table: a workload at one concurrency, both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// What the row varies: "tasks", "watchers" or "contenders".
    pub unit: String,
    /// Tasks (or watchers, or contenders).
    pub concurrency: usize,
    /// The anykv side.
    pub anykv: SideStats,
    /// The raw side.
    pub raw: SideStats,
    /// anykv ops/s divided by raw ops/s.
    pub ratio: f64,
    /// The target that applies, if any.
    pub target: Option<TargetCheck>,
}

/// What many watches on one store cost.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// Watches opened (each on a key of its own, each past `Synced`).
    pub watches: usize,
    /// TCP connections the store opened to the server (before any watch).
    pub store_connections: Option<usize>,
    /// TCP connections to the server added by the watches.
    pub watch_connections: Option<usize>,
    /// Resident memory the watches added, in bytes.
    pub rss_delta_bytes: Option<u64>,
    /// The store's own count of its watches.
    pub stats_watches: usize,
    /// The store's own count of its connections.
    pub stats_connections: usize,
    /// Seconds to open them all.
    pub open_seconds: f64,
    /// The target, checked.
    pub target: TargetCheck,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The backend.
    pub backend: Backend,
    /// The URL, password redacted.
    pub url: String,
    /// What the raw side was.
    pub raw_label: String,
    /// Measured seconds per row and side.
    pub duration_secs: f64,
    /// Warm-up seconds per round and side.
    pub warmup_secs: f64,
    /// Alternating rounds per row.
    pub rounds: usize,
    /// Other keys beside the listed ones.
    pub list_keys: usize,
    /// Seconds spent writing the keys the workloads need.
    pub setup_secs: f64,
    /// Seconds spent deleting them.
    pub cleanup_secs: f64,
    /// The rows, in order.
    pub rows: Vec<Row>,
    /// The `watch-resources` figures.
    pub resources: Option<Resources>,
    /// The `watch-under-load` figures.
    pub watch_load: Option<load::WatchLoad>,
}

// ------------------------------------------------------------- the runner

/// One operation of a workload, repeated by one task.
#[async_trait]
trait Op: Send {
    /// Runs once. `None`: the runner times the call; `Some`: the
    /// latencies the operation measured itself.
    async fn run(&mut self) -> Result<Option<Vec<Duration>>>;
}

type Ops = Vec<Box<dyn Op>>;

struct Measured {
    ops: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 3_600_000_000_000, 3) {
        Ok(h) => h,
        Err(_) => Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits")),
    }
}

async fn phase(ops: Ops, warmup: Duration, measure: Duration) -> Result<(Ops, Measured)> {
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let handles: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut count = 0u64;
                let mut last = from;
                loop {
                    let t = Instant::now();
                    if t >= until {
                        break;
                    }
                    match op.run().await {
                        Ok(samples) => {
                            let done = Instant::now();
                            if t >= from {
                                count += 1;
                                last = done;
                                match samples {
                                    None => hist.saturating_record(nanos(done - t)),
                                    Some(v) => {
                                        for d in v {
                                            hist.saturating_record(nanos(d));
                                        }
                                    }
                                }
                            }
                        }
                        Err(e) => return (op, Err(e)),
                    }
                }
                (op, Ok((count, hist, last)))
            })
        })
        .collect();
    let mut back = Vec::with_capacity(handles.len());
    let mut total = Measured {
        ops: 0,
        elapsed: measure,
        hist: histogram(),
    };
    let mut first_err = None;
    let mut last_done = from;
    for h in handles {
        let (op, r) = h
            .await
            .map_err(|e| BenchError::new(format!("a benchmark task failed: {e}")))?;
        back.push(op);
        match r {
            Ok((count, hist, last)) => {
                total.ops += count;
                let _ = total.hist.add(&hist);
                last_done = last_done.max(last);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    total.elapsed = (last_done - from).max(measure);
    Ok((back, total))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

fn stats(label: &str, ops: u64, elapsed: Duration, hist: &Histogram<u64>) -> SideStats {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let secs = elapsed.as_secs_f64();
    SideStats {
        label: label.to_owned(),
        operations: ops,
        seconds: secs,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        samples: hist.len(),
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
    }
}

/// Runs both sides of one row over the configured rounds, alternating
/// which goes first.
async fn compare(
    config: &BenchConfig,
    anykv_ops: Ops,
    raw_ops: Ops,
    labels: (&str, &str),
) -> Result<(SideStats, SideStats)> {
    let rounds = config.rounds as u32;
    let measure = config.duration / rounds;
    let mut sides = [
        (Some(anykv_ops), 0u64, Duration::ZERO, histogram()),
        (Some(raw_ops), 0u64, Duration::ZERO, histogram()),
    ];
    for round in 0..config.rounds {
        let order = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for i in order {
            let ops = sides[i].0.take().unwrap_or_default();
            let (ops, m) = phase(ops, config.warmup, measure).await?;
            sides[i].0 = Some(ops);
            sides[i].1 += m.ops;
            sides[i].2 += m.elapsed;
            let _ = sides[i].3.add(&m.hist);
        }
    }
    let a = stats(labels.0, sides[0].1, sides[0].2, &sides[0].3);
    let r = stats(labels.1, sides[1].1, sides[1].2, &sides[1].3);
    Ok((a, r))
}

// ------------------------------------------------------------ the workloads

const VALUE_SIZE: usize = 100;
const LISTED: usize = 10;

fn value() -> Bytes {
    let v: Vec<u8> = (0..VALUE_SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    Bytes::from(v)
}

fn get_key(i: usize) -> String {
    format!("g/{i:014}")
}

fn put_key(i: usize) -> String {
    format!("p/{i:014}")
}

fn cas_key(task: usize) -> String {
    format!("c/{task:014}")
}

fn other_key(i: usize) -> String {
    format!("o/{i:014}")
}

fn listed_key(i: usize) -> String {
    format!("l/t/{i:012}")
}

const LIST_PREFIX: &str = "l/t";
const WATCH_KEY: &str = "w/k";

/// xorshift64*: the tasks' key choices, cheap and reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: usize) -> Self {
        Rng((seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

struct GetOp {
    kv: Arc<dyn Kv>,
    rng: Rng,
    keys: usize,
}

#[async_trait]
impl Op for GetOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let key = get_key(self.rng.below(self.keys));
        match self.kv.get(&key).await? {
            Some(_) => Ok(None),
            None => Err(BenchError::new(format!(
                "{}: {key} is missing",
                self.kv.label()
            ))),
        }
    }
}

struct PutOp {
    kv: Arc<dyn Kv>,
    rng: Rng,
    keys: usize,
    value: Bytes,
}

#[async_trait]
impl Op for PutOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let key = put_key(self.rng.below(self.keys));
        self.kv.put(&key, &self.value).await?;
        Ok(None)
    }
}

struct CasOp {
    kv: Arc<dyn Kv>,
    key: String,
    version: u64,
    value: Bytes,
}

#[async_trait]
impl Op for CasOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        self.version = self.kv.cas(&self.key, &self.value, self.version).await?;
        Ok(None)
    }
}

struct ListOp {
    kv: Arc<dyn Kv>,
}

#[async_trait]
impl Op for ListOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let n = self.kv.list(LIST_PREFIX).await?;
        if n != LISTED {
            return Err(BenchError::new(format!(
                "{}: list found {n} keys, not {LISTED}",
                self.kv.label()
            )));
        }
        Ok(None)
    }
}

struct LockOp {
    kv: Arc<dyn Kv>,
    name: String,
    task: usize,
}

#[async_trait]
impl Op for LockOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        self.kv.lock_release(&self.name, self.task).await?;
        Ok(None)
    }
}

struct MixedOp {
    kv: Arc<dyn Kv>,
    rng: Rng,
    keys: usize,
    value: Bytes,
}

#[async_trait]
impl Op for MixedOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let key = get_key(self.rng.below(self.keys));
        if self.rng.below(10) == 0 {
            self.kv.put(&key, &self.value).await?;
        } else if self.kv.get(&key).await?.is_none() {
            return Err(BenchError::new(format!(
                "{}: {key} is missing",
                self.kv.label()
            )));
        }
        Ok(None)
    }
}

/// The writer of `watch-latency`: puts, then waits for every watcher to
/// report the change; each watcher's delay after the put returned is one
/// sample.
struct WatchOp {
    kv: Arc<dyn Kv>,
    watchers: usize,
    acks: tokio::sync::mpsc::UnboundedReceiver<Result<Instant>>,
    value: Bytes,
    _tasks: Vec<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Op for WatchOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        while self.acks.try_recv().is_ok() {}
        self.kv.put(WATCH_KEY, &self.value).await?;
        let put_done = Instant::now();
        let mut samples = Vec::with_capacity(self.watchers);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while samples.len() < self.watchers {
            match tokio::time::timeout_at(deadline, self.acks.recv()).await {
                Ok(Some(Ok(at))) => samples.push(at.saturating_duration_since(put_done)),
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err(BenchError::new("the watchers stopped")),
                Err(_) => {
                    return Err(BenchError::new(format!(
                        "{}: {} of {} watchers saw no change within 10 s of a put",
                        self.kv.label(),
                        self.watchers - samples.len(),
                        self.watchers
                    )))
                }
            }
        }
        Ok(Some(samples))
    }
}

async fn watch_op(kv: &Arc<dyn Kv>, watchers: usize) -> Result<Ops> {
    let streams = kv.watchers(WATCH_KEY, watchers).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks = streams
        .into_iter()
        .map(|mut s| {
            let tx = tx.clone();
            AbortOnDrop(
                tokio::spawn(async move {
                    while let Some(r) = s.next().await {
                        let failed = r.is_err();
                        if tx.send(r.map(|()| Instant::now())).is_err() || failed {
                            break;
                        }
                    }
                })
                .abort_handle(),
            )
        })
        .collect();
    Ok(vec![Box::new(WatchOp {
        kv: kv.clone(),
        watchers,
        acks: rx,
        value: value(),
        _tasks: tasks,
    })])
}

async fn ops_for(
    workload: Workload,
    kv: &Arc<dyn Kv>,
    config: &BenchConfig,
    concurrency: usize,
    contended: bool,
) -> Result<Ops> {
    let mut ops: Ops = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let kv = kv.clone();
        let seed = task + 1;
        let op: Box<dyn Op> = match workload {
            Workload::Get => Box::new(GetOp {
                kv,
                rng: Rng::new(seed),
                keys: config.keys,
            }),
            Workload::Put => Box::new(PutOp {
                kv,
                rng: Rng::new(seed),
                keys: config.keys,
                value: value(),
            }),
            Workload::Cas => {
                let key = cas_key(task);
                let version = kv.version(&key).await?;
                Box::new(CasOp {
                    kv,
                    key,
                    version,
                    value: value(),
                })
            }
            Workload::List => Box::new(ListOp { kv }),
            Workload::Lock => Box::new(LockOp {
                kv,
                name: if contended {
                    "lc".to_owned()
                } else {
                    format!("lk/{task}")
                },
                task,
            }),
            Workload::Mixed => Box::new(MixedOp {
                kv,
                rng: Rng::new(seed),
                keys: config.keys,
                value: value(),
            }),
            Workload::WatchLatency | Workload::WatchResources | Workload::WatchUnderLoad => {
                return Err(BenchError::new("not a task workload"))
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

/// Runs `f` over `items` with up to 64 at a time; the first error wins.
async fn for_each<I, F, Fut>(items: I, f: F) -> Result<()>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> = stream::iter(items)
        .map(f)
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn setup(kv: &Arc<dyn Kv>, config: &BenchConfig) -> Result<()> {
    let v = value();
    let needs = |w: Workload| config.workloads.contains(&w);
    let max_conc = config.concurrency.iter().copied().max().unwrap_or(1);
    if needs(Workload::Get) || needs(Workload::Mixed) {
        for_each(0..config.keys, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.put(&get_key(i), &v).await }
        })
        .await?;
    }
    if needs(Workload::Put) {
        for_each(0..config.keys, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.put(&put_key(i), &v).await }
        })
        .await?;
    }
    if needs(Workload::Cas) {
        for_each(0..max_conc, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.cas_create(&cas_key(i), &v).await.map(|_| ()) }
        })
        .await?;
    }
    if needs(Workload::List) {
        for_each(0..LISTED, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.put_listed(&listed_key(i), &v).await }
        })
        .await?;
        for_each(0..config.list_keys, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.put_listed(&other_key(i), &v).await }
        })
        .await?;
    }
    if needs(Workload::WatchLatency) {
        kv.put(WATCH_KEY, &v).await?;
    }
    Ok(())
}

async fn cleanup(kv: &Arc<dyn Kv>, config: &BenchConfig) -> Result<()> {
    if config.workloads.contains(&Workload::List) {
        for_each(0..config.list_keys, |i| {
            let kv = kv.clone();
            async move { kv.delete_listed(&other_key(i)).await }
        })
        .await?;
    }
    kv.cleanup().await
}

// ---------------------------------------------------------------- targets

fn target_for(backend: Backend, workload: Workload, concurrency: usize) -> Option<(String, f64)> {
    use Workload::*;
    let min = |r: f64| Some((format!("≥ {r} of raw"), r));
    match (backend, workload) {
        (Backend::Memory, Get | Put | Cas | List | Mixed) if concurrency >= 64 => {
            Some(("faster than the baseline".to_owned(), 1.0))
        }
        (_, Get | List) => min(0.9),
        (Backend::Etcd | Backend::Zookeeper, Put | Cas) => min(0.9),
        (Backend::Redis, Put) => min(0.5),
        (Backend::Redis, Cas) => min(0.9),
        _ => None,
    }
}

fn check_row(backend: Backend, row: &mut Row) {
    if row.workload == Workload::WatchLatency {
        let extra = row.anykv.p99_us - row.raw.p99_us;
        row.target = Some(TargetCheck {
            target: "p99 ≤ raw p99 + 1 ms".into(),
            met: extra <= 1000.0,
        });
        return;
    }
    if row.unit != "tasks" {
        return;
    }
    if let Some((text, min)) = target_for(backend, row.workload, row.concurrency) {
        row.target = Some(TargetCheck {
            target: text,
            met: row.ratio >= min,
        });
    }
}

// ---------------------------------------------------------------- the run

fn say(config: &BenchConfig, msg: impl fmt::Display) {
    if config.progress {
        eprintln!("[anykv-bench] {msg}");
    }
}

/// The port the URL's first server listens on.
fn server_port(backend: Backend, url: &anykv::Url) -> Option<u16> {
    let default = match backend {
        Backend::Memory => return None,
        Backend::Etcd => 2379,
        Backend::Redis => 6379,
        Backend::Zookeeper => 2181,
    };
    Some(url.port().unwrap_or(default))
}

async fn raw_side(backend: Backend, url: &anykv::Url, ns: &str) -> Result<Arc<dyn Kv>> {
    let credentials = anykv::url_credentials(url).map_err(|e| BenchError::config(e.to_string()))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = server_port(backend, url).unwrap_or(0);
    let join = |root: &str| {
        if root.is_empty() {
            ns.to_owned()
        } else {
            format!("{root}/{ns}")
        }
    };
    Ok(match backend {
        Backend::Memory => Arc::new(MemoryBaseline::new(ns)),
        Backend::Etcd => {
            let root = anykv::url_root(url).map_err(|e| BenchError::config(e.to_string()))?;
            Arc::new(EtcdRaw::connect(&format!("{host}:{port}"), credentials, join(&root)).await?)
        }
        Backend::Redis => {
            let decoded: Vec<String> = url
                .path_segments()
                .map(|s| s.filter(|x| !x.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default();
            let db: i64 = match decoded.first() {
                Some(d) => d.parse().map_err(|_| {
                    BenchError::config(format!("redis:// URL: {d:?} is not a database number"))
                })?,
                None => 0,
            };
            let root = decoded.get(1..).map(|r| r.join("/")).unwrap_or_default();
            Arc::new(RedisRaw::connect(&host, port, db, credentials, format!("{ns}:{root}")).await?)
        }
        Backend::Zookeeper => {
            let root = anykv::url_root(url).map_err(|e| BenchError::config(e.to_string()))?;
            Arc::new(
                ZkRaw::connect(
                    &format!("{host}:{port}"),
                    credentials,
                    format!("/{}", join(&root)),
                )
                .await?,
            )
        }
    })
}

/// Runs the configured workloads and returns every figure.
///
/// Opens the store and the raw client, writes the keys the workloads
/// need, runs each row (both sides, alternating), measures
/// `watch-resources` last, and deletes everything it wrote, also after
/// a failure.
pub async fn run(config: &BenchConfig) -> Result<Report> {
    let backend = config.validate()?;
    let url = anykv::parse_url(&config.url).map_err(|e| BenchError::config(e.to_string()))?;
    let store = anykv::open(&config.url).await?;
    let pid = std::process::id();
    let anykv_prefix = format!("anykv-bench-{pid}");
    let anykv_side: Arc<dyn Kv> = Arc::new(AnykvKv::new(store.clone(), anykv_prefix.clone()));
    let raw = raw_side(backend, &url, &format!("anykv-bench-raw-{pid}")).await?;
    let mut report = Report {
        backend,
        url: anykv::redact_url(&config.url),
        raw_label: raw.label().to_owned(),
        duration_secs: config.duration.as_secs_f64(),
        warmup_secs: config.warmup.as_secs_f64(),
        rounds: config.rounds,
        list_keys: config.list_keys,
        setup_secs: 0.0,
        cleanup_secs: 0.0,
        rows: Vec::new(),
        resources: None,
        watch_load: None,
    };
    let result = measure(
        config,
        backend,
        &url,
        &anykv_side,
        &raw,
        &anykv_prefix,
        &mut report,
    )
    .await;
    let t = Instant::now();
    say(config, "cleaning up");
    let clean_a = cleanup(&anykv_side, config).await;
    let clean_r = cleanup(&raw, config).await;
    report.cleanup_secs = t.elapsed().as_secs_f64();
    let _ = store.close().await;
    result?;
    clean_a?;
    clean_r?;
    Ok(report)
}

async fn measure(
    config: &BenchConfig,
    backend: Backend,
    url: &anykv::Url,
    anykv_side: &Arc<dyn Kv>,
    raw: &Arc<dyn Kv>,
    prefix: &str,
    report: &mut Report,
) -> Result<()> {
    let t = Instant::now();
    say(
        config,
        format!("writing the keys of {} (anykv)", backend.name()),
    );
    setup(anykv_side, config).await?;
    say(
        config,
        format!("writing the keys of {} ({})", backend.name(), raw.label()),
    );
    setup(raw, config).await?;
    report.setup_secs = t.elapsed().as_secs_f64();
    say(config, format!("setup took {:.1} s", report.setup_secs));
    let labels = ("anykv", raw.label());
    for &workload in &config.workloads {
        let mut shapes: Vec<(String, usize, bool)> = Vec::new();
        match workload {
            Workload::WatchResources => {
                say(config, format!("{workload}: {} watches", config.watches));
                report.resources = Some(watch_resources(config, backend, url, prefix).await?);
                continue;
            }
            Workload::WatchUnderLoad => {
                say(config, format!("{workload}: {} writers", load::WRITERS));
                report.watch_load = Some(load::watch_under_load(config, prefix).await?);
                continue;
            }
            Workload::WatchLatency => {
                for &w in &config.watchers {
                    shapes.push(("watchers".into(), w, false));
                }
            }
            _ => {
                for &c in &config.concurrency {
                    shapes.push(("tasks".into(), c, false));
                }
                if workload == Workload::Lock {
                    shapes.push(("contenders".into(), config.contenders, true));
                }
            }
        }
        for (unit, n, contended) in shapes {
            say(config, format!("{workload} × {n} {unit}"));
            let (a_ops, r_ops) = if workload == Workload::WatchLatency {
                (watch_op(anykv_side, n).await?, watch_op(raw, n).await?)
            } else {
                (
                    ops_for(workload, anykv_side, config, n, contended).await?,
                    ops_for(workload, raw, config, n, contended).await?,
                )
            };
            let (a, r) = compare(config, a_ops, r_ops, labels).await?;
            let ratio = if r.ops_per_sec > 0.0 {
                a.ops_per_sec / r.ops_per_sec
            } else {
                0.0
            };
            let mut row = Row {
                workload,
                unit,
                concurrency: n,
                anykv: a,
                raw: r,
                ratio,
                target: None,
            };
            check_row(backend, &mut row);
            say(
                config,
                format!(
                    "  anykv {:.0} ops/s, raw {:.0} ops/s, ratio {:.2}",
                    row.anykv.ops_per_sec, row.raw.ops_per_sec, row.ratio
                ),
            );
            report.rows.push(row);
        }
    }
    Ok(())
}

async fn watch_resources(
    config: &BenchConfig,
    backend: Backend,
    url: &anykv::Url,
    prefix: &str,
) -> Result<Resources> {
    let port = server_port(backend, url);
    let conns = || port.and_then(sys::tcp_connections_to);
    let c0 = conns();
    let store = anykv::open(&config.url).await?;
    let c1 = conns();
    let rss0 = sys::rss_bytes();
    let t = Instant::now();
    let streams: Vec<Result<kv::ChangeStream>> = stream::iter(0..config.watches)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/r/{i:08}");
            async move { kv::anykv_watch(store, &key).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let open_seconds = t.elapsed().as_secs_f64();
    let streams: Vec<kv::ChangeStream> = streams.into_iter().collect::<Result<_>>()?;
    // Let background work settle before sampling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = sys::rss_bytes();
    let c2 = conns();
    let st = store.stats();
    drop(streams);
    let _ = store.close().await;
    let watch_connections = match (c1, c2) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let rss_delta_bytes = match (rss0, rss1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let met = watch_connections.unwrap_or(0) <= 2
        && rss_delta_bytes.is_some_and(|b| b < 50 * 1024 * 1024);
    Ok(Resources {
        watches: config.watches,
        store_connections: match (c0, c1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        watch_connections,
        rss_delta_bytes,
        stats_watches: st.watches,
        stats_connections: st.connections,
        open_seconds,
        target: TargetCheck {
            target: "bounded connections, < 50 MiB".into(),
            met,
        },
    })
}

// ---------------------------------------------------------------- output

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn lat(s: &SideStats) -> String {
    let f = |x: f64| {
        if x >= 100.0 {
            thousands(x)
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} / {} / {}", f(s.p50_us), f(s.p99_us), f(s.p999_us))
}

impl Report {
    /// The report as Markdown: a heading, the table, and the resource
    /// figures.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "### {} — anykv vs {}\n\n`{}`; {:.1} s measured per row and side over {} alternating rounds \
             ({:.1} s warm-up each); `list` beside {} other keys; setup {:.1} s, cleanup {:.1} s.\n\n",
            self.backend.name(),
            self.raw_label,
            self.url,
            self.duration_secs,
            self.rounds,
            self.warmup_secs,
            thousands(self.list_keys as f64),
            self.setup_secs,
            self.cleanup_secs,
        ));
        if !self.rows.is_empty() {
            out.push_str(
                "| workload | concurrency | anykv ops/s | raw ops/s | anykv / raw | \
                 anykv p50 / p99 / p999 µs | raw p50 / p99 / p999 µs | target |\n\
                 |---|---|--:|--:|--:|--:|--:|---|\n",
            );
            for r in &self.rows {
                let target = match &r.target {
                    Some(t) => format!("{} {}", if t.met { "✓" } else { "✗" }, t.target),
                    None => "—".into(),
                };
                out.push_str(&format!(
                    "| {} | {} {} | {} | {} | {:.2} | {} | {} | {} |\n",
                    r.workload,
                    r.concurrency,
                    r.unit,
                    thousands(r.anykv.ops_per_sec),
                    thousands(r.raw.ops_per_sec),
                    r.ratio,
                    lat(&r.anykv),
                    lat(&r.raw),
                    target
                ));
            }
            out.push('\n');
        }
        if let Some(l) = &self.watch_load {
            out.push_str(&format!(
                "watch under write load ({} writers, {:.1} s): {} writes/s, the watch delivered \
                 {} events/s ({:.2} events per write in all, caught up {:.2} s after the \
                 writes stopped); Synced of a watch opened during the writes: p50 {:.1} ms, \
                 max {:.1} ms\n",
                l.writers,
                l.seconds,
                thousands(l.writes_per_sec),
                thousands(l.events_per_sec),
                l.delivered_per_write,
                l.drain_seconds,
                l.synced_p50_ms,
                l.synced_max_ms,
            ));
        }
        if let Some(res) = &self.resources {
            let opt = |x: Option<usize>| x.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into());
            out.push_str(&format!(
                "{} watches on one store: client memory +{} MiB, TCP connections to the server: \
                 {} for the store, +{} for the watches (the store's stats: {} watches, {} connections); \
                 opened in {:.1} s. {} {}\n",
                thousands(res.watches as f64),
                res.rss_delta_bytes
                    .map(|b| format!("{:.1}", b as f64 / 1048576.0))
                    .unwrap_or_else(|| "n/a".into()),
                opt(res.store_connections),
                opt(res.watch_connections),
                res.stats_watches,
                res.stats_connections,
                res.open_seconds,
                if res.target.met { "✓" } else { "✗" },
                res.target.target,
            ));
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::new(format!("json: {e}")))
    }
}
