//! The workloads: the keys and values they use, one operation per workload
//! (each task repeats its own), and the setup and cleanup of the keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::Bytes;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use crate::kv::Kv;
use crate::{BenchConfig, BenchError, Result, Workload};

/// One operation of a workload, repeated by one task.
#[async_trait]
pub(crate) trait Op: Send {
    /// Runs once. `None`: the runner times the call; `Some`: the
    /// latencies the operation measured itself.
    async fn run(&mut self) -> Result<Option<Vec<Duration>>>;
}

pub(crate) type Ops = Vec<Box<dyn Op>>;

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

/// The two keys of task `task`'s transactions.
fn txn_keys(task: usize) -> (String, String) {
    (format!("txn/{task}/a"), format!("txn/{task}/b"))
}

fn cas_key(task: usize) -> String {
    format!("c/{task:014}")
}

fn cas_min_key(task: usize) -> String {
    format!("cm/{task:014}")
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
    /// `put-min` rather than `put`.
    min: bool,
}

#[async_trait]
impl Op for PutOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let key = put_key(self.rng.below(self.keys));
        if self.min {
            self.kv.put_min(&key, &self.value).await?;
        } else {
            self.kv.put(&key, &self.value).await?;
        }
        Ok(None)
    }
}

struct CasOp {
    kv: Arc<dyn Kv>,
    key: String,
    version: u64,
    value: Bytes,
    /// `cas-min` rather than `cas`.
    min: bool,
}

#[async_trait]
impl Op for CasOp {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        self.version = if self.min {
            self.kv
                .cas_min(&self.key, &self.value, self.version)
                .await?
        } else {
            self.kv.cas(&self.key, &self.value, self.version).await?
        };
        Ok(None)
    }
}

struct TxnOp2 {
    kv: Arc<dyn Kv>,
    keys: (String, String),
    versions: (u64, u64),
    value: Bytes,
}

#[async_trait]
impl Op for TxnOp2 {
    async fn run(&mut self) -> Result<Option<Vec<Duration>>> {
        let (a, b) = (&self.keys.0, &self.keys.1);
        self.versions = self.kv.txn2(a, b, &self.value, self.versions).await?;
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

pub(crate) async fn watch_op(kv: &Arc<dyn Kv>, watchers: usize) -> Result<Ops> {
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

pub(crate) async fn ops_for(
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
            Workload::Put | Workload::PutMin => Box::new(PutOp {
                kv,
                rng: Rng::new(seed),
                keys: config.keys,
                value: value(),
                min: workload == Workload::PutMin,
            }),
            Workload::Cas | Workload::CasMin => {
                let min = workload == Workload::CasMin;
                let key = if min {
                    cas_min_key(task)
                } else {
                    cas_key(task)
                };
                // The versions are set up again for each row.
                let version = if min {
                    kv.cas_min_create(&key, &value()).await?
                } else {
                    kv.version(&key).await?
                };
                Box::new(CasOp {
                    kv,
                    key,
                    version,
                    value: value(),
                    min,
                })
            }
            Workload::Txn => {
                let (a, b) = txn_keys(task);
                let versions = (kv.version(&a).await?, kv.version(&b).await?);
                Box::new(TxnOp2 {
                    kv,
                    keys: (a, b),
                    versions,
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
            Workload::WatchLatency
            | Workload::WatchResources
            | Workload::WatchUnderLoad
            | Workload::ElectionFailover
            | Workload::Discovery => return Err(BenchError::new("not a task workload")),
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

pub(crate) async fn setup(kv: &Arc<dyn Kv>, config: &BenchConfig) -> Result<()> {
    let v = value();
    let needs = |w: Workload| config.workloads.contains(&w) && kv.supports(w);
    let max_conc = config.concurrency.iter().copied().max().unwrap_or(1);
    if needs(Workload::Get) || needs(Workload::Mixed) {
        for_each(0..config.keys, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move { kv.put(&get_key(i), &v).await }
        })
        .await?;
    }
    if needs(Workload::Put) || needs(Workload::PutMin) {
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
    if needs(Workload::Txn) {
        for_each(0..max_conc, |i| {
            let (kv, v) = (kv.clone(), v.clone());
            async move {
                let (a, b) = txn_keys(i);
                kv.cas_create(&a, &v).await?;
                kv.cas_create(&b, &v).await.map(|_| ())
            }
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

pub(crate) async fn cleanup(kv: &Arc<dyn Kv>, config: &BenchConfig) -> Result<()> {
    if config.workloads.contains(&Workload::List) && kv.supports(Workload::List) {
        for_each(0..config.list_keys, |i| {
            let kv = kv.clone();
            async move { kv.delete_listed(&other_key(i)).await }
        })
        .await?;
    }
    kv.cleanup().await
}
