//! `anykv txn` with no server: the binary on `memory://` for what one
//! process shows (output, JSON in and out, exit codes, malformed input);
//! [`anykv_cli::run`] on a named `memory://` store for what the store holds
//! afterwards (all or nothing), since a `memory://` store lives only as long
//! as one process; and separate processes on one `redb://` file.

mod common;

use anykv::{PutOptions, Store};
use anykv_cli::cli::Cli;
use anykv_cli::exit;
use clap::Parser;
use common::{anykv, anykv_with_stdin};
use serde_json::json;

/// Runs the tool in this process and returns its exit code.
fn run_here(args: &[&str]) -> u8 {
    let cli = Cli::try_parse_from(std::iter::once("anykv").chain(args.iter().copied()))
        .expect("arguments that parse");
    anykv_cli::run(cli)
}

/// A fresh named in-process store, its URL, and a runtime to read it.
fn named_store() -> (String, std::sync::Arc<dyn Store>, tokio::runtime::Runtime) {
    let url = format!(
        "memory://{}",
        anykv_testserver::unique_name("cli-txn").replace('/', "-")
    );
    let store = anykv::memory::MemoryStore::open_url(&url)
        .expect("a memory store")
        .into_dyn();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    (url, store, rt)
}

#[test]
fn a_successful_transaction_prints_every_result_at_one_revision() {
    let done = anykv(&[
        "--url",
        "memory://",
        "txn",
        "--if",
        "absent(jobs/7)",
        "--then",
        "put jobs/7 resize two.png",
        "--then",
        "put --ttl 30s lock/7 me",
        "--then",
        "get other",
        "--then",
        "del gone",
        "--else",
        "get jobs/7",
    ]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.lines(),
        [
            "SUCCEEDED",
            "revision\t1",
            "PUT\tjobs/7\t1",
            "PUT\tlock/7\t1",
            "GET\tother",
            "DELETE\tgone\tabsent",
        ]
    );
    assert_eq!(done.stderr, "");
}

#[test]
fn a_failing_compare_runs_the_else_branch_and_exits_with_5() {
    let failed = anykv(&[
        "--url",
        "memory://",
        "txn",
        "--if",
        "absent(a)",
        "--if",
        "rev(a) = 9",
        "--if",
        "value(a) = x",
        "--then",
        "put a 1",
        "--else",
        "get a",
        "--else",
        "put b 2",
    ]);
    assert_eq!(failed.code, Some(i32::from(exit::CONDITION_FAILED)));
    assert_eq!(
        failed.lines(),
        [
            "FAILED\tcompare 1\trev(a) = 9",
            "revision\t1",
            "GET\ta",
            "PUT\tb\t1"
        ]
    );
    assert_eq!(failed.stderr, "");
    let json = anykv(&[
        "--url",
        "memory://",
        "--json",
        "txn",
        "--if",
        "present(a)",
        "--then",
        "put a 1",
        "--else",
        "del a",
    ]);
    assert_eq!(json.code, Some(5));
    assert_eq!(
        json.json(),
        json!({"succeeded": false, "failed_compare": 0, "revision": null,
               "results": [{"op": "delete", "key": "a", "existed": false}]})
    );
}

#[test]
fn json_in_and_out() {
    let input = br#"{
        "compare": [{"key": "cfg", "absent": true}],
        "success": [
            {"put": {"key": "cfg", "value": "AP8=", "encoding": "base64"}},
            {"put": {"key": "note", "value": "hi"}},
            {"get": {"key": "old"}}
        ],
        "failure": []
    }"#;
    let done = anykv_with_stdin(
        &["--url", "memory://", "--json", "txn", "--json-in", "-"],
        input,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.json(),
        json!({"succeeded": true, "failed_compare": null, "revision": 1, "results": [
            {"op": "put", "key": "cfg", "revision": 1},
            {"op": "put", "key": "note", "revision": 1},
            {"op": "get", "key": "old", "found": false},
        ]})
    );
    let text = anykv_with_stdin(
        &["--url", "memory://", "txn", "--json-in", "-"],
        br#"{"success": [{"put": {"key": "k", "value": "two\nlines"}}]}"#,
    );
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert_eq!(text.lines(), ["SUCCEEDED", "revision\t1", "PUT\tk\t1"]);
}

#[test]
fn malformed_input_is_a_usage_error() {
    let bad_compare = anykv(&[
        "--url",
        "memory://",
        "txn",
        "--if",
        "rev(a) = x",
        "--then",
        "put a 1",
    ]);
    assert_eq!(bad_compare.code, Some(2));
    assert!(
        bad_compare
            .stderr
            .contains("the revision \"x\" is not a number"),
        "{}",
        bad_compare.stderr
    );
    let bad_op = anykv(&["--url", "memory://", "txn", "--then", "rm a"]);
    assert_eq!(bad_op.code, Some(2));
    assert!(bad_op.stderr.contains("expected put"), "{}", bad_op.stderr);
    let bad_key = anykv(&["--url", "memory://", "txn", "--then", "get a//b"]);
    assert_eq!(bad_key.code, Some(2));
    let twice = anykv(&[
        "--url",
        "memory://",
        "--json",
        "txn",
        "--then",
        "put a 1",
        "--then",
        "get a",
    ]);
    assert_eq!(twice.code, Some(2));
    assert_eq!(twice.json()["error"]["kind"], json!("InvalidArgument"));
    let mixed = anykv(&[
        "--url",
        "memory://",
        "txn",
        "--json-in",
        "-",
        "--then",
        "get a",
    ]);
    assert_eq!(mixed.code, Some(2));
    let bad_json = anykv_with_stdin(
        &["--url", "memory://", "txn", "--json-in", "-"],
        br#"{"success": [{"put": {"key": "a", "value": "1", "colour": "red"}}]}"#,
    );
    assert_eq!(bad_json.code, Some(2));
    assert_eq!(
        bad_json.stderr,
        "anykv: --json-in: success[0].put: unknown member \"colour\" \
         (expected key, value, encoding, ttl, lease)\n"
    );
    let not_json = anykv_with_stdin(&["--url", "memory://", "txn", "--json-in", "-"], b"put a 1");
    assert_eq!(not_json.code, Some(2));
    assert!(
        not_json
            .stderr
            .starts_with("anykv: --json-in: the input is not JSON"),
        "{}",
        not_json.stderr
    );
    let too_many: Vec<String> = (0..=anykv::DEFAULT_MAX_TXN_OPS)
        .flat_map(|i| ["--then".to_string(), format!("get k{i}")])
        .collect();
    let mut args = vec!["--url", "memory://", "txn"];
    args.extend(too_many.iter().map(String::as_str));
    let over = anykv(&args);
    assert_eq!(over.code, Some(2), "{}", over.stderr);
    assert!(over.stderr.contains("limit"), "{}", over.stderr);
}

#[test]
fn help_documents_the_grammar_the_schema_and_the_exit_code() {
    let help = anykv(&["txn", "--help"]);
    assert_eq!(help.code, Some(0));
    let out = help.out();
    for needle in [
        "rev(KEY) = N",
        "absent(KEY)",
        "value(KEY) = VALUE",
        "put [--ttl DURATION] [--lease ID] KEY VALUE",
        "--json-in",
        "\"compare\"",
        "FAILED<TAB>compare I<TAB>COMPARE",
        "Exit status: 0 when the compares held, 5 when one did not",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}

/// Nothing of a transaction whose compare fails, or whose lease is gone,
/// is written; every write of one that succeeds shares one revision.
#[test]
fn all_or_nothing_in_the_store() {
    let (url, store, rt) = named_store();
    let first = rt
        .block_on(store.put("a", "1".into(), PutOptions::new()))
        .expect("a put");
    let read = |key: &str| {
        rt.block_on(store.get(key))
            .expect("a read")
            .map(|p| (String::from_utf8_lossy(&p.value).into_owned(), p.revision))
    };

    let code = run_here(&[
        "--url",
        &url,
        "txn",
        "--if",
        &format!("rev(a) = {}", first + 1),
        "--then",
        "put x 1",
        "--then",
        "put y 2",
        "--then",
        "del a",
    ]);
    assert_eq!(code, exit::CONDITION_FAILED);
    assert_eq!(
        (read("x"), read("y"), read("a")),
        (None, None, Some(("1".into(), first)))
    );

    // A put bound to a lease that does not exist fails the whole
    // transaction; the other writes are not made either.
    let code = run_here(&[
        "--url",
        &url,
        "txn",
        "--then",
        "put x 1",
        "--then",
        "put --lease 987654321 y 2",
    ]);
    assert_eq!(code, exit::FAILURE);
    assert_eq!((read("x"), read("y")), (None, None));

    // Malformed input: nothing is sent.
    let code = run_here(&["--url", &url, "txn", "--then", "put x 1", "--then", "get x"]);
    assert_eq!(code, exit::USAGE);
    assert_eq!(read("x"), None);

    let code = run_here(&[
        "--url",
        &url,
        "txn",
        "--if",
        &format!("rev(a) = {first}"),
        "--if",
        "value(a) = 1",
        "--then",
        "put x 1",
        "--then",
        "put y 2",
        "--then",
        "del a",
    ]);
    assert_eq!(code, exit::OK);
    let revision = first + 1;
    assert_eq!(
        (read("x"), read("y"), read("a")),
        (
            Some(("1".into(), revision)),
            Some(("2".into(), revision)),
            None
        )
    );
}

/// Across `anykv` processes on one redb file: a transaction whose compare
/// fails writes nothing, one that holds writes everything at one revision,
/// and a compare-and-swap loop of separate processes sees each other's
/// writes.
#[test]
fn all_or_nothing_across_processes_on_a_redb_file() {
    let dir = anykv_testserver::temp_dir("anykv-cli-txn-");
    let url = format!("redb://{}/txn.redb/app", dir.path().display());
    let put = anykv(&["--url", &url, "put", "job", "queued"]);
    assert_eq!((put.code, put.out()), (Some(0), "1\n".to_string()));
    let put = anykv(&["--url", &url, "put", "cfg", "fast"]);
    assert_eq!((put.code, put.out()), (Some(0), "2\n".to_string()));

    let stale = anykv(&[
        "--url",
        &url,
        "txn",
        "--if",
        "rev(job) = 7",
        "--then",
        "put job running",
        "--then",
        "put worker/1 job",
        "--else",
        "get job",
    ]);
    assert_eq!(stale.code, Some(5), "{}", stale.stderr);
    assert_eq!(
        stale.lines(),
        ["FAILED\tcompare 0\trev(job) = 7", "GET\tjob\t1\tqueued"]
    );
    let listed = anykv(&["--url", &url, "ls"]);
    assert_eq!(listed.out(), "cfg\tfast\njob\tqueued\n");

    let took = anykv(&[
        "--url",
        &url,
        "--json",
        "txn",
        "--if",
        "rev(job) = 1",
        "--if",
        "absent(worker/1)",
        "--then",
        "put job running",
        "--then",
        "put worker/1 job",
        "--then",
        "get cfg",
    ]);
    assert_eq!(
        (took.code, took.json()),
        (
            Some(0),
            json!({"succeeded": true, "failed_compare": null, "revision": 3, "results": [
                {"op": "put", "key": "job", "revision": 3},
                {"op": "put", "key": "worker/1", "revision": 3},
                {"op": "get", "key": "cfg", "found": true, "value": "fast",
                 "encoding": "utf8", "revision": 2},
            ]})
        )
    );
    let again = anykv(&[
        "--url",
        &url,
        "txn",
        "--if",
        "rev(job) = 1",
        "--then",
        "put job running",
    ]);
    assert_eq!(
        (again.code, again.lines()),
        (Some(5), vec!["FAILED\tcompare 0\trev(job) = 1".to_string()])
    );
    let listed = anykv(&["--url", &url, "--json", "ls"]);
    assert_eq!(
        listed.json(),
        json!([
            {"key": "cfg", "value": "fast", "encoding": "utf8", "revision": 2},
            {"key": "job", "value": "running", "encoding": "utf8", "revision": 3},
            {"key": "worker/1", "value": "job", "encoding": "utf8", "revision": 3},
        ])
    );
}
