//! Measures what anykv costs compared with the raw client of each backend,
//! and on etcd and Redis with Apache OpenDAL's service for that backend,
//! side by side, in one run, on the same server.
//!
//! Every workload runs once per round through anykv (one `Arc<dyn Store>`
//! shared by all tasks) and once through the raw client doing the same job
//! the way a careful user would (one client shared by all tasks:
//! `etcd-client`, `redis`, `zookeeper-client`, or for the memory backend a
//! `BTreeMap` behind a `tokio::sync::RwLock`). On etcd and Redis, the
//! workloads OpenDAL has (get, put, and list on etcd) also run once per
//! round through one `opendal::Operator` ([`kv::OpenDal`]), the second
//! reference. The sides take turns over several short rounds, rotating
//! which goes first, so drift and noise hit all of them, and their counts
//! and latency histograms are summed. Each side writes in a namespace of
//! its own and everything is deleted at the end.
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
//! (successful compare-and-swap), `txn` (two compares and two puts on
//! keys of the task's own), `list` (10 keys under a prefix beside
//! [`BenchConfig::list_keys`] other keys), `watch-latency` (from a put
//! returning to the change reaching each watcher), `lock` (acquire and
//! release, each task its own lock, plus one row of contenders sharing a
//! lock), `mixed` (90% get, 10% put), `watch-under-load` (events a tree
//! watch delivers per second while 8 clients write under it, and the
//! `Synced` latency of watches opened meanwhile; anykv only), and
//! `watch-resources` (client memory and connections of many watches on one
//! store), `election-failover` (from a leader's death to the next leader)
//! and `discovery` (cached `Discovery::pick`/`instances` against a plain
//! `list`; both anykv only, see [`recipes`]).

#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod error;
pub mod kv;
pub mod load;
pub mod recipes;
mod report;
mod runner;
pub mod sys;
mod workloads;

pub use config::{Backend, BenchConfig, Workload};
pub use error::{BenchError, Result};
pub use report::{Report, Resources, Row, SideStats, TargetCheck};
pub use runner::run;
