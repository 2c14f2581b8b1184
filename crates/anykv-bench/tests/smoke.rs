//! Runs every workload briefly against the memory backend so the
//! benchmark keeps compiling and working. Nothing here is timed or
//! compared: only that every row is there, ran, and has sane figures.

use std::time::Duration;

use anykv_bench::{run, BenchConfig, SideStats, Workload};

fn sane(s: &SideStats, what: &str) {
    assert!(s.operations > 0, "{what}: no operations");
    assert!(s.samples > 0, "{what}: no latency samples");
    assert!(s.ops_per_sec > 0.0, "{what}: no throughput");
    assert!(
        s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us,
        "{what}: percentiles out of order: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_memory() {
    let mut config = BenchConfig::new("memory://");
    config.duration = Duration::from_millis(500);
    config.warmup = Duration::from_millis(100);
    config.rounds = 2;
    config.list_keys = 1000;
    config.watchers = vec![1, 20];
    config.watches = 500;
    config.failover_rounds = 2;
    config.election_ttl = Duration::from_secs(2);
    let report = run(&config).await.expect("the benchmark runs");

    let mut expected: Vec<(Workload, &str, usize)> = Vec::new();
    for w in [
        Workload::Get,
        Workload::Put,
        Workload::Cas,
        Workload::Txn,
        Workload::List,
    ] {
        expected.push((w, "tasks", 1));
        expected.push((w, "tasks", 64));
    }
    expected.push((Workload::WatchLatency, "watchers", 1));
    expected.push((Workload::WatchLatency, "watchers", 20));
    expected.push((Workload::Lock, "tasks", 1));
    expected.push((Workload::Lock, "tasks", 64));
    expected.push((Workload::Lock, "contenders", 8));
    expected.push((Workload::Mixed, "tasks", 1));
    expected.push((Workload::Mixed, "tasks", 64));

    let got: Vec<(Workload, &str, usize)> = report
        .rows
        .iter()
        .map(|r| (r.workload, r.unit.as_str(), r.concurrency))
        .collect();
    assert_eq!(got, expected);
    for r in &report.rows {
        let what = format!("{} × {} {}", r.workload, r.concurrency, r.unit);
        sane(&r.anykv, &format!("{what} (anykv)"));
        sane(&r.raw, &format!("{what} (raw)"));
        assert!(r.ratio > 0.0, "{what}: no ratio");
        assert!(
            r.opendal.is_none(),
            "{what}: OpenDAL runs on etcd and Redis only"
        );
    }
    let load = report.watch_load.as_ref().expect("watch-under-load ran");
    assert_eq!(load.writers, 8);
    assert!(load.writes_per_sec > 0.0, "{load:?}");
    assert!(load.events_per_sec > 0.0, "{load:?}");
    assert!(load.synced_max_ms >= load.synced_p50_ms, "{load:?}");
    let failover = report.failover.as_ref().expect("election-failover ran");
    assert_eq!(failover.rounds, 2);
    assert_eq!(failover.samples_ms.len(), 2);
    assert!(failover.p50_ms <= failover.max_ms, "{failover:?}");
    let found = report.discovery.as_ref().expect("discovery ran");
    assert_eq!(
        found.rows.iter().map(|r| r.concurrency).collect::<Vec<_>>(),
        vec![1, 64]
    );
    for r in &found.rows {
        assert!(
            r.pick_ops_per_sec > 0.0 && r.instances_ops_per_sec > 0.0 && r.list_ops_per_sec > 0.0,
            "{r:?}"
        );
    }
    let res = report.resources.as_ref().expect("watch-resources ran");
    assert_eq!(res.watches, 500);
    assert_eq!(res.stats_watches, 500);

    let md = report.to_markdown();
    assert!(md.contains("| get | 1 tasks |"), "{md}");
    assert!(md.contains("500 watches on one store"), "{md}");
    assert!(md.contains("election failover (2 rounds"), "{md}");
    assert!(md.contains("discovery of 10 instances"), "{md}");
    assert!(md.contains("watch under write load (8 writers"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("json")).expect("valid json");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(expected.len()));
    assert!(json.get("opendal_label").is_none(), "{json}");
    assert!(!md.contains("opendal"), "{md}");
}

#[tokio::test]
async fn bad_urls_and_workloads_are_config_errors() {
    for url in ["nope://x", "etcds://127.0.0.1:1/x", "not a url"] {
        let err = run(&BenchConfig::new(url)).await.expect_err(url);
        assert!(err.is_config(), "{url}: {err}");
    }
    let err = "gett".parse::<Workload>().expect_err("unknown workload");
    assert!(err.is_config() && err.to_string().contains("watch-latency"));
}
