//! Every example run on the in-process store with its output checked line
//! by line: `cargo test --test examples`. With the `etcd`, `redis`,
//! `zookeeper` and `redb` features the same examples run on real servers
//! (and a redb file) and must print the same lines (fencing tokens aside, which are the backend's
//! own numbers).
//!
//! The examples are compiled into this test as modules, so each test calls
//! the example's demo function with a buffer in place of stdout.

// Each example brings its own copy of the printing helper.
#![allow(clippy::duplicate_mod)]

use anykv_testserver::unique_name;

#[allow(dead_code)]
#[path = "../examples/service_discovery.rs"]
mod service_discovery;

#[allow(dead_code)]
#[path = "../examples/config_watch.rs"]
mod config_watch;

#[allow(dead_code)]
#[path = "../examples/leader.rs"]
mod leader;

#[allow(dead_code)]
#[path = "../examples/swap_in_tests.rs"]
mod swap_in_tests;

type Lines = Vec<String>;

fn lines(out: Vec<u8>) -> Lines {
    String::from_utf8(out)
        .expect("the examples print UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Opens `url`, runs one example's demo on it, closes it, and returns what
/// the demo printed.
async fn run_service_discovery(url: &str) -> Lines {
    let store = anykv::open(url).await.expect("the store opens");
    let mut out = Vec::new();
    let result = service_discovery::demo(url, &store, &mut out).await;
    store.close().await.expect("the store closes");
    result.unwrap_or_else(|e| panic!("service_discovery failed: {e}\n{:?}", lines(out.clone())));
    lines(out)
}

async fn run_config_watch(url: &str) -> Lines {
    let store = anykv::open(url).await.expect("the store opens");
    let mut out = Vec::new();
    let result = config_watch::demo(store.as_ref(), &mut out).await;
    store.close().await.expect("the store closes");
    result.unwrap_or_else(|e| panic!("config_watch failed: {e}\n{:?}", lines(out.clone())));
    lines(out)
}

async fn run_leader(url: &str) -> Lines {
    let store = anykv::open(url).await.expect("the store opens");
    let mut out = Vec::new();
    let result = leader::demo(url, &store, &mut out).await;
    store.close().await.expect("the store closes");
    result.unwrap_or_else(|e| panic!("leader failed: {e}\n{:?}", lines(out.clone())));
    lines(out)
}

async fn run_swap_in_tests(url: &str) -> Lines {
    let store = anykv::open(url).await.expect("the store opens");
    let mut out = Vec::new();
    let result = swap_in_tests::demo(store.clone(), &mut out).await;
    store.close().await.expect("the store closes");
    result.unwrap_or_else(|e| panic!("swap_in_tests failed: {e}\n{:?}", lines(out.clone())));
    lines(out)
}

const SERVICE_DISCOVERY: &[&str] = &[
    r#"Provider web-1: registered services/web/web-1 = "addr=127.0.0.1 port=8081 version=1.4.2 zone=a" under a 5-second lease."#,
    r#"Provider web-2: registered services/web/web-2 = "addr=127.0.0.1 port=8082 version=1.4.2 zone=b" under a 5-second lease."#,
    "Consumer: listed 2 instances: web-1, web-2.",
    "  web-1 at 127.0.0.1:8081 (version 1.4.2, zone a)",
    "  web-2 at 127.0.0.1:8082 (version 1.4.2, zone b)",
    r#"Provider web-3: registered services/web/web-3 = "addr=127.0.0.1 port=8083 version=1.5.0 zone=a" under a 5-second lease."#,
    "Consumer: web-3 at 127.0.0.1:8083 (version 1.5.0, zone a) joined; 3 instances: web-1, web-2, web-3.",
    "Provider web-2: killed; dropping its lease handle gives the lease back.",
    "Consumer: web-2 left; 2 instances: web-1, web-3.",
    "Provider web-1: shut down and revoked its lease.",
    "Consumer: web-1 left; 1 instance: web-3.",
    "Provider web-3: shut down and revoked its lease.",
    "Consumer: web-3 left; no instances.",
];

const CONFIG_WATCH: &[&str] = &[
    "Operator: wrote log_level=info, max_connections=100, greeting=hello.",
    r#"App: loaded log_level=info, max_connections=100, greeting="hello"."#,
    "Operator: set max_connections=250.",
    r#"App: reloaded after a change to max_connections: log_level=info, max_connections=250, greeting="hello"."#,
    "Operator: set max_connections=lots.",
    r#"App: refused max_connections="lots" (expected a number from 1 to 10000); keeping the previous value."#,
    "Operator: set log_level=debug.",
    r#"App: reloaded after a change to log_level: log_level=debug, max_connections=250, greeting="hello"."#,
    "Operator: set greeting=good morning.",
    r#"App: reloaded after a change to greeting: log_level=debug, max_connections=250, greeting="good morning"."#,
    "Operator: deleted greeting.",
    r#"App: reloaded after a change to greeting: log_level=debug, max_connections=250, greeting="hello"."#,
    r#"App: running with log_level=debug, max_connections=250, greeting="hello"."#,
];

/// The leader demo's lines, with `{1}`, `{2}`, `{3}` standing for the
/// three holders' fencing tokens.
const LEADER: &[&str] = &[
    "worker-1 took the lock with token {1}.",
    "worker-1 wrote the report with token {1}: accepted.",
    "worker-2 is waiting for the lock.",
    "worker-1 released the lock.",
    "worker-2 took the lock with token {2}.",
    "worker-2 wrote the report with token {2}: accepted.",
    "worker-3 is waiting for the lock.",
    "worker-2 stalled and its session ended: its lock is lost, though worker-2 has not noticed.",
    "worker-3 took the lock with token {3}.",
    "worker-3 wrote the report with token {3}: accepted.",
    "worker-2 wrote the report with token {2}: refused, the report has already accepted token {3}.",
    "worker-3 released the lock.",
    r#"The report says "written by worker-3" (token {3})."#,
];

/// Checks the leader demo's output: the tokens are read from the lines that
/// announce them, must strictly increase, and must then fill `LEADER` to
/// give exactly the lines printed.
fn check_leader(printed: &[String]) {
    let token = |line: usize, worker: &str| -> u64 {
        printed
            .get(line)
            .and_then(|l| l.strip_prefix(&format!("{worker} took the lock with token ")))
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!("line {line} does not announce {worker}'s token: {printed:#?}")
            })
    };
    let tokens = [
        token(0, "worker-1"),
        token(4, "worker-2"),
        token(8, "worker-3"),
    ];
    assert!(
        tokens[0] < tokens[1] && tokens[1] < tokens[2],
        "fencing tokens must strictly increase: {tokens:?}"
    );
    let expected: Lines = LEADER
        .iter()
        .map(|line| {
            line.replace("{1}", &tokens[0].to_string())
                .replace("{2}", &tokens[1].to_string())
                .replace("{3}", &tokens[2].to_string())
        })
        .collect();
    assert_eq!(printed, expected);
}

const SWAP_IN_TESTS: &[&str] = &[
    "Submitted job 0001: resize photo-17.png.",
    "Submitted job 0002: send the welcome mail.",
    "Submitted job 0003: build the monthly report.",
    "Submitting job 0002 again was refused: job 0002 already exists.",
    "worker-a claimed job 0001: resize photo-17.png.",
    "worker-b claimed job 0002: send the welcome mail.",
    "worker-b tried to complete job 0001 and was refused: job 0001 is claimed by worker-a.",
    "worker-a completed job 0001.",
    "worker-a and worker-b raced for the next job: one claimed job 0003, the other found nothing.",
    "The winner completed job 0003.",
    "worker-b completed job 0002.",
    "3 of 3 jobs are done; nothing is left to claim.",
];

/// A named in-process store of the test's own, which every handle the
/// example opens on the URL shares.
fn memory_url() -> String {
    format!("memory://{}/demo", unique_name("examples"))
}

#[tokio::test]
async fn service_discovery_on_memory() {
    assert_eq!(
        run_service_discovery(&memory_url()).await,
        SERVICE_DISCOVERY
    );
}

#[tokio::test]
async fn config_watch_on_memory() {
    assert_eq!(run_config_watch("memory://").await, CONFIG_WATCH);
}

#[tokio::test]
async fn leader_on_memory() {
    check_leader(&run_leader(&memory_url()).await);
}

#[tokio::test]
async fn swap_in_tests_on_memory() {
    assert_eq!(run_swap_in_tests("memory://").await, SWAP_IN_TESTS);
}

/// The same examples, the same lines, on etcd.
#[cfg(feature = "etcd")]
mod etcd {
    use super::*;

    fn url() -> String {
        format!(
            "{}/{}",
            anykv_testserver::etcd::shared_url(),
            unique_name("examples")
        )
    }

    #[tokio::test]
    async fn service_discovery_on_etcd() {
        assert_eq!(run_service_discovery(&url()).await, SERVICE_DISCOVERY);
    }

    #[tokio::test]
    async fn config_watch_on_etcd() {
        assert_eq!(run_config_watch(&url()).await, CONFIG_WATCH);
    }

    #[tokio::test]
    async fn leader_on_etcd() {
        check_leader(&run_leader(&url()).await);
    }

    #[tokio::test]
    async fn swap_in_tests_on_etcd() {
        assert_eq!(run_swap_in_tests(&url()).await, SWAP_IN_TESTS);
    }
}

/// The same examples, the same lines, on Redis.
#[cfg(feature = "redis")]
mod redis {
    use super::*;

    fn url() -> String {
        format!(
            "{}/0/{}",
            anykv_testserver::redis::shared_url(),
            unique_name("examples")
        )
    }

    #[tokio::test]
    async fn service_discovery_on_redis() {
        assert_eq!(run_service_discovery(&url()).await, SERVICE_DISCOVERY);
    }

    #[tokio::test]
    async fn config_watch_on_redis() {
        assert_eq!(run_config_watch(&url()).await, CONFIG_WATCH);
    }

    #[tokio::test]
    async fn leader_on_redis() {
        check_leader(&run_leader(&url()).await);
    }

    #[tokio::test]
    async fn swap_in_tests_on_redis() {
        assert_eq!(run_swap_in_tests(&url()).await, SWAP_IN_TESTS);
    }
}

/// The same examples, the same lines, on ZooKeeper.
#[cfg(feature = "zookeeper")]
mod zookeeper {
    use super::*;

    fn url() -> String {
        format!(
            "{}/{}",
            anykv_testserver::zookeeper::shared_url(),
            unique_name("examples")
        )
    }

    #[tokio::test]
    async fn service_discovery_on_zookeeper() {
        assert_eq!(run_service_discovery(&url()).await, SERVICE_DISCOVERY);
    }

    #[tokio::test]
    async fn config_watch_on_zookeeper() {
        assert_eq!(run_config_watch(&url()).await, CONFIG_WATCH);
    }

    #[tokio::test]
    async fn leader_on_zookeeper() {
        check_leader(&run_leader(&url()).await);
    }

    #[tokio::test]
    async fn swap_in_tests_on_zookeeper() {
        assert_eq!(run_swap_in_tests(&url()).await, SWAP_IN_TESTS);
    }
}

/// The same examples, the same lines, on a redb file (one per test binary,
/// each example on a root of its own).
#[cfg(feature = "redb")]
mod redb {
    use super::*;
    use std::sync::LazyLock;

    static DIR: LazyLock<anykv_testserver::TempDir> =
        LazyLock::new(|| anykv_testserver::temp_dir("anykv-examples-redb-"));

    fn url() -> String {
        format!(
            "redb://{}/examples.redb/{}",
            DIR.path().display(),
            unique_name("examples")
        )
    }

    #[tokio::test]
    async fn service_discovery_on_redb() {
        assert_eq!(run_service_discovery(&url()).await, SERVICE_DISCOVERY);
    }

    #[tokio::test]
    async fn config_watch_on_redb() {
        assert_eq!(run_config_watch(&url()).await, CONFIG_WATCH);
    }

    #[tokio::test]
    async fn leader_on_redb() {
        check_leader(&run_leader(&url()).await);
    }

    #[tokio::test]
    async fn swap_in_tests_on_redb() {
        assert_eq!(run_swap_in_tests(&url()).await, SWAP_IN_TESTS);
    }
}
