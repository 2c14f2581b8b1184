//! Durations, leases held by one process, `status`, logging and shell
//! completions, on the in-process store and a `redb://` file.

mod common;

use std::time::{Duration, Instant};

use common::{anykv, command, run, Running, SHORT};
use serde_json::json;

#[test]
fn durations_need_a_unit() {
    let bare = anykv(&["--url", "memory://", "put", "k", "v", "--ttl", "10"]);
    assert_eq!(bare.code, Some(2));
    assert!(
        bare.stderr
            .contains("\"10\" has no unit; write 10s, 10ms or another unit"),
        "{}",
        bare.stderr
    );
    let ok = anykv(&["--url", "memory://", "put", "k", "v", "--ttl", "1m30s"]);
    assert_eq!((ok.code, ok.out()), (Some(0), "1\n".to_string()));
    let micro = anykv(&[
        "--url",
        "memory://",
        "lease",
        "grant",
        "500us",
        "--for",
        "1ms",
    ]);
    assert_eq!(micro.code, Some(0), "{}", micro.stderr);
}

#[test]
fn lease_grant_holds_its_lease_until_for_has_passed() {
    let started = Instant::now();
    let done = anykv(&[
        "--url",
        "memory://",
        "lease",
        "grant",
        "5s",
        "--for",
        "300ms",
    ]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let id: u64 = done.out().trim().parse().expect("a lease id");
    assert_eq!(
        done.stderr,
        format!("anykv: holding lease {id} (ttl 5s); revoking it in 300ms or on Ctrl-C\n")
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let json = anykv(&[
        "--url",
        "memory://",
        "--json",
        "lease",
        "grant",
        "2s",
        "--for",
        "1ms",
    ]);
    assert_eq!(json.json()["ttl_seconds"], json!(2.0));
    assert!(json.json()["lease"].is_string());
}

#[test]
fn lease_grant_stops_on_ctrl_c() {
    let grant = Running::start(&["--url", "memory://", "lease", "grant", "10s"]);
    let id: u64 = grant.stdout_line(SHORT).parse().expect("a lease id");
    assert_eq!(
        grant.stderr_line(SHORT),
        format!("anykv: holding lease {id} (ttl 10s); Ctrl-C to revoke")
    );
    grant.signal("INT");
    let (code, _, _) = grant.finish(SHORT);
    assert_eq!(code, Some(130));
}

/// `put --lease-ttl` writes the key bound to a lease of its own; once the
/// process ends the lease is revoked and the key is gone.
#[test]
fn put_with_a_lease_holds_the_key_while_it_runs() {
    let dir = anykv_testserver::temp_dir("anykv-cli-lease-");
    let url = format!("redb://{}/lease.redb/app", dir.path().display());
    let put = anykv(&[
        "--url",
        &url,
        "put",
        "svc/a",
        "up",
        "--lease-ttl",
        "5s",
        "--for",
        "10ms",
    ]);
    assert_eq!(
        (put.code, put.out()),
        (Some(0), "1\n".to_string()),
        "{}",
        put.stderr
    );
    let gone = anykv(&["--url", &url, "get", "svc/a"]);
    assert_eq!(gone.code, Some(4), "revoked at the end: {}", gone.stderr);

    let mixed = anykv(&[
        "--url",
        &url,
        "put",
        "k",
        "v",
        "--lease-ttl",
        "5s",
        "--ttl",
        "5s",
    ]);
    assert_eq!(mixed.code, Some(2));
    let lonely = anykv(&["--url", &url, "put", "k", "v", "--for", "5s"]);
    assert_eq!(lonely.code, Some(2));
}

#[test]
fn status_prints_the_backend_and_its_capabilities() {
    let dir = anykv_testserver::temp_dir("anykv-cli-status-");
    let url = format!("redb://{}/status.redb/app", dir.path().display());
    assert_eq!(anykv(&["--url", &url, "put", "a", "1"]).code, Some(0));
    let text = anykv(&["status", &url]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let lines = text.lines();
    assert_eq!(lines[0], "backend\tredb");
    assert_eq!(lines[1], "revision\t1");
    assert!(
        lines.contains(&"capability\ttransactions\ttrue".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("stats\twatches=0 ")),
        "{lines:?}"
    );

    let json = anykv(&["--url", "memory://", "status", "--output", "json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let v = json.json();
    assert_eq!(v["backend"], json!("memory"));
    assert_eq!(v["servers"], json!([]));
    assert_eq!(v["capabilities"]["watch"], json!(true));
    assert_eq!(v["capabilities"]["locks"], json!(true));
    assert!(v["capabilities"]["max_txn_ops"]
        .as_u64()
        .is_some_and(|n| n > 0));

    let table = anykv(&["--url", "memory://", "-o", "table", "status"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert_eq!(table.lines()[0], "backend\tmemory");

    // Nothing listens on port 1: no server answers, so 3.
    let down = anykv(&[
        "status",
        "etcd://127.0.0.1:1/x?connect_timeout=300ms&request_timeout=300ms",
    ]);
    assert_eq!(down.code, Some(3), "{}", down.stderr);
}

#[test]
fn verbose_logs_each_call_as_a_span() {
    let done = anykv(&["-v", "--url", "memory://", "put", "k", "v"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stderr.lines().any(|l| l.contains("op=\"put\"")),
        "{}",
        done.stderr
    );
    let quiet = anykv(&["--url", "memory://", "put", "k", "v"]);
    assert_eq!(quiet.stderr, "");
    let mut cmd = command(&["--url", "memory://", "put", "k", "v"]);
    cmd.env("RUST_LOG", "anykv=debug");
    let env = run(cmd, None, SHORT);
    assert!(env.stderr.contains("op=\"put\""), "{}", env.stderr);
}

#[test]
fn completions_for_every_shell() {
    let bash = anykv(&["completions", "bash"]);
    assert_eq!(bash.code, Some(0));
    assert!(bash.out().contains("conformance"));
    assert!(bash.out().contains("_anykv"));
    for shell in ["zsh", "fish", "powershell"] {
        let done = anykv(&["completions", shell]);
        assert_eq!(done.code, Some(0), "{shell}");
        assert!(done.out().contains("status"), "{shell}");
    }
    assert_eq!(anykv(&["completions", "tcsh"]).code, Some(2));
}
