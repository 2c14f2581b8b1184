//! The run: rounds of each workload in which anykv, the raw client and
//! (on etcd and Redis) OpenDAL take turns, timing them, and collecting the
//! rows of the report.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;

use crate::kv::{AnykvKv, EtcdRaw, Kv, MemoryBaseline, OpenDal, RedisRaw, ZkRaw};
use crate::recipes;
use crate::report::{check_row, check_zookeeper_watch};
use crate::workloads::{cleanup, ops_for, setup, watch_op, Ops};
use crate::{kv, load, sys};
use crate::{
    Backend, BenchConfig, BenchError, Report, Resources, Result, Row, SideStats, TargetCheck,
    Workload,
};

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

/// Runs every side of one row over the configured rounds, one after
/// another, rotating which goes first: with two sides 0 1, 1 0, ...; with
/// three 0 1 2, 1 2 0, 2 0 1, ...
async fn compare(config: &BenchConfig, sides: Vec<(Ops, &str)>) -> Result<Vec<SideStats>> {
    let n = sides.len();
    let measure = config.duration / config.rounds as u32;
    let mut acc = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for (ops, label) in sides {
        acc.push((Some(ops), 0u64, Duration::ZERO, histogram()));
        labels.push(label);
    }
    for round in 0..config.rounds {
        for turn in 0..n {
            let side = &mut acc[(round + turn) % n];
            let ops = side.0.take().unwrap_or_default();
            let (ops, m) = phase(ops, config.warmup, measure).await?;
            side.0 = Some(ops);
            side.1 += m.ops;
            side.2 += m.elapsed;
            let _ = side.3.add(&m.hist);
        }
    }
    Ok(acc
        .iter()
        .zip(labels)
        .map(|(a, label)| stats(label, a.1, a.2, &a.3))
        .collect())
}

/// anykv's throughput divided by another side's (0 when that side did
/// nothing).
fn ratio(anykv: &SideStats, other: &SideStats) -> f64 {
    if other.ops_per_sec > 0.0 {
        anykv.ops_per_sec / other.ops_per_sec
    } else {
        0.0
    }
}

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

/// The database number and the root of a `redis://host:port/db/root` URL.
fn redis_db_root(url: &anykv::Url) -> Result<(i64, String)> {
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
    Ok((
        db,
        decoded.get(1..).map(|r| r.join("/")).unwrap_or_default(),
    ))
}

/// `root/ns`, or `ns` for an empty root.
fn under(root: &str, ns: &str) -> String {
    if root.is_empty() {
        ns.to_owned()
    } else {
        format!("{root}/{ns}")
    }
}

async fn raw_side(backend: Backend, url: &anykv::Url, ns: &str) -> Result<Arc<dyn Kv>> {
    let credentials = anykv::url_credentials(url).map_err(|e| BenchError::config(e.to_string()))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = server_port(backend, url).unwrap_or(0);
    let join = |root: &str| under(root, ns);
    Ok(match backend {
        Backend::Memory => Arc::new(MemoryBaseline::new(ns)),
        Backend::Etcd => {
            let root = anykv::url_root(url).map_err(|e| BenchError::config(e.to_string()))?;
            Arc::new(EtcdRaw::connect(&format!("{host}:{port}"), credentials, join(&root)).await?)
        }
        Backend::Redis => {
            let (db, root) = redis_db_root(url)?;
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

/// The OpenDAL side on etcd and Redis (when configured), its root at
/// `{root}/{ns}`; none on the other backends.
async fn opendal_side(
    config: &BenchConfig,
    backend: Backend,
    url: &anykv::Url,
    ns: &str,
) -> Result<Option<Arc<dyn Kv>>> {
    if !config.opendal {
        return Ok(None);
    }
    let credentials = anykv::url_credentials(url).map_err(|e| BenchError::config(e.to_string()))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = server_port(backend, url).unwrap_or(0);
    Ok(match backend {
        Backend::Etcd => {
            let root = anykv::url_root(url).map_err(|e| BenchError::config(e.to_string()))?;
            let prefix = under(&root, ns);
            Some(Arc::new(
                OpenDal::etcd(&format!("{host}:{port}"), credentials, prefix).await?,
            ))
        }
        Backend::Redis => {
            let (db, root) = redis_db_root(url)?;
            // One pooled connection per task at the largest concurrency (at
            // least OpenDAL's default of 10), so the pool does not cap the
            // requests in flight (its etcd pool is 64).
            let pool = config
                .concurrency
                .iter()
                .copied()
                .max()
                .unwrap_or(1)
                .max(10);
            let prefix = under(&root, ns);
            Some(Arc::new(
                OpenDal::redis(&host, port, db, credentials, prefix, pool).await?,
            ))
        }
        Backend::Memory | Backend::Zookeeper => None,
    })
}

/// Runs the configured workloads and returns every figure.
///
/// Opens the store, the raw client and (on etcd and Redis) OpenDAL, writes
/// the keys the workloads need, runs each row (the sides taking turns),
/// measures `watch-resources` last, and deletes everything it wrote, also
/// after a failure.
pub async fn run(config: &BenchConfig) -> Result<Report> {
    let backend = config.validate()?;
    let mut config = config.clone();
    if backend != Backend::Redis {
        // Only the raw Redis side has a minimum-work script.
        config
            .workloads
            .retain(|w| !matches!(w, Workload::PutMin | Workload::CasMin));
    }
    let config = &config;
    let url = anykv::parse_url(&config.url).map_err(|e| BenchError::config(e.to_string()))?;
    let store = anykv::open(&config.url).await?;
    let pid = std::process::id();
    let anykv_prefix = format!("anykv-bench-{pid}");
    let anykv_side: Arc<dyn Kv> = Arc::new(AnykvKv::new(store.clone(), anykv_prefix.clone()));
    let raw = raw_side(backend, &url, &format!("anykv-bench-raw-{pid}")).await?;
    let opendal =
        opendal_side(config, backend, &url, &format!("anykv-bench-opendal-{pid}")).await?;
    let mut report = Report {
        backend,
        url: anykv::redact_url(&config.url),
        raw_label: raw.label().to_owned(),
        opendal_label: opendal.as_ref().map(|o| o.label().to_owned()),
        duration_secs: config.duration.as_secs_f64(),
        warmup_secs: config.warmup.as_secs_f64(),
        rounds: config.rounds,
        list_keys: config.list_keys,
        setup_secs: 0.0,
        cleanup_secs: 0.0,
        rows: Vec::new(),
        resources: None,
        watch_load: None,
        failover: None,
        discovery: None,
    };
    let sides = Sides {
        anykv: anykv_side,
        raw,
        opendal,
    };
    let result = measure(config, backend, &url, &sides, &anykv_prefix, &mut report).await;
    if backend == Backend::Zookeeper {
        check_zookeeper_watch(&mut report.rows);
    }
    let t = Instant::now();
    say(config, "cleaning up");
    let clean_a = cleanup(&sides.anykv, config).await;
    let clean_r = cleanup(&sides.raw, config).await;
    let clean_o = match &sides.opendal {
        Some(o) => cleanup(o, config).await,
        None => Ok(()),
    };
    report.cleanup_secs = t.elapsed().as_secs_f64();
    let _ = store.close().await;
    result?;
    clean_a?;
    clean_r?;
    clean_o?;
    Ok(report)
}

/// The sides of a run: anykv, the raw client, and OpenDAL where it runs.
struct Sides {
    anykv: Arc<dyn Kv>,
    raw: Arc<dyn Kv>,
    opendal: Option<Arc<dyn Kv>>,
}

async fn measure(
    config: &BenchConfig,
    backend: Backend,
    url: &anykv::Url,
    sides: &Sides,
    prefix: &str,
    report: &mut Report,
) -> Result<()> {
    let (anykv_side, raw) = (&sides.anykv, &sides.raw);
    let t = Instant::now();
    for side in [Some(anykv_side), Some(raw), sides.opendal.as_ref()]
        .into_iter()
        .flatten()
    {
        say(
            config,
            format!("writing the keys of {} ({})", backend.name(), side.label()),
        );
        setup(side, config).await?;
    }
    report.setup_secs = t.elapsed().as_secs_f64();
    say(config, format!("setup took {:.1} s", report.setup_secs));
    for &workload in &config.workloads {
        let mut shapes: Vec<(String, usize, bool)> = Vec::new();
        match workload {
            Workload::WatchResources => {
                say(config, format!("{workload}: {} watches", config.watches));
                report.resources = Some(watch_resources(config, backend, url, prefix).await?);
                continue;
            }
            Workload::ElectionFailover => {
                say(
                    config,
                    format!("{workload}: {} rounds", config.failover_rounds),
                );
                let f = recipes::election_failover(config).await?;
                say(
                    config,
                    format!("{workload}: p50 {:.1} ms, max {:.1} ms", f.p50_ms, f.max_ms),
                );
                report.failover = Some(f);
                continue;
            }
            Workload::Discovery => {
                say(config, format!("{workload}"));
                report.discovery = Some(recipes::discovery(config).await?);
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
            let opendal = sides.opendal.as_ref().filter(|o| o.supports(workload));
            let mut turns = Vec::with_capacity(3);
            for side in [Some(anykv_side), Some(raw), opendal].into_iter().flatten() {
                let ops = if workload == Workload::WatchLatency {
                    watch_op(side, n).await?
                } else {
                    ops_for(workload, side, config, n, contended).await?
                };
                turns.push((ops, side.label()));
            }
            let mut stats = compare(config, turns).await?.into_iter();
            let (Some(a), Some(r)) = (stats.next(), stats.next()) else {
                return Err(BenchError::new("a side of the row was not measured"));
            };
            let o = stats.next();
            let mut row = Row {
                workload,
                unit,
                concurrency: n,
                ratio: ratio(&a, &r),
                opendal_ratio: o.as_ref().map(|o| ratio(&a, o)),
                anykv: a,
                raw: r,
                opendal: o,
                target: None,
            };
            check_row(backend, &mut row);
            let vs_opendal = match (&row.opendal, row.opendal_ratio) {
                (Some(o), Some(q)) => format!(", opendal {:.0} ops/s, ratio {q:.2}", o.ops_per_sec),
                _ => String::new(),
            };
            say(
                config,
                format!(
                    "  anykv {:.0} ops/s, raw {:.0} ops/s, ratio {:.2}{vs_opendal}",
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
