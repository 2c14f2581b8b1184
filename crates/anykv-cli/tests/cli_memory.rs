//! The `anykv` binary against the in-process store, and everything that
//! needs no server: help, usage errors, bad URLs, lock and lease around a
//! command, Ctrl-C. A `memory://` store lives only as long as one
//! process, so nothing here reads in one process what another wrote.

mod common;

use std::time::Duration;

use anykv_cli::exit::EXIT_CODES_HELP;
use common::{anykv, command, parse_case_line, run, Running, SHORT};
use serde_json::json;

#[test]
fn help_documents_every_command_and_the_exit_codes() {
    let help = anykv(&["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(
        help.out().ends_with(&format!("{EXIT_CODES_HELP}\n")),
        "{}",
        help.out()
    );
    for scheme in [
        "memory://",
        "etcd://",
        "etcds://",
        "redis://",
        "rediss://",
        "redis+sentinel://",
        "redis+cluster://",
        "zk://",
        "redb://",
    ] {
        assert!(help.out().contains(scheme), "{scheme}");
    }
    // The exit-code table is in the top-level help only.
    for cmd in [
        "get",
        "put",
        "rm",
        "ls",
        "watch",
        "lock",
        "lease",
        "elect",
        "services",
        "conformance",
        "txn",
        "status",
        "completions",
    ] {
        let h = anykv(&[cmd, "--help"]);
        assert_eq!(h.code, Some(0), "{cmd} --help");
        assert!(!h.out().contains("Exit codes:"), "{cmd}");
    }
    let codes = anykv(&["exit-codes"]);
    assert_eq!(
        (codes.code, codes.out()),
        (Some(0), format!("{EXIT_CODES_HELP}\n"))
    );
    assert!(codes
        .out()
        .contains("  6    the lock is held by another client"));
    let v = anykv(&["--version"]);
    assert_eq!(
        (v.code, v.out()),
        (Some(0), format!("anykv {}\n", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn the_url_comes_from_the_option_or_the_environment() {
    let none = anykv(&["get", "k"]);
    assert_eq!(none.code, Some(2));
    assert_eq!(
        none.stderr,
        "anykv: no store URL: pass --url URL or set ANYKV_URL (for example memory:// or \
         etcd://127.0.0.1:2379/app)\n"
    );
    let mut cmd = command(&["put", "k", "v"]);
    cmd.env("ANYKV_URL", "memory://");
    let put = run(cmd, None, SHORT);
    assert_eq!((put.code, put.out()), (Some(0), "1\n".to_string()));
    let flag = anykv(&["put", "k", "v", "--url", "memory://"]);
    assert_eq!((flag.code, flag.out()), (Some(0), "1\n".to_string()));
}

#[test]
fn the_help_never_shows_the_environment_url() {
    let mut cmd = command(&["--help"]);
    cmd.env("ANYKV_URL", "etcd://root:hunter2@127.0.0.1:2379/app");
    let help = run(cmd, None, SHORT);
    assert_eq!(help.code, Some(0));
    assert!(!help.out().contains("hunter2"));
    assert!(help.out().contains("[env: ANYKV_URL]"));
}

#[test]
fn bad_urls_are_usage_errors_without_passwords() {
    let cases = [
        (
            "nosuch://user:hunter2@host/",
            "anykv: cannot open nosuch://user:***@host/: configuration error: no backend is \
             registered for the scheme \"nosuch\"; registered: ",
        ),
        (
            "memory://user:hunter2@name/",
            "anykv: cannot open memory://user:***@name/: configuration error: a memory:// URL \
             takes no user, password or port\n",
        ),
        (
            "memory://n/r?bogus=1",
            "anykv: cannot open memory://n/r?bogus=1: configuration error: unknown parameter \
             \"bogus\" in a memory:// URL; known: history, history_bytes, max_value_size, \
             request_timeout, connect_timeout\n",
        ),
        (
            "memory://n/a//b",
            "anykv: cannot open memory://n/a//b: configuration error: ",
        ),
    ];
    for (url, expected) in cases {
        for json in [false, true] {
            let mut args = vec!["--url", url, "get", "k"];
            if json {
                args.insert(0, "--json");
            }
            let r = anykv(&args);
            assert_eq!(r.code, Some(2), "{url}: {}", r.stderr);
            assert!(r.stderr.starts_with(expected), "{url}: {}", r.stderr);
            assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
            assert!(!r.out().contains("hunter2"), "{}", r.out());
            if json {
                let e = r.json();
                assert_eq!(e["error"]["kind"], json!("Config"));
                assert_eq!(e["error"]["exit_code"], json!(2));
                assert_eq!(
                    format!("anykv: {}\n", e["error"]["message"].as_str().unwrap()),
                    r.stderr
                );
            } else {
                assert_eq!(r.out(), "");
            }
        }
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let key = anykv(&["--url", "memory://", "put", "a//b", "v"]);
    assert_eq!(key.code, Some(2));
    assert_eq!(
        key.stderr,
        "anykv: invalid key \"a//b\": it has an empty segment\n"
    );
    let ttl = anykv(&["--url", "memory://", "put", "k", "v", "--ttl", "soon"]);
    assert_eq!(ttl.code, Some(2));
    assert_eq!(
        ttl.stderr.lines().next(),
        Some(
            "error: invalid value 'soon' for '--ttl <DURATION>': \"soon\" is not a duration \
             such as 250ms, 5s, 1m30s or 2h (expected number at 0)"
        )
    );
    let both = anykv(&["--url", "memory://", "put", "k", "v", "--file", "/dev/null"]);
    assert_eq!(both.code, Some(2));
    let missing = anykv(&["--url", "memory://", "put", "k", "--file", "/nonexistent/v"]);
    assert_eq!(missing.code, Some(2));
    assert_eq!(
        missing.stderr,
        "anykv: cannot read \"/nonexistent/v\": No such file or directory (os error 2)\n"
    );
    let pair = anykv(&["--url", "memory://", "lease", "--ttl", "5s", "novalue"]);
    assert_eq!(pair.code, Some(2));
    let unknown = anykv(&["frobnicate"]);
    assert_eq!(unknown.code, Some(2));
}

#[test]
fn a_memory_store_lives_in_one_process() {
    let get = anykv(&["--url", "memory://", "get", "k"]);
    assert_eq!((get.code, get.out()), (Some(4), String::new()));
    assert_eq!(get.stderr, "anykv: memory: key \"k\" not found\n");
    let rm = anykv(&["--url", "memory://", "rm", "k"]);
    assert_eq!(rm.code, Some(4));
    assert_eq!(rm.stderr, "anykv: memory: key \"k\" not found\n");
    let tree = anykv(&["--url", "memory://", "--json", "rm", "--tree", "/"]);
    assert_eq!(tree.code, Some(0));
    assert_eq!(tree.json(), json!({"prefix": "/", "deleted": 0}));
    let ls = anykv(&["--url", "memory://", "--json", "ls"]);
    assert_eq!((ls.code, ls.json()), (Some(0), json!([])));
    let put = anykv(&["--url", "memory://", "--json", "put", "k", "v"]);
    assert_eq!(put.json(), json!({"key": "k", "revision": 1}));
    let create = anykv(&["--url", "memory://", "put", "k", "v", "--create-only"]);
    assert_eq!((create.code, create.out()), (Some(0), "1\n".to_string()));
    let cas = anykv(&["--url", "memory://", "put", "k", "v", "--if-revision", "1"]);
    assert_eq!(cas.code, Some(4));
    assert_eq!(cas.stderr, "anykv: memory: key \"k\" not found\n");
}

#[test]
fn lock_runs_a_command_with_its_token_and_exit_status() {
    let r = anykv(&[
        "--url",
        "memory://",
        "lock",
        "jobs/nightly",
        "--",
        "sh",
        "-c",
        "echo \"$ANYKV_LOCK_NAME $ANYKV_LOCK_TOKEN\"; exit 7",
    ]);
    assert_eq!(r.code, Some(7));
    assert_eq!(r.out(), "jobs/nightly 1\n");
    assert_eq!(r.stderr, "");

    let missing = anykv(&["--url", "memory://", "lock", "l", "--", "/nonexistent/cmd"]);
    assert_eq!(missing.code, Some(127));
    assert_eq!(
        missing.stderr,
        "anykv: cannot run \"/nonexistent/cmd\": No such file or directory (os error 2)\n"
    );
}

#[test]
fn lock_without_a_command_holds_until_ctrl_c() {
    let holder = Running::start(&["--url", "memory://", "--json", "lock", "l"]);
    assert_eq!(
        holder.stdout_line(SHORT),
        json!({"lock": "l", "fencing_token": 1}).to_string()
    );
    holder.signal("INT");
    let (code, out, err) = holder.finish(SHORT);
    assert_eq!(code, Some(130));
    assert_eq!(
        out,
        vec![
            json!({"error": {"kind": "Interrupted", "message": "interrupted", "exit_code": 130}})
                .to_string()
        ]
    );
    assert_eq!(err, vec!["anykv: interrupted"]);
}

#[test]
fn lock_passes_ctrl_c_on_to_its_command() {
    let holder = Running::start(&[
        "--url",
        "memory://",
        "lock",
        "l",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 30",
    ]);
    assert_eq!(holder.stdout_line(SHORT), "ready");
    holder.signal("INT");
    let (code, out, err) = holder.finish(SHORT);
    // The command died of SIGINT: 128 + 2, as a shell reports it.
    assert_eq!((code, out, err), (Some(130), vec![], vec![]));
}

#[test]
fn lease_runs_a_command_with_its_id() {
    let r = anykv(&[
        "--url",
        "memory://",
        "lease",
        "--ttl",
        "5s",
        "svc/a=1",
        "svc/b=x=2",
        "--",
        "sh",
        "-c",
        "test -n \"$ANYKV_LEASE_ID\" && echo has-id; exit 3",
    ]);
    assert_eq!(
        (r.code, r.out(), r.stderr),
        (Some(3), "has-id\n".into(), String::new())
    );
}

#[test]
fn lease_without_a_command_holds_until_sigterm() {
    let holder = Running::start(&[
        "--url",
        "memory://",
        "--json",
        "lease",
        "--ttl",
        "5s",
        "a=1",
    ]);
    let granted: serde_json::Value =
        serde_json::from_str(&holder.stdout_line(SHORT)).expect("JSON");
    assert_eq!(granted["keys"], json!([{"key": "a", "revision": 1}]));
    assert_eq!(granted["ttl_seconds"], json!(5.0));
    assert!(granted["lease"].is_string());
    holder.signal("TERM");
    let (code, _, err) = holder.finish(SHORT);
    assert_eq!(
        (code, err),
        (Some(143), vec!["anykv: interrupted".to_string()])
    );
}

#[test]
fn watch_stops_cleanly_on_ctrl_c() {
    let watch = Running::start(&["--url", "memory://", "watch", "--tree"]);
    assert_eq!(watch.stderr_line(SHORT), "anykv: in sync at revision 0");
    watch.signal("INT");
    let (code, out, err) = watch.finish(SHORT);
    assert_eq!(
        (code, out, err),
        (Some(130), vec![], vec!["anykv: interrupted".to_string()])
    );
}

#[test]
fn conformance_stops_cleanly_on_ctrl_c_with_a_partial_total() {
    let suite = Running::start(&["conformance", "memory://"]);
    let n = anykv_conformance::all_cases().len();
    assert_eq!(
        suite.stderr_line(SHORT),
        format!(
            "anykv: running {n} conformance cases against memory://anykv-cli-conformance \
             (8 at a time; Ctrl-C stops)"
        )
    );
    let first = suite.stdout_line(SHORT);
    suite.signal("INT");
    let interrupted = suite.stderr_line(SHORT);
    assert!(
        interrupted.starts_with("anykv: interrupted: waiting for "),
        "{interrupted}"
    );
    let (code, mut out, err) = suite.finish(Duration::from_secs(120));
    assert_eq!(code, Some(130));
    assert_eq!(err, vec!["anykv: interrupted"]);
    out.insert(0, first);
    let total = out.pop().expect("a total line");
    let mut passed = 0;
    let mut unsupported = 0;
    for line in &out {
        match parse_case_line(line).0.as_str() {
            "pass" => passed += 1,
            "unsupported" => unsupported += 1,
            other => panic!("{other}: {line}"),
        }
    }
    assert!(out.len() < n, "{} of {n} cases ran", out.len());
    assert_eq!(
        total,
        format!(
            "interrupted: {} of {n} cases run: {passed} passed, 0 failed, {unsupported} unsupported",
            out.len()
        )
    );
}

#[test]
fn conformance_json_and_filter() {
    let r = anykv(&[
        "--json",
        "conformance",
        "memory://",
        "--filter",
        "atomic_put",
        "--concurrency",
        "2",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut expected: Vec<(String, String)> = anykv_conformance::all_cases()
        .iter()
        .filter(|c| c.name.contains("atomic_put"))
        .map(|c| (c.name.to_owned(), c.group.to_owned()))
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    let mut lines: Vec<serde_json::Value> = r
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let total = lines.pop().expect("a total object");
    assert_eq!(
        total,
        json!({
            "cases": expected.len(),
            "run": expected.len(),
            "passed": expected.len(),
            "failed": 0,
            "unsupported": 0,
            "interrupted": false,
        })
    );
    let mut names: Vec<(String, String)> = Vec::new();
    for case in &lines {
        assert_eq!(case["outcome"], json!("pass"), "{case}");
        assert!(case["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{case}");
        assert_eq!(case.get("reason"), None);
        let text = |field: &str| case[field].as_str().expect("a string").to_owned();
        names.push((text("case"), text("group")));
    }
    names.sort();
    assert_eq!(names, expected);

    let none = anykv(&["conformance", "memory://", "--filter", "no-such-case"]);
    assert_eq!(none.code, Some(2));
    assert_eq!(
        none.stderr,
        "anykv: no conformance case name contains \"no-such-case\"\n"
    );
    let no_url = anykv(&["conformance"]);
    assert_eq!(no_url.code, Some(2));
    assert_eq!(
        no_url.stderr,
        "anykv: no URL to test: give it as `anykv conformance URL`, with --url, or in ANYKV_URL\n"
    );
}

#[test]
fn elect_runs_a_command_while_leading() {
    let r = anykv(&[
        "--url",
        "memory://",
        "elect",
        "jobs",
        "--",
        "sh",
        "-c",
        "echo \"$ANYKV_ELECTION_NAME $ANYKV_ELECTION_TOKEN\"; exit 3",
    ]);
    assert_eq!(
        (r.code, r.out(), r.stderr),
        (Some(3), "jobs 1\n".into(), String::new())
    );
}

#[test]
fn elect_without_a_command_leads_until_sigterm() {
    let leader = Running::start(&[
        "--url",
        "memory://",
        "--json",
        "elect",
        "jobs",
        "--value",
        "10.0.0.1:80",
    ]);
    assert_eq!(
        leader.stdout_line(SHORT),
        json!({"election": "jobs", "fencing_token": 1, "value": "10.0.0.1:80"}).to_string()
    );
    leader.signal("TERM");
    let (code, _, err) = leader.finish(SHORT);
    assert_eq!(
        (code, err),
        (Some(143), vec!["anykv: interrupted".to_string()])
    );
}

#[test]
fn services_register_prints_its_status_until_ctrl_c() {
    let holder = Running::start(&[
        "--url",
        "memory://",
        "services",
        "register",
        "web",
        "w1",
        "10.0.0.1",
        "80",
        "--meta",
        "zone=a",
    ]);
    // `connecting` may come first, or be overtaken by `registered`.
    let mut line = holder.stdout_line(SHORT);
    if line == "connecting" {
        line = holder.stdout_line(SHORT);
    }
    assert!(line.starts_with("registered\tlease "), "{line}");
    holder.signal("INT");
    let (code, _, err) = holder.finish(SHORT);
    assert_eq!(
        (code, err),
        (Some(130), vec!["anykv: interrupted".to_string()])
    );
}

#[test]
fn services_list_and_watch_on_an_empty_store() {
    let r = anykv(&["--url", "memory://", "services", "list", "web"]);
    assert_eq!(
        (r.code, r.out(), r.stderr),
        (Some(0), String::new(), String::new())
    );
    let r = anykv(&["--url", "memory://", "--json", "services", "list", "web"]);
    assert_eq!((r.code, r.out()), (Some(0), "[]\n".to_string()));
    let watch = Running::start(&["--url", "memory://", "--json", "services", "watch", "web"]);
    assert_eq!(
        watch.stdout_line(SHORT),
        json!({"event": "synced"}).to_string()
    );
    watch.signal("INT");
    let (code, _, _) = watch.finish(SHORT);
    assert_eq!(code, Some(130));
}

/// A `redb://` file keeps what one `anykv` process wrote for the next:
/// revisions go on across processes, and `ls` sees every key.
#[test]
fn a_redb_file_keeps_keys_and_revisions_across_processes() {
    let dir = anykv_testserver::temp_dir("anykv-cli-redb-");
    let url = format!("redb://{}/cli.redb/app", dir.path().display());
    let first = anykv(&["--url", &url, "put", "a", "1"]);
    assert_eq!((first.code, first.out()), (Some(0), "1\n".to_string()));
    let second = anykv(&["--url", &url, "put", "b", "2"]);
    assert_eq!((second.code, second.out()), (Some(0), "2\n".to_string()));
    let got = anykv(&["--url", &url, "get", "a"]);
    assert_eq!((got.code, got.out()), (Some(0), "1\n".to_string()));
    let listed = anykv(&["--url", &url, "ls"]);
    assert_eq!(
        (listed.code, listed.out()),
        (Some(0), "a\t1\nb\t2\n".to_string())
    );
}
