//! The `anykv` binary against a real etcd (the shared test server, or
//! `ANYKV_ETCD_URL`): what one process writes, others read, watch, lock
//! and see vanish.

mod common;

use std::time::Duration;

use common::{anykv, anykv_with_stdin, command, run, Finished, Running, SHORT};
use serde_json::json;

/// A fresh root on the shared server.
fn url() -> String {
    format!(
        "{}/{}",
        anykv_testserver::etcd::shared_url(),
        anykv_testserver::unique_name("cli")
    )
}

/// `anykv --url url args...`.
fn at(url: &str, args: &[&str]) -> Finished {
    let mut all = vec!["--url", url];
    all.extend_from_slice(args);
    anykv(&all)
}

/// Runs `put` and returns the revision it printed.
fn put(url: &str, key: &str, value: &str) -> u64 {
    let r = at(url, &["put", key, value]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.out()
        .trim_end()
        .parse()
        .unwrap_or_else(|e| panic!("put printed {:?}: {e}", r.out()))
}

fn ok(r: &Finished) -> String {
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stderr, "");
    r.out()
}

#[test]
fn put_in_one_process_then_get_ls_rm_in_others() {
    let url = url();
    let r1 = put(&url, "app/1", "one");
    let r2 = put(&url, "app/2", "two words");
    assert!(r2 > r1);
    put(&url, "apple", "not under app/");
    assert_eq!(ok(&at(&url, &["get", "app/1"])), "one\n");
    assert_eq!(ok(&at(&url, &["get", "/app/2/"])), "two words\n");
    assert_eq!(
        ok(&at(&url, &["ls", "app"])),
        "app/1\tone\napp/2\ttwo words\n"
    );
    assert_eq!(
        ok(&at(&url, &["ls", "app", "--keys-only"])),
        "app/1\napp/2\n"
    );
    assert_eq!(ok(&at(&url, &["rm", "app/1"])), "");

    let gone = at(&url, &["get", "app/1"]);
    assert_eq!(gone.code, Some(4));
    assert_eq!(
        (gone.out(), gone.stderr),
        (
            String::new(),
            "anykv: etcd: key \"app/1\" not found\n".to_string()
        )
    );
    let again = at(&url, &["rm", "app/1"]);
    assert_eq!(again.code, Some(4));
    assert_eq!(again.stderr, "anykv: etcd: key \"app/1\" not found\n");

    assert_eq!(ok(&at(&url, &["rm", "--tree", "app"])), "1\n");
    assert_eq!(ok(&at(&url, &["ls"])), "apple\tnot under app/\n");
    assert_eq!(ok(&at(&url, &["rm", "--tree", "/"])), "1\n");
    assert_eq!(ok(&at(&url, &["ls"])), "");
}

#[test]
fn json_output_for_scripts() {
    let url = url();
    let put = at(&url, &["--json", "put", "cfg/color", "blue"]);
    let rev = put.json()["revision"].as_u64().expect("a revision");
    assert_eq!(put.json(), json!({"key": "cfg/color", "revision": rev}));
    assert_eq!(
        at(&url, &["--json", "get", "cfg/color"]).json(),
        json!({"key": "cfg/color", "value": "blue", "encoding": "utf8", "revision": rev})
    );

    let dir = anykv_testserver::temp_dir("anykv-cli-");
    let path = dir.path().join("binary");
    std::fs::write(&path, [0u8, 0xff, b'\n']).expect("write the value");
    let path = path.to_str().expect("a UTF-8 path");
    let bin = at(&url, &["--json", "put", "cfg/blob", "--file", path]);
    let bin_rev = bin.json()["revision"].as_u64().expect("a revision");
    assert_eq!(
        at(&url, &["--json", "ls", "cfg"]).json(),
        json!([
            {"key": "cfg/blob", "value": "AP8K", "encoding": "base64", "revision": bin_rev},
            {"key": "cfg/color", "value": "blue", "encoding": "utf8", "revision": rev},
        ])
    );
    assert_eq!(
        at(&url, &["--json", "ls", "cfg", "--keys-only"]).json(),
        json!([{"key": "cfg/blob", "revision": bin_rev}, {"key": "cfg/color", "revision": rev}])
    );
    assert_eq!(
        ok(&at(&url, &["ls", "cfg"])),
        "cfg/blob\t\\x00\\xff\\n\ncfg/color\tblue\n"
    );

    let missing = at(&url, &["--json", "get", "cfg/nothing"]);
    assert_eq!(missing.code, Some(4));
    assert_eq!(
        missing.json(),
        json!({"error": {
            "kind": "KeyNotFound",
            "message": "etcd: key \"cfg/nothing\" not found",
            "exit_code": 4,
        }})
    );
    assert_eq!(
        at(&url, &["--json", "rm", "cfg/color"]).json(),
        json!({"key": "cfg/color", "deleted": 1})
    );
    assert_eq!(
        at(&url, &["--json", "rm", "--tree", "cfg"]).json(),
        json!({"prefix": "cfg", "deleted": 1})
    );
}

#[test]
fn values_from_a_file_and_from_stdin() {
    let url = url();
    let value: Vec<u8> = (0..=255u8).chain(b"\nend\n".iter().copied()).collect();
    let dir = anykv_testserver::temp_dir("anykv-cli-");
    let path = dir.path().join("value");
    std::fs::write(&path, &value).expect("write the value");
    let path = path.to_str().expect("a UTF-8 path");
    put_ok(at(&url, &["put", "f", "--file", path]));
    assert_eq!(at(&url, &["get", "f", "--raw"]).stdout, value);

    put_ok(anykv_with_stdin(
        &["--url", &url, "put", "s", "-"],
        b"line\n",
    ));
    assert_eq!(at(&url, &["get", "s", "--raw"]).stdout, b"line\n");
    assert_eq!(ok(&at(&url, &["get", "s"])), "line\n\n");

    put_ok(anykv_with_stdin(
        &["--url", &url, "put", "t", "--file", "-"],
        b"",
    ));
    assert_eq!(at(&url, &["get", "t", "--raw"]).stdout, b"");
    assert_eq!(ok(&at(&url, &["get", "t"])), "\n");
}

fn put_ok(r: Finished) {
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn compare_and_swap_and_create_only() {
    let url = url();
    let r1 = put(&url, "k", "v1");
    let r1s = r1.to_string();
    let swapped = at(&url, &["put", "k", "v2", "--if-revision", &r1s]);
    let r2: u64 = ok(&swapped).trim_end().parse().expect("a revision");
    assert!(r2 > r1);

    let stale = at(&url, &["put", "k", "v3", "--if-revision", &r1s]);
    assert_eq!(stale.code, Some(5));
    assert_eq!(
        stale.stderr,
        format!("anykv: etcd: key \"k\" was modified: expected revision {r1}, found {r2}\n")
    );
    let exists = at(&url, &["put", "k", "v", "--create-only"]);
    assert_eq!(exists.code, Some(5));
    assert_eq!(exists.stderr, "anykv: etcd: key \"k\" already exists\n");
    let absent = at(&url, &["put", "nothing", "v", "--if-revision", &r1s]);
    assert_eq!(absent.code, Some(4));
    assert_eq!(absent.stderr, "anykv: etcd: key \"nothing\" not found\n");
    let created = at(&url, &["put", "new", "v", "--create-only"]);
    assert_eq!(created.code, Some(0));

    let stale_rm = at(&url, &["rm", "k", "--if-revision", &r1s]);
    assert_eq!(stale_rm.code, Some(5));
    assert_eq!(
        stale_rm.stderr,
        format!("anykv: etcd: key \"k\" was modified: expected revision {r1}, found {r2}\n")
    );
    assert_eq!(
        ok(&at(&url, &["rm", "k", "--if-revision", &r2.to_string()])),
        ""
    );
    assert_eq!(at(&url, &["get", "k"]).code, Some(4));
}

/// Parses `anykv: in sync at revision N`.
fn synced_at(line: &str) -> u64 {
    line.strip_prefix("anykv: in sync at revision ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a sync line: {line:?}"))
}

#[test]
fn watch_sees_what_other_processes_write() {
    let url = url();
    let r0 = put(&url, "w/0", "before");
    let watch = Running::start(&["--url", &url, "watch", "--tree", "w", "--count", "4"]);
    assert_eq!(watch.stdout_line(SHORT), format!("PUT\t{r0}\tw/0\tbefore"));
    let synced = synced_at(&watch.stderr_line(SHORT));
    assert!(synced >= r0);

    let r1 = put(&url, "w/a", "1");
    let r2 = put(&url, "w/b", "two\nlines");
    put(&url, "wx", "outside the tree");
    assert_eq!(ok(&at(&url, &["rm", "w/a"])), "");
    let (code, out, err) = watch.finish(SHORT);
    assert_eq!((code, err), (Some(0), vec![]));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], format!("PUT\t{r1}\tw/a\t1"));
    assert_eq!(out[1], format!("PUT\t{r2}\tw/b\ttwo\\nlines"));
    let fields: Vec<&str> = out[2].split('\t').collect();
    assert_eq!((fields[0], fields[2], fields.len()), ("DELETE", "w/a", 3));
    let deleted: u64 = fields[1].parse().expect("a revision");
    assert!(deleted > r2);
}

#[test]
fn watch_json_and_resume_from_a_revision() {
    let url = url();
    let watch = Running::start(&["--url", &url, "--json", "watch", "k", "--count", "2"]);
    let synced: serde_json::Value = serde_json::from_str(&watch.stdout_line(SHORT)).expect("JSON");
    assert_eq!(synced["event"], json!("synced"));
    let r1 = put(&url, "k", "a");
    let r2 = put(&url, "k", "b");
    let (code, out, err) = watch.finish(SHORT);
    assert_eq!((code, err), (Some(0), vec![]));
    let events: Vec<serde_json::Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"event": "put", "key": "k", "value": "a", "encoding": "utf8", "revision": r1}),
            json!({"event": "put", "key": "k", "value": "b", "encoding": "utf8", "revision": r2}),
        ]
    );

    assert_eq!(ok(&at(&url, &["rm", "k"])), "");
    let resumed = at(
        &url,
        &[
            "watch",
            "k",
            "--from-revision",
            &r1.to_string(),
            "--count",
            "2",
        ],
    );
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(
        resumed.stderr,
        format!("anykv: watching from revision {r1}\n")
    );
    let lines = resumed.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], format!("PUT\t{r2}\tk\tb"));
    let fields: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!((fields[0], fields[2]), ("DELETE", "k"));
    assert!(fields[1].parse::<u64>().expect("a revision") > r2);
}

#[test]
fn watch_stops_cleanly_on_ctrl_c() {
    let url = url();
    let watch = Running::start(&["--url", &url, "watch", "k"]);
    synced_at(&watch.stderr_line(SHORT));
    let r = put(&url, "k", "v");
    assert_eq!(watch.stdout_line(SHORT), format!("PUT\t{r}\tk\tv"));
    watch.signal("INT");
    let (code, out, err) = watch.finish(SHORT);
    assert_eq!(
        (code, out, err),
        (Some(130), vec![], vec!["anykv: interrupted".to_string()])
    );
}

#[test]
fn a_second_lock_holder_times_out_while_the_first_holds() {
    let url = url();
    let first = Running::start(&["--url", &url, "lock", "jobs/nightly"]);
    let token: u64 = first.stdout_line(SHORT).parse().expect("a fencing token");
    assert_eq!(
        first.stderr_line(SHORT),
        format!("anykv: holding lock \"jobs/nightly\" (fencing token {token}); Ctrl-C to release")
    );
    // The lock is not a key.
    assert_eq!(ok(&at(&url, &["ls"])), "");

    let second = at(
        &url,
        &["lock", "jobs/nightly", "--timeout", "1s", "--", "true"],
    );
    // 6: the lock is held by someone else (3 would mean no answer).
    assert_eq!(second.code, Some(6));
    assert_eq!(
        second.stderr,
        "anykv: lock \"jobs/nightly\" is held by another client: gave up after 1s\n"
    );
    let json = at(
        &url,
        &["--json", "lock", "jobs/nightly", "--timeout", "500ms"],
    );
    assert_eq!(json.code, Some(6));
    assert_eq!(json.json()["error"]["kind"], json!("LockTimeout"));

    first.signal("INT");
    let (code, _, err) = first.finish(SHORT);
    assert_eq!(
        (code, err),
        (Some(130), vec!["anykv: interrupted".to_string()])
    );

    let third = at(
        &url,
        &[
            "lock",
            "jobs/nightly",
            "--timeout",
            "10s",
            "--",
            "sh",
            "-c",
            "echo \"$ANYKV_LOCK_TOKEN\"",
        ],
    );
    let next: u64 = ok(&third).trim_end().parse().expect("a fencing token");
    assert!(next > token, "fencing tokens increase: {token} then {next}");
}

#[test]
fn lease_keys_live_while_the_command_runs() {
    let url = url();
    let mut cmd = command(&[
        "--url",
        &url,
        "lease",
        "--ttl",
        "5s",
        "svc/web-1=10.0.0.1:80",
        "svc/web-2=a=b",
        "--",
        "sh",
        "-c",
        "\"$ANYKV\" --url \"$URL\" ls svc",
    ]);
    cmd.env("ANYKV", common::BIN).env("URL", &url);
    let r = run(cmd, None, SHORT);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.out(), "svc/web-1\t10.0.0.1:80\nsvc/web-2\ta=b\n");
    assert_eq!(ok(&at(&url, &["ls", "svc"])), "");

    let failing = at(
        &url,
        &[
            "lease", "--ttl", "5s", "svc/x=1", "--", "sh", "-c", "exit 3",
        ],
    );
    assert_eq!((failing.code, failing.stderr), (Some(3), String::new()));
    assert_eq!(ok(&at(&url, &["ls", "svc"])), "");
}

#[test]
fn lease_without_a_command_holds_until_ctrl_c() {
    let url = url();
    let holder = Running::start(&["--url", &url, "lease", "--ttl", "5s", "svc/a=1", "svc/b=2"]);
    let id = holder.stdout_line(SHORT);
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id:?}"
    );
    assert_eq!(
        holder.stderr_line(SHORT),
        format!("anykv: 2 keys bound to lease {id} (ttl 5s); Ctrl-C to revoke")
    );
    assert_eq!(
        ok(&at(&url, &["ls", "svc", "--keys-only"])),
        "svc/a\nsvc/b\n"
    );
    holder.signal("INT");
    let (code, _, err) = holder.finish(SHORT);
    assert_eq!(
        (code, err),
        (Some(130), vec!["anykv: interrupted".to_string()])
    );
    assert_eq!(ok(&at(&url, &["ls", "svc"])), "");
}

#[test]
fn an_unreachable_server_exits_3_without_the_password() {
    let started = std::time::Instant::now();
    let r = anykv(&[
        "--url",
        "etcd://root:hunter2@127.0.0.1:1/x?connect_timeout=500ms",
        "get",
        "k",
    ]);
    assert_eq!(r.code, Some(3));
    assert_eq!(r.out(), "");
    assert!(
        r.stderr.starts_with(
            "anykv: cannot open etcd://root:***@127.0.0.1:1/x?connect_timeout=500ms: etcd: unavailable: "
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("hunter2"));
    assert!(started.elapsed() < Duration::from_secs(20));

    let json = anykv(&[
        "--json",
        "--url",
        "etcd://root:hunter2@127.0.0.1:1/x?connect_timeout=500ms",
        "conformance",
    ]);
    assert_eq!(json.code, Some(3));
    assert_eq!(json.json()["error"]["kind"], json!("Unavailable"));
    assert_eq!(json.json()["error"]["exit_code"], json!(3));
    assert!(!json.out().contains("hunter2") && !json.stderr.contains("hunter2"));
}

#[test]
fn conformance_interrupted_cleans_up_after_itself() {
    let url = url();
    let suite = Running::start(&["conformance", &url, "--filter", "watch"]);
    let header = suite.stderr_line(SHORT);
    assert!(header.starts_with("anykv: running "), "{header}");
    let first = suite.stdout_line(Duration::from_secs(60));
    suite.signal("INT");
    let (code, out, err) = suite.finish(Duration::from_secs(180));
    assert_eq!(code, Some(130));
    assert_eq!(err.last().map(String::as_str), Some("anykv: interrupted"));
    let total = out.last().expect("a total line");
    let run = out.len(); // the first line, the others, minus the total
    assert!(
        total.starts_with(&format!("interrupted: {run} of ")),
        "{total} after {first}"
    );
    assert_eq!(ok(&at(&url, &["ls", "--keys-only"])), "");
}

/// A lease or lock that cannot be kept alive (the server froze) is lost:
/// the command is stopped with SIGTERM and anykv exits with 1.
#[test]
fn a_lost_lease_or_lock_stops_the_command() {
    let server = anykv_testserver::etcd::EtcdServer::start_new();
    let url = format!("{}/lost?request_timeout=1s", server.url());
    let holder = Running::start(&[
        "--url",
        &url,
        "lease",
        "--ttl",
        "2s",
        "k=v",
        "--",
        "sh",
        "-c",
        "echo \"$ANYKV_LEASE_ID\"; exec sleep 60",
    ]);
    let id = holder.stdout_line(SHORT);
    server.pause();
    let (code, out, err) = holder.finish(Duration::from_secs(60));
    server.resume();
    assert_eq!(
        (code, out, err),
        (
            Some(1),
            vec![],
            vec![
                format!("anykv: lease {id} was lost: stopping the command"),
                format!("anykv: lease {id} was lost before the end"),
            ]
        )
    );

    let holder = Running::start(&[
        "--url",
        &url,
        "lock",
        "l",
        "--ttl",
        "2s",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 60",
    ]);
    assert_eq!(holder.stdout_line(SHORT), "ready");
    server.pause();
    let (code, out, err) = holder.finish(Duration::from_secs(60));
    server.resume();
    assert_eq!(
        (code, out, err),
        (
            Some(1),
            vec![],
            vec![
                "anykv: lock \"l\" was lost: stopping the command".to_string(),
                "anykv: lock \"l\" was lost before the end".to_string(),
            ]
        )
    );
}

/// A leader killed with SIGKILL never resigns: the second candidate leads
/// once the first one's lease (--ttl 2s) expires, with a larger token.
#[test]
fn elect_a_second_candidate_leads_after_the_first_is_killed() {
    let url = url();
    let first = Running::start(&["--url", &url, "elect", "jobs", "--ttl", "2s"]);
    let token: u64 = first.stdout_line(SHORT).parse().expect("a token");
    let second = Running::start(&["--url", &url, "--json", "elect", "jobs", "--ttl", "2s"]);
    std::thread::sleep(Duration::from_millis(500));
    first.signal("KILL");
    let started = std::time::Instant::now();
    let line: serde_json::Value = serde_json::from_str(&second.stdout_line(SHORT)).expect("JSON");
    assert_eq!(line["election"], json!("jobs"));
    assert!(line["fencing_token"].as_u64().expect("a token") > token);
    assert!(started.elapsed() < Duration::from_secs(15));
    second.signal("TERM");
    let (code, _, _) = second.finish(SHORT);
    assert_eq!(code, Some(143));
}

/// What `services register` holds in one process, `services list` sees in
/// another; after the holder stops, the instance is gone.
#[test]
fn services_registered_in_one_process_are_listed_in_another() {
    let url = url();
    let holder = Running::start(&[
        "--url", &url, "services", "register", "web", "w1", "10.0.0.1", "8080", "--meta", "zone=a",
        "--weight", "3",
    ]);
    // `connecting` may come first, or be overtaken by `registered`.
    let mut line = holder.stdout_line(SHORT);
    if line == "connecting" {
        line = holder.stdout_line(SHORT);
    }
    assert!(line.starts_with("registered\tlease "), "{line}");
    assert_eq!(
        ok(&at(&url, &["services", "list", "web"])),
        "w1\t10.0.0.1:8080\tweight=3\tenabled\tzone=a\n"
    );
    let listed = at(&url, &["--json", "services", "list", "web"]).json();
    assert_eq!(
        listed,
        json!([{"service": "web", "id": "w1", "address": "10.0.0.1", "port": 8080,
                "metadata": {"zone": "a"}, "weight": 3, "enabled": true}])
    );
    holder.signal("TERM");
    let (code, _, _) = holder.finish(SHORT);
    assert_eq!(code, Some(143));
    assert_eq!(ok(&at(&url, &["services", "list", "web"])), "");
}

/// A leader whose key vanishes has lost: its command gets SIGTERM, then
/// SIGKILL after --grace when it ignores SIGTERM, and anykv exits with 1.
#[test]
fn elect_stops_its_command_when_leadership_is_lost() {
    let url = url();
    let leader = Running::start(&[
        "--url",
        &url,
        "elect",
        "jobs",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; exec sleep 30",
    ]);
    assert_eq!(leader.stdout_line(SHORT), "ready");
    assert_eq!(ok(&at(&url, &["rm", "--tree", "elections/jobs"])), "1\n");
    let (code, _, err) = leader.finish(SHORT);
    assert_eq!(
        (code, err),
        (
            Some(1),
            vec![
                "anykv: leadership of \"jobs\" was lost: stopping the command".to_string(),
                "anykv: the command outlived its grace of 1s: killing it".to_string(),
                "anykv: leadership of \"jobs\" was lost before the end".to_string(),
            ]
        )
    );
}

/// Keys written straight into etcd with etcdctl under the store's root:
/// one that keeps the key rules is an ordinary key; `a//b` and a key with a
/// newline break them, so `ls` lists them escaped and names them on
/// standard error, and `get` refuses them; a key that is not UTF-8 is
/// skipped by the backend.
#[test]
fn keys_written_by_etcdctl_that_break_the_rules() {
    if std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no etcdctl");
        return;
    }
    let base = anykv_testserver::etcd::shared_url();
    let root = anykv_testserver::unique_name("cli");
    let url = format!("{base}/{root}");
    let endpoint = base
        .strip_prefix("etcd://")
        .unwrap_or(&base)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    for (key, value) in [
        (format!("{root}/x/good"), "1"),
        (format!("{root}/x//b"), "2"),
        (format!("{root}/x/new\nline"), "3"),
    ] {
        let done = std::process::Command::new("etcdctl")
            .args(["--endpoints", &endpoint, "put", &key, value])
            .output()
            .expect("run etcdctl");
        assert!(done.status.success(), "{done:?}");
    }
    let ls = at(&url, &["ls", "x"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert_eq!(ls.out(), "x//b\t2\nx/good\t1\nx/new\\nline\t3\n");
    assert_eq!(
        ls.stderr,
        "anykv: key x//b breaks anykv's key rules (another client wrote it): listed escaped; \
         get, put and rm cannot address it\n\
         anykv: key x/new\\nline breaks anykv's key rules (another client wrote it): listed \
         escaped; get, put and rm cannot address it\n"
    );
    assert_eq!(ok(&at(&url, &["get", "x/good"])), "1\n");
    let refused = at(&url, &["get", "x//b"]);
    assert_eq!(refused.code, Some(2));
    assert_eq!(
        refused.stderr,
        "anykv: invalid key \"x//b\": it has an empty segment\n"
    );
}

/// `status` against a real etcd: its one server, its version and role,
/// the revision, and the capabilities.
#[test]
fn status_shows_the_server_and_the_capabilities() {
    let url = url();
    let rev = put(&url, "s", "1");
    let status = at(&url, &["--json", "status"]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let v = status.json();
    assert_eq!(v["backend"], json!("etcd"));
    // What etcd's status reports is the etcd backend's; the CLI prints
    // whatever it says, in this shape.
    assert!(
        v["revision"].is_null() || v["revision"].as_u64().is_some_and(|r| r >= rev),
        "{v}"
    );
    for server in v["servers"].as_array().expect("servers") {
        assert!(server["address"].is_string(), "{v}");
        assert!(
            server["error"].is_string() || server["version"].is_string(),
            "{v}"
        );
    }
    assert_eq!(v["stats"]["locks"], json!(0));
    assert_eq!(v["capabilities"]["watch_resume"], json!(true));
    assert_eq!(v["capabilities"]["min_ttl_seconds"], json!(2.0));
    let text = at(&url, &["status"]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert_eq!(text.lines()[0], "backend\tetcd");
    assert!(
        text.lines()
            .contains(&"capability\tmin_ttl\t2s".to_string()),
        "{}",
        text.out()
    );
}
