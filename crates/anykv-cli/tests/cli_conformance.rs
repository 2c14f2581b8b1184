//! `anykv conformance` as a process against each backend: every case is
//! printed once, the total adds up, and the exit code says whether any
//! case failed. The server tests use the shared test servers (or
//! `ANYKV_ETCD_URL`, `ANYKV_REDIS_URL`, `ANYKV_ZOOKEEPER_URL`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{parse_case_line, run};

/// A whole suite may take a while on a busy machine.
const SUITE_LIMIT: Duration = Duration::from_secs(600);

/// What one run printed: each case's outcome word and reason, by name.
struct Run {
    code: Option<i32>,
    cases: BTreeMap<String, (String, Option<String>)>,
    total: String,
    stderr: String,
}

/// The example `anykv_with_broken`: `anykv` plus `broken-memory://`.
/// `cargo test` builds examples next to the test binaries' directory.
fn anykv_with_broken() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("deps");
    let dir = deps.parent().expect("the profile directory");
    dir.join("examples")
        .join(format!("anykv_with_broken{}", std::env::consts::EXE_SUFFIX))
}

fn conformance(url: &str) -> Run {
    conformance_with(common::command(&["conformance", url]))
}

fn conformance_with(cmd: std::process::Command) -> Run {
    let finished = run(cmd, None, SUITE_LIMIT);
    let mut lines = finished.lines();
    let total = lines.pop().expect("a total line");
    let mut cases = BTreeMap::new();
    for line in &lines {
        let (word, name, reason) = parse_case_line(line);
        assert!(
            cases.insert(name.clone(), (word, reason)).is_none(),
            "{name} printed twice"
        );
    }
    let all: Vec<String> = anykv_conformance::all_cases()
        .iter()
        .map(|c| c.name.to_owned())
        .collect();
    assert_eq!(lines.len(), all.len(), "one line per case");
    assert_eq!(
        cases.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = all.clone();
            sorted.sort();
            sorted
        },
        "every case printed"
    );
    Run {
        code: finished.code,
        cases,
        total,
        stderr: finished.stderr,
    }
}

fn count(run: &Run, word: &str) -> usize {
    run.cases.values().filter(|(w, _)| w == word).count()
}

fn assert_all_pass_except(run: &Run, unsupported: &[(&str, &str)]) {
    let failed: Vec<_> = run.cases.iter().filter(|(_, (w, _))| w == "FAIL").collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
    let actual: Vec<(String, String)> = run
        .cases
        .iter()
        .filter(|(_, (w, _))| w == "unsupported")
        .map(|(n, (_, r))| (n.clone(), r.clone().unwrap_or_default()))
        .collect();
    let expected: Vec<(String, String)> = unsupported
        .iter()
        .map(|(n, r)| ((*n).to_owned(), (*r).to_owned()))
        .collect();
    assert_eq!(actual, expected);
    let n = anykv_conformance::all_cases().len();
    assert_eq!(
        run.total,
        format!(
            "{n} cases: {} passed, 0 failed, {} unsupported",
            n - unsupported.len(),
            unsupported.len()
        )
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
}

#[test]
fn conformance_memory_passes() {
    let run = conformance("memory://");
    assert_all_pass_except(&run, &[]);
    assert_eq!(
        run.stderr,
        format!(
            "anykv: running {} conformance cases against memory://anykv-cli-conformance \
             (8 at a time; Ctrl-C stops)\n",
            anykv_conformance::all_cases().len()
        )
    );
}

/// The suite deleted everything it wrote under the URL's root.
fn assert_root_empty(url: &str) {
    let ls = common::anykv(&["--url", url, "ls", "--keys-only"]);
    assert_eq!(
        (ls.code, ls.out(), ls.stderr),
        (Some(0), String::new(), String::new())
    );
}

/// A server this process does not own cannot be frozen or restarted from
/// the command line: the fault cases say so, naming the hook.
const NO_FAULT_HOOKS: &[(&str, &str)] = &[
    ("fault_pause_calls_fail_typed", "the factory has no pause hook (StoreFactory::pause_server): conformance: pause_server is not supported: the factory offers no pause_server hook"),
    ("fault_pause_lock_lost_before_another_holds", "the factory has no pause hook (StoreFactory::pause_server): conformance: pause_server is not supported: the factory offers no pause_server hook"),
    ("fault_pause_store_recovers", "the factory has no pause hook (StoreFactory::pause_server): conformance: pause_server is not supported: the factory offers no pause_server hook"),
    ("fault_pause_watch_continues_or_ends", "the factory has no pause hook (StoreFactory::pause_server): conformance: pause_server is not supported: the factory offers no pause_server hook"),
    ("fault_restart_store_and_watch_recover", "the factory has no restart hook (StoreFactory::restart_server): conformance: restart_server is not supported: the factory offers no restart_server hook"),
];

#[test]
fn conformance_etcd_passes() {
    let url = format!(
        "{}/{}",
        anykv_testserver::etcd::shared_url(),
        anykv_testserver::unique_name("cli-suite")
    );
    assert_all_pass_except(&conformance(&url), NO_FAULT_HOOKS);
    assert_root_empty(&url);
}

#[test]
fn conformance_redis_passes() {
    let url = format!(
        "{}/0/{}",
        anykv_testserver::redis::shared_url(),
        anykv_testserver::unique_name("cli-suite")
    );
    assert_all_pass_except(&conformance(&url), NO_FAULT_HOOKS);
    assert_root_empty(&url);
}

#[test]
fn conformance_zookeeper_passes_with_capability_and_hook_unsupported() {
    let url = format!(
        "{}/{}",
        anykv_testserver::zookeeper::shared_url(),
        anykv_testserver::unique_name("cli-suite")
    );
    let why = "the backend's capabilities say watch_resume = false";
    let every = "the backend's capabilities say watch_every_revision = false";
    let mut expected = NO_FAULT_HOOKS.to_vec();
    expected.extend([
        ("load_watch_every_write_exactly", every),
        ("load_watch_resume_while_writing", why),
        ("watch_resume_compacted", why),
        ("watch_resume_from_revision", why),
        ("watch_tree_resume_from_revision", why),
    ]);
    expected.sort();
    assert_all_pass_except(&conformance(&url), &expected);
    assert_root_empty(&url);
}

/// The real `anykv` has no broken backend: `broken-memory://` is an
/// unknown scheme.
#[test]
fn the_anykv_binary_refuses_the_broken_backend() {
    for args in [
        &["conformance", "broken-memory://"][..],
        &["--url", "broken-memory://", "get", "k"][..],
    ] {
        let done = common::anykv(args);
        assert_eq!(done.code, Some(2), "{args:?}");
        assert!(
            done.stderr
                .starts_with("anykv: cannot open broken-memory://")
                && done.stderr.contains(
                    "configuration error: no backend is registered for the scheme \
                     \"broken-memory\""
                ),
            "{args:?}: {}",
            done.stderr
        );
    }
}

/// `broken-memory://` (only in the example `anykv_with_broken`) loses
/// compare-and-swap and delete events: the suite must fail it, naming why.
#[test]
fn conformance_broken_backend_fails() {
    let mut cmd = std::process::Command::new(anykv_with_broken());
    cmd.args(["conformance", "broken-memory://"])
        .env_remove("ANYKV_URL");
    let run = conformance_with(cmd);
    assert_eq!(run.code, Some(1));
    let n = anykv_conformance::all_cases().len();
    let failed = count(&run, "FAIL");
    assert_eq!(
        run.total,
        format!(
            "{n} cases: {} passed, {failed} failed, 0 unsupported",
            n - failed
        )
    );
    assert_eq!(
        run.stderr.lines().last(),
        Some(format!("anykv: {failed} of {n} conformance cases failed").as_str())
    );
    // A FAIL line's reason is what went wrong, then the rule the case checks.
    let reason = |name: &str| match run.cases.get(name) {
        Some((word, Some(reason))) if word == "FAIL" => {
            let rule = anykv_conformance::all_cases()
                .into_iter()
                .find(|c| c.name == name)
                .map(|c| c.rule)
                .unwrap_or_default();
            let suffix = format!(" (the rule: {rule})");
            match reason.strip_suffix(&suffix) {
                Some(what) => what.to_owned(),
                None => panic!("{name}: the FAIL line does not end with {suffix:?}: {reason}"),
            }
        }
        other => panic!("{name}: expected a FAIL line, got {other:?}"),
    };
    assert!(
        reason("atomic_put_stale_revision").ends_with("expected a KeyModified error, got Ok"),
        "{}",
        reason("atomic_put_stale_revision")
    );
    assert!(
        reason("atomic_put_missing_key").ends_with("expected a KeyNotFound error, got Ok"),
        "{}",
        reason("atomic_put_missing_key")
    );
    assert_eq!(reason("watch_delete_event"), "no watch event within 10s");
    assert_eq!(
        run.cases.get("basic_put_get_roundtrip"),
        Some(&("pass".to_owned(), None)),
        "what is not broken passes"
    );
}
