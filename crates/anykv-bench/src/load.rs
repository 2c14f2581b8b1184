//! The `watch-under-load` workload: one tree watch while 8 clients write
//! under its prefix as fast as they can — how many events it delivers per
//! second against the writes per second, and how long new watches opened
//! during the writes take to reach `Synced`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::{Bytes, PutOptions, WatchEvent, WatchOptions};
use futures::StreamExt;
use serde::Serialize;

use crate::{BenchConfig, BenchError, Result};

/// How many clients write at once.
pub const WRITERS: usize = 8;

/// How many watches are opened during the writes to time `Synced`.
pub const SYNC_PROBES: usize = 5;

/// The figures of `watch-under-load`.
#[derive(Debug, Clone, Serialize)]
pub struct WatchLoad {
    /// Writing clients (each a store of its own).
    pub writers: usize,
    /// Seconds the writers ran.
    pub seconds: f64,
    /// Successful writes (puts and deletes that removed a key) per second.
    pub writes_per_sec: f64,
    /// Events the watch delivered per second while the writers ran.
    pub events_per_sec: f64,
    /// Events delivered in all (after the writers stopped too) per
    /// successful write: 1.0 where every revision is delivered, less where
    /// the backend coalesces (ZooKeeper).
    pub delivered_per_write: f64,
    /// Seconds from the last write to the watch reaching the final state.
    pub drain_seconds: f64,
    /// Milliseconds from `watch_tree` to `Synced` for watches opened while
    /// the writers ran: median.
    pub synced_p50_ms: f64,
    /// The same, largest of [`SYNC_PROBES`].
    pub synced_max_ms: f64,
}

/// Runs the workload under `{prefix}/wl` for `config.duration`.
pub async fn watch_under_load(config: &BenchConfig, prefix: &str) -> Result<WatchLoad> {
    let tree = format!("{prefix}/wl");
    let store = anykv::open(&config.url).await?;
    // The largest buffer a watch may have: the figure is what the watch
    // delivers, not how soon a slow consumer is cut off.
    let mut watch = store
        .watch_tree(&tree, WatchOptions::new().with_buffer(1 << 20))
        .await?;
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Synced { .. })) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BenchError::new("the watch ended before Synced")),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    // An unnamed memory:// URL opens a new private store each time: there
    // the writers share the watched store's handle.
    let private = config.url.starts_with("memory:")
        && anykv::parse_url(&config.url)
            .map(|u| u.host_str().unwrap_or("").is_empty())
            .unwrap_or(true);
    for w in 0..WRITERS {
        let s = if private {
            store.clone()
        } else {
            anykv::open(&config.url).await?
        };
        let (stop, writes, tree) = (stop.clone(), writes.clone(), tree.clone());
        writers.push(tokio::spawn(async move {
            let mut x = (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("{tree}/k{:02}", x % 32);
                let done = if x.is_multiple_of(5) {
                    s.delete(&key).await?
                } else {
                    s.put(&key, Bytes::from(format!("{w}-{x}")), PutOptions::new())
                        .await?;
                    true
                };
                if done {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
            if !private {
                let _ = s.close().await;
            }
            Ok::<(), anykv::Error>(())
        }));
    }
    // Watches opened during the writes, timed to Synced.
    let probe_store = store.clone();
    let probe_tree = tree.clone();
    let spacing = config.duration / (SYNC_PROBES as u32 + 1);
    let probes = tokio::spawn(async move {
        let mut ms = Vec::new();
        for _ in 0..SYNC_PROBES {
            tokio::time::sleep(spacing).await;
            let t = Instant::now();
            let mut w = probe_store
                .watch_tree(&probe_tree, WatchOptions::new())
                .await?;
            loop {
                match w.next().await {
                    Some(Ok(WatchEvent::Synced { .. })) => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok::<Vec<f64>, anykv::Error>(ms)
    });
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut events = 0u64;
    while let Ok(item) = tokio::time::timeout_at(deadline.into(), watch.next()).await {
        match item {
            Some(Ok(_)) => events += 1,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BenchError::new("the watch ended during the writes")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let writes_in_window = writes.load(Ordering::Relaxed);
    let during = events;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await
            .map_err(|e| BenchError::new(format!("a writer panicked: {e}")))??;
    }
    let stopped = Instant::now();
    let total_writes = writes.load(Ordering::Relaxed);
    // Drain: until the watch is quiet for a second.
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await {
        item?;
        events += 1;
    }
    let drain_seconds = stopped.elapsed().as_secs_f64() - 1.0;
    let mut ms = probes
        .await
        .map_err(|e| BenchError::new(format!("the probe panicked: {e}")))??;
    ms.sort_by(f64::total_cmp);
    let _ = store.delete_tree(&tree).await;
    let _ = store.close().await;
    Ok(WatchLoad {
        writers: WRITERS,
        seconds,
        writes_per_sec: writes_in_window as f64 / seconds,
        events_per_sec: during as f64 / seconds,
        delivered_per_write: events as f64 / total_writes.max(1) as f64,
        drain_seconds: drain_seconds.max(0.0),
        synced_p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        synced_max_ms: ms.last().copied().unwrap_or(f64::NAN),
    })
}
