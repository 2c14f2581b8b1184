//! anykv-redb against raw redb (and OpenDAL's redb service, with the
//! `bench-opendal` feature) on get, put, list and compare-and-swap, one
//! call at a time; the figures in `PERF.md` come from it.
//!
//! ```text
//! cargo run --release -p anykv-redb --example bench [-- DIR [SECONDS]]
//! cargo run --release -p anykv-redb --features bench-opendal --example bench
//! ```
//!
//! `DIR` is where the files go (default: the system's temporary
//! directory; the disk under it decides what a synced commit costs),
//! `SECONDS` how long each measurement runs (default 3). Values are 100
//! bytes; get reads 1,000 keys in turn, put rewrites them, list reads a
//! tree of 100 keys, CAS is a chain of compare-and-swaps on one key.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{Bytes, PutOptions, Store};
use anykv_redb::{Durability, RedbConfig, RedbStore};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("bench");
/// The raw side's table, open in a write transaction.
type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

const KEYS: usize = 1000;
/// Rounds each comparison is split into.
const ROUNDS: u32 = 3;
const TREE: usize = 100;

/// Latencies of one measurement, in nanoseconds.
struct Sample(Vec<u64>);

impl Sample {
    fn row(mut self, side: &str, op: &str) -> String {
        self.0.sort_unstable();
        let n = self.0.len().max(1);
        let total: u64 = self.0.iter().sum();
        let at = |q: f64| self.0.get(((n as f64 * q) as usize).min(n - 1)).copied();
        let us = |ns: Option<u64>| ns.map_or(0.0, |ns| ns as f64 / 1000.0);
        format!(
            "| {side} | {op} | {:.0} | {:.1} | {:.1} | {:.1} |",
            self.0.len() as f64 / (total as f64 / 1e9),
            total as f64 / n as f64 / 1000.0,
            us(at(0.5)),
            us(at(0.99)),
        )
    }
}

/// Runs the async `op` for `secs`, one call at a time.
async fn measure_async<F, Fut>(secs: Duration, mut op: F) -> Sample
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future,
{
    let mut lat = Vec::new();
    let end = Instant::now() + secs;
    let mut i = 0;
    while Instant::now() < end {
        let t = Instant::now();
        op(i).await;
        lat.push(t.elapsed().as_nanos() as u64);
        i += 1;
    }
    Sample(lat)
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; 100])
}

fn key(i: usize) -> String {
    format!("bench/get/{:04}", i % KEYS)
}

/// One thing measured: raw redb (one transaction per call, as
/// anykv-redb does, run inline), anykv-redb through the `Store` trait, or
/// OpenDAL's redb service (get and put: it has no list, no CAS).
enum Side {
    Raw(redb::Database, redb::Durability, AtomicU64),
    Anykv(Arc<dyn Store>, Durability, AtomicU64),
    #[cfg(feature = "bench-opendal")]
    OpenDal(opendal::Operator),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    List,
    Cas,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::List => "list 100",
            Op::Cas => "CAS",
        }
    }
}

fn raw_write(db: &redb::Database, durability: redb::Durability, f: &dyn Fn(&mut Table)) {
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(durability).unwrap();
    {
        let mut t = txn.open_table(TABLE).unwrap();
        f(&mut t);
    }
    txn.commit().unwrap();
}

fn raw_get(db: &redb::Database, i: usize) {
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(TABLE).unwrap();
    let v = t.get(key(i).as_str()).unwrap().map(|v| v.value().to_vec());
    assert!(v.is_some());
}

impl Side {
    fn label(&self) -> &'static str {
        match self {
            Side::Raw(_, redb::Durability::Immediate, _) => "redb (Immediate)",
            Side::Raw(..) => "redb (None)",
            Side::Anykv(_, Durability::Immediate, _) => "anykv-redb (Immediate)",
            Side::Anykv(..) => "anykv-redb (Eventual)",
            #[cfg(feature = "bench-opendal")]
            Side::OpenDal(_) => "OpenDAL redb (Immediate)",
        }
    }

    /// Writes the keys every op reads.
    async fn fill(&self) {
        match self {
            Side::Raw(db, d, _) => raw_write(db, *d, &|t| {
                for i in 0..KEYS {
                    t.insert(key(i).as_str(), &value()[..]).unwrap();
                }
                for i in 0..TREE {
                    t.insert(format!("bench/list/{i:03}").as_str(), &value()[..])
                        .unwrap();
                }
                t.insert("bench/cas", &0u64.to_le_bytes()[..]).unwrap();
            }),
            Side::Anykv(s, _, rev) => {
                for i in 0..KEYS {
                    s.put(&key(i), value(), PutOptions::new()).await.unwrap();
                }
                for i in 0..TREE {
                    s.put(&format!("bench/list/{i:03}"), value(), PutOptions::new())
                        .await
                        .unwrap();
                }
                let r = s
                    .put("bench/cas", value(), PutOptions::new())
                    .await
                    .unwrap();
                rev.store(r, Ordering::SeqCst);
            }
            #[cfg(feature = "bench-opendal")]
            Side::OpenDal(op) => {
                for i in 0..KEYS {
                    op.write(&key(i), value()).await.unwrap();
                }
            }
        }
    }

    /// Whether this side can do `op`.
    fn can(&self, op: Op) -> bool {
        match self {
            #[cfg(feature = "bench-opendal")]
            Side::OpenDal(_) => matches!(op, Op::Get | Op::Put),
            _ => {
                let _ = op;
                true
            }
        }
    }

    /// Runs `op` once.
    async fn run(&self, op: Op, i: usize) {
        match (self, op) {
            (Side::Raw(db, ..), Op::Get) => raw_get(db, i),
            (Side::Raw(db, d, _), Op::Put) => raw_write(db, *d, &|t| {
                t.insert(key(i).as_str(), &value()[..]).unwrap();
            }),
            (Side::Raw(db, ..), Op::List) => {
                let txn = db.begin_read().unwrap();
                let t = txn.open_table(TABLE).unwrap();
                let pairs: Vec<(String, Vec<u8>)> = t
                    .range::<&str>("bench/list/".."bench/list0")
                    .unwrap()
                    .map(|r| {
                        let (k, v) = r.unwrap();
                        (k.value().to_owned(), v.value().to_vec())
                    })
                    .collect();
                assert_eq!(pairs.len(), TREE);
            }
            (Side::Raw(db, d, version), Op::Cas) => {
                let expected = version.load(Ordering::SeqCst);
                raw_write(db, *d, &|t| {
                    let seen = {
                        let v = t.get("bench/cas").unwrap().unwrap();
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&v.value()[..8]);
                        u64::from_le_bytes(b)
                    };
                    assert_eq!(seen, expected);
                    t.insert("bench/cas", &(seen + 1).to_le_bytes()[..])
                        .unwrap();
                });
                version.store(expected + 1, Ordering::SeqCst);
            }
            (Side::Anykv(s, ..), Op::Get) => assert!(s.get(&key(i)).await.unwrap().is_some()),
            (Side::Anykv(s, ..), Op::Put) => {
                s.put(&key(i), value(), PutOptions::new()).await.unwrap();
            }
            (Side::Anykv(s, ..), Op::List) => {
                assert_eq!(s.list("bench/list").await.unwrap().len(), TREE);
            }
            (Side::Anykv(s, _, rev), Op::Cas) => {
                let expected = rev.load(Ordering::SeqCst);
                let r = s
                    .atomic_put("bench/cas", value(), Some(expected), PutOptions::new())
                    .await
                    .unwrap();
                rev.store(r, Ordering::SeqCst);
            }
            #[cfg(feature = "bench-opendal")]
            (Side::OpenDal(op), Op::Get) => {
                op.read(&key(i)).await.unwrap();
            }
            #[cfg(feature = "bench-opendal")]
            (Side::OpenDal(op), _) => {
                op.write(&key(i), value()).await.unwrap();
            }
        }
    }
}

/// Every side on every op, each measurement split into `ROUNDS` rounds
/// that alternate the sides: the disk's sync time drifts with whatever
/// else the machine does.
async fn compare(dir: &Path, secs: Duration, rows: &mut Vec<String>) {
    let store = |name: &str, d: Durability| {
        let config = RedbConfig::new(dir.join(name)).with_durability(d);
        async move { RedbStore::open(config).await.unwrap().into_dyn() }
    };
    let raw = |name: &str| redb::Database::create(dir.join(name)).unwrap();
    let immediate = Durability::Immediate;
    #[allow(unused_mut)]
    let mut sides = vec![
        Side::Raw(
            raw("raw.redb"),
            redb::Durability::Immediate,
            AtomicU64::new(0),
        ),
        Side::Anykv(
            store("anykv.redb", immediate).await,
            immediate,
            AtomicU64::new(0),
        ),
    ];
    #[cfg(feature = "bench-opendal")]
    sides.push(Side::OpenDal({
        let path = dir.join("opendal.redb");
        let builder = opendal::services::Redb::default()
            .datadir(path.to_str().unwrap())
            .table("bench");
        opendal::Operator::new(builder).unwrap()
    }));
    let eventual = Durability::Eventual;
    sides.push(Side::Raw(
        raw("raw-none.redb"),
        redb::Durability::None,
        AtomicU64::new(0),
    ));
    sides.push(Side::Anykv(
        store("anykv-eventual.redb", eventual).await,
        eventual,
        AtomicU64::new(0),
    ));
    for side in &sides {
        side.fill().await;
    }
    let slice = secs / ROUNDS;
    for op in [Op::Get, Op::Put, Op::List, Op::Cas] {
        let mut samples: Vec<Vec<u64>> = vec![Vec::new(); sides.len()];
        for _ in 0..ROUNDS {
            for (side, lat) in sides.iter().zip(samples.iter_mut()) {
                if side.can(op) {
                    lat.extend(measure_async(slice, |i| side.run(op, i)).await.0);
                }
            }
        }
        for (side, lat) in sides.iter().zip(samples) {
            if !lat.is_empty() {
                rows.push(Sample(lat).row(side.label(), op.name()));
            }
        }
    }
    for side in sides {
        if let Side::Anykv(s, ..) = side {
            s.close().await.unwrap();
        }
    }
}

/// What handing a read to another thread costs: a raw redb get run
/// inline (on the async thread: what anykv-redb must not do), through
/// `spawn_blocking`, and through one dedicated thread fed by a channel
/// (what anykv-redb does). Three rounds, alternating, as the machine's
/// load drifts.
async fn handoff(path: &Path, secs: Duration, rows: &mut Vec<String>) {
    let db = Arc::new(redb::Database::create(path).unwrap());
    {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(TABLE).unwrap();
            for i in 0..KEYS {
                t.insert(key(i).as_str(), &value()[..]).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let get = |db: &redb::Database, i: usize| {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(TABLE).unwrap();
        let v = t.get(key(i).as_str()).unwrap().map(|v| v.value().to_vec());
        assert!(v.is_some());
    };
    type Job = Box<dyn FnOnce() + Send>;
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let worker = std::thread::spawn(move || {
        for job in rx {
            job();
        }
    });
    let secs = secs / ROUNDS;
    for round in 1..=ROUNDS {
        let inline = measure_async(secs, |i| {
            let db = db.clone();
            async move { get(&db, i) }
        })
        .await;
        rows.push(inline.row(&format!("redb get inline, round {round}"), "get"));
        let pool = measure_async(secs, |i| {
            let db = db.clone();
            async move {
                tokio::task::spawn_blocking(move || get(&db, i))
                    .await
                    .unwrap();
            }
        })
        .await;
        rows.push(pool.row(&format!("redb get in spawn_blocking, round {round}"), "get"));
        let dedicated = measure_async(secs, |i| {
            let (db, tx) = (db.clone(), tx.clone());
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send(Box::new(move || {
                    get(&db, i);
                    let _ = reply.send(());
                }))
                .unwrap();
                answer.await.unwrap();
            }
        })
        .await;
        rows.push(dedicated.row(
            &format!("redb get on a dedicated thread, round {round}"),
            "get",
        ));
        let noop = measure_async(secs, |_| {
            let tx = tx.clone();
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send(Box::new(move || {
                    let _ = reply.send(());
                }))
                .unwrap();
                answer.await.unwrap();
            }
        })
        .await;
        rows.push(noop.row(&format!("no-op on a dedicated thread, round {round}"), "-"));
    }
    drop(tx);
    worker.join().unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let secs = Duration::from_secs_f64(args.next().map_or(3.0, |s| s.parse().unwrap()));
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = vec![
        "| side | op | ops/s | mean µs | p50 µs | p99 µs |".to_owned(),
        "|---|---|---:|---:|---:|---:|".to_owned(),
    ];
    rt.block_on(compare(dir.path(), secs, &mut rows));
    rt.block_on(handoff(&dir.path().join("handoff.redb"), secs, &mut rows));
    println!("files in {}, {secs:?} per measurement\n", base.display());
    for r in rows {
        println!("{r}");
    }
}
