//! `anykv-bench`: measures anykv against the raw client of the backend a
//! URL names (and, on etcd and Redis, OpenDAL's service), prints Markdown
//! tables, and can write every figure as JSON.
//!
//! ```text
//! cargo run --release -p anykv-bench -- --url etcd://127.0.0.1:2379/bench \
//!     [--workload get,put] [--concurrency 1,64] [--duration 5] [--no-opendal] \
//!     [--json out.json]
//! ```
//!
//! Exit status: 0 done, 1 the run failed, 2 a bad command line or URL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anykv_bench::{run, BenchConfig, BenchError, Workload};
use clap::Parser;

/// Measures anykv against the raw etcd, Redis or ZooKeeper client (or a
/// BTreeMap behind a RwLock for memory://), and on etcd and Redis against
/// OpenDAL's service too, side by side on one server.
#[derive(Parser, Debug)]
#[command(name = "anykv-bench", version)]
struct Args {
    /// The store: memory://, etcd://host:port/root, redis://host:port/db/root, zk://host:port/chroot.
    #[arg(long, env = "ANYKV_URL", default_value = "memory://")]
    url: String,

    /// Workloads (repeat or comma-separate): get, put, put-min, cas, cas-min,
    /// txn, list, watch-latency, lock, mixed, election-failover, discovery,
    /// watch-under-load, watch-resources (put-min and cas-min on Redis only).
    /// Default: all.
    #[arg(long = "workload", value_delimiter = ',')]
    workloads: Vec<String>,

    /// Concurrencies (tasks sharing one store or client). Default: 1 and 64.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,

    /// Measured seconds per row and side (split over the rounds).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Warm-up seconds before each round of each side.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,

    /// How many times the sides (anykv, the raw client, OpenDAL) take turns per row.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Keys of the get, put and mixed workloads.
    #[arg(long, default_value_t = 1000)]
    keys: usize,

    /// Other keys in the root beside the 10 that `list` reads.
    #[arg(long, default_value_t = 100_000)]
    list_keys: usize,

    /// Watcher counts of watch-latency.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1000])]
    watchers: Vec<usize>,

    /// Tasks sharing one lock in the contended lock row.
    #[arg(long, default_value_t = 8)]
    contenders: usize,

    /// Watches opened by watch-resources.
    #[arg(long, default_value_t = 10_000)]
    watches: usize,

    /// Rounds of election-failover.
    #[arg(long, default_value_t = 10)]
    failover_rounds: usize,

    /// The candidates' lease TTL in election-failover, in seconds.
    #[arg(long, default_value_t = 10.0)]
    election_ttl: f64,

    /// No OpenDAL side on etcd and Redis (by default OpenDAL's service is
    /// a second reference on get, put and, on etcd, list).
    #[arg(long)]
    no_opendal: bool,

    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// No progress messages on standard error.
    #[arg(long)]
    quiet: bool,
}

fn seconds(name: &str, s: f64) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| BenchError::config(format!("--{name} takes a number of seconds, not {s}")))
}

fn config(args: &Args) -> Result<BenchConfig, BenchError> {
    let mut c = BenchConfig::new(args.url.clone());
    if !args.workloads.is_empty() {
        c.workloads = args
            .workloads
            .iter()
            .map(|w| w.trim().parse::<Workload>())
            .collect::<Result<_, _>>()?;
    }
    if !args.concurrency.is_empty() {
        c.concurrency = args.concurrency.clone();
    }
    c.duration = seconds("duration", args.duration)?;
    c.warmup = seconds("warmup", args.warmup)?;
    c.rounds = args.rounds;
    c.keys = args.keys;
    c.list_keys = args.list_keys;
    c.watchers = args.watchers.clone();
    c.contenders = args.contenders;
    c.watches = args.watches;
    c.failover_rounds = args.failover_rounds;
    c.election_ttl = seconds("election-ttl", args.election_ttl)?;
    c.opendal = !args.no_opendal;
    c.progress = !args.quiet;
    c.validate()?;
    Ok(c)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("anykv-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anykv-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match runtime.block_on(run(&config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anykv-bench: {e}");
            return ExitCode::from(if e.is_config() { 2 } else { 1 });
        }
    };
    println!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let written = report
            .to_json()
            .and_then(|j| std::fs::write(path, j).map_err(|e| BenchError::new(e.to_string())));
        if let Err(e) = written {
            eprintln!("anykv-bench: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
