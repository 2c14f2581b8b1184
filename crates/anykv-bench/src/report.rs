//! What a run measured, the targets a row is checked against, and the
//! report as Markdown or JSON.

use serde::Serialize;

use crate::config::{Backend, Workload};
use crate::{load, recipes};
use crate::{BenchError, Result};

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

/// One row of the table: a workload at one concurrency, every side.
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
    /// The OpenDAL side, on etcd and Redis where OpenDAL has the workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opendal: Option<SideStats>,
    /// anykv ops/s divided by OpenDAL ops/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opendal_ratio: Option<f64>,
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
    /// What the second reference was ("opendal"), where there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opendal_label: Option<String>,
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
    /// The `election-failover` figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<recipes::Failover>,
    /// The `discovery` figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<recipes::DiscoveryFigures>,
}

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
        (Backend::Redis, Cas | PutMin | CasMin) => min(0.9),
        _ => None,
    }
}

pub(crate) fn check_row(backend: Backend, row: &mut Row) {
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

/// On ZooKeeper the raw watcher is told of a change before the put's
/// own reply (its delay is about 0), while anykv's events carry the new
/// value, which takes one more read: its single watcher is held to a raw
/// `get_data` round trip instead (the raw `get` row at one task, when the
/// run has it) plus 1 ms.
pub(crate) fn check_zookeeper_watch(rows: &mut [Row]) {
    let Some(get_p99) = rows
        .iter()
        .find(|r| r.workload == Workload::Get && r.unit == "tasks" && r.concurrency == 1)
        .map(|r| r.raw.p99_us)
    else {
        return;
    };
    for row in rows
        .iter_mut()
        .filter(|r| r.workload == Workload::WatchLatency && r.concurrency == 1)
    {
        row.target = Some(TargetCheck {
            target: format!("p99 ≤ raw get_data p99 ({get_p99:.0} µs) + 1 ms"),
            met: row.anykv.p99_us <= get_p99 + 1000.0,
        });
    }
}

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
        if let Some(label) = &self.opendal_label {
            self.opendal_table(label, &mut out);
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
        if let Some(f) = &self.failover {
            out.push_str(&format!(
                "election failover ({} rounds, TTL {:.1} s; the leader's store closed and its \
                 leadership dropped without resigning): next leader after p50 {:.3} ms, max \
                 {:.3} ms\n",
                f.rounds, f.ttl_secs, f.p50_ms, f.max_ms,
            ));
        }
        if let Some(d) = &self.discovery {
            out.push_str(&format!(
                "discovery of {} instances, ops/s ({:.1} s per cell):",
                d.instances, d.seconds
            ));
            for r in &d.rows {
                out.push_str(&format!(
                    " {} tasks: pick {}, instances {}, list {};",
                    r.concurrency,
                    thousands(r.pick_ops_per_sec),
                    thousands(r.instances_ops_per_sec),
                    thousands(r.list_ops_per_sec),
                ));
            }
            out.push('\n');
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

    /// The second table: anykv against OpenDAL on the rows OpenDAL ran,
    /// and which workloads it has no equivalent of.
    fn opendal_table(&self, label: &str, out: &mut String) {
        let rows: Vec<(&Row, &SideStats, f64)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r, r.opendal.as_ref()?, r.opendal_ratio?)))
            .collect();
        out.push_str(&format!(
            "#### {} — anykv vs {label} (OpenDAL's {} service)\n\n",
            self.backend.name(),
            self.backend.name(),
        ));
        if !rows.is_empty() {
            out.push_str(&format!(
                "| workload | concurrency | anykv ops/s | {label} ops/s | anykv / {label} | \
                 anykv p50 / p99 / p999 µs | {label} p50 / p99 / p999 µs |\n\
                 |---|---|--:|--:|--:|--:|--:|\n",
            ));
            for (r, o, q) in &rows {
                out.push_str(&format!(
                    "| {} | {} {} | {} | {} | {q:.2} | {} | {} |\n",
                    r.workload,
                    r.concurrency,
                    r.unit,
                    thousands(r.anykv.ops_per_sec),
                    thousands(o.ops_per_sec),
                    lat(&r.anykv),
                    lat(o),
                ));
            }
            out.push('\n');
        }
        let mut absent: Vec<&str> = Vec::new();
        for r in self.rows.iter().filter(|r| r.opendal.is_none()) {
            if !absent.contains(&r.workload.name()) {
                absent.push(r.workload.name());
            }
        }
        if !absent.is_empty() {
            out.push_str(&format!(
                "The {label} side runs get, put and list only, where OpenDAL's {} service \
                 has them: none for {}.\n\n",
                self.backend.name(),
                absent.join(", "),
            ));
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::new(format!("json: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(label: &str, ops_per_sec: f64) -> SideStats {
        SideStats {
            label: label.into(),
            operations: 10,
            seconds: 1.0,
            ops_per_sec,
            samples: 10,
            p50_us: 100.0,
            p99_us: 200.0,
            p999_us: 300.0,
            max_us: 400.0,
        }
    }

    fn row(workload: Workload, opendal: Option<f64>) -> Row {
        Row {
            workload,
            unit: "tasks".into(),
            concurrency: 1,
            anykv: side("anykv", 1000.0),
            raw: side("redis", 1000.0),
            ratio: 1.0,
            opendal: opendal.map(|o| side("opendal", o)),
            opendal_ratio: opendal.map(|o| 1000.0 / o),
            target: None,
        }
    }

    fn report(opendal_label: Option<&str>, rows: Vec<Row>) -> Report {
        Report {
            backend: Backend::Redis,
            url: "redis://127.0.0.1:6379/0/bench".into(),
            raw_label: "redis".into(),
            opendal_label: opendal_label.map(str::to_owned),
            duration_secs: 1.0,
            warmup_secs: 0.1,
            rounds: 1,
            list_keys: 10,
            setup_secs: 0.0,
            cleanup_secs: 0.0,
            rows,
            resources: None,
            watch_load: None,
            failover: None,
            discovery: None,
        }
    }

    #[test]
    fn the_zookeeper_watcher_is_held_to_a_get_data_round_trip() {
        let mut get = row(Workload::Get, None);
        get.raw.p99_us = 250.0;
        let mut watch = row(Workload::WatchLatency, None);
        watch.unit = "watchers".into();
        watch.anykv.p99_us = 1_200.0;
        watch.raw.p99_us = 10.0;
        let mut many = watch.clone();
        many.concurrency = 1000;
        let mut rows = vec![get, watch, many];
        check_zookeeper_watch(&mut rows);
        let t = rows[1].target.as_ref().unwrap();
        assert!(t.met, "{t:?}");
        assert_eq!(t.target, "p99 ≤ raw get_data p99 (250 µs) + 1 ms");
        assert!(rows[2].target.is_none());
        rows[1].anykv.p99_us = 1_300.0;
        check_zookeeper_watch(&mut rows);
        assert!(!rows[1].target.as_ref().unwrap().met);
    }

    #[test]
    fn the_opendal_table_has_its_rows_and_names_the_absent_workloads() {
        let r = report(
            Some("opendal"),
            vec![
                row(Workload::Get, Some(500.0)),
                row(Workload::List, None),
                row(Workload::Cas, None),
            ],
        );
        let md = r.to_markdown();
        assert!(md.contains("#### redis — anykv vs opendal"), "{md}");
        assert!(
            md.contains(
                "| get | 1 tasks | 1,000 | 500 | 2.00 | 100 / 200 / 300 | 100 / 200 / 300 |"
            ),
            "{md}"
        );
        assert!(md.contains("service has them: none for list, cas."), "{md}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["opendal_label"], "opendal");
        assert_eq!(json["rows"][0]["opendal_ratio"], 2.0);
        assert!(json["rows"][1].get("opendal").is_none());
    }

    #[test]
    fn no_opendal_table_without_an_opendal_side() {
        let md = report(None, vec![row(Workload::Get, None)]).to_markdown();
        assert!(!md.contains("opendal"), "{md}");
    }
}
