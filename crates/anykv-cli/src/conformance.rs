//! `anykv conformance`: the conformance suite against a live store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anykv::{Error, Result, Store};
use anykv_conformance::{all_cases, run_case, CaseReport, Outcome, Report, UrlFactory};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::ConformanceArgs;
use crate::connect::{close_store, open_store};
use crate::exit::{CliError, FAILURE};
use crate::output::{self, one_line, Out};
use crate::signals::Interrupts;

/// The process-wide memory store a `memory://` URL without a name is
/// tested on: the suite opens several clients that must share data.
pub const MEMORY_NAME: &str = "anykv-cli-conformance";

/// How long deleting the suite's keys at the end may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL the suite runs on: `url` itself, except that a `memory://` URL
/// without a store name gets one ([`MEMORY_NAME`]), since every client of
/// a nameless URL would have a private store.
///
/// ```
/// use anykv_cli::conformance::suite_url;
/// assert_eq!(suite_url("memory://"), "memory://anykv-cli-conformance");
/// assert_eq!(suite_url("memory:///r?history=5"), "memory://anykv-cli-conformance/r?history=5");
/// assert_eq!(suite_url("memory://mine/r"), "memory://mine/r");
/// assert_eq!(suite_url("etcd://h:2379/r"), "etcd://h:2379/r");
/// ```
pub fn suite_url(url: &str) -> String {
    for scheme in ["memory", "broken-memory"] {
        if let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return format!("{scheme}://{MEMORY_NAME}{rest}");
            }
        }
    }
    url.to_owned()
}

/// `url` with `segment` appended to its path, before any query string.
///
/// ```
/// use anykv_cli::conformance::with_segment;
/// assert_eq!(with_segment("etcd://h:1/r/?x=1", "s"), "etcd://h:1/r/s?x=1");
/// assert_eq!(with_segment("memory://n", "s"), "memory://n/s");
/// ```
/// The name of the process-wide memory store a `memory://name/...` (or
/// `broken-memory://`) URL names: that store lives in this process, so the
/// fault cases can freeze and restart it. Servers elsewhere cannot be
/// frozen from here, and their fault cases report "unsupported".
pub fn in_process_store(url: &str) -> Option<String> {
    let parsed = anykv::parse_url(url).ok()?;
    let in_process = matches!(parsed.scheme(), "memory" | "broken-memory");
    let name = parsed.host_str().unwrap_or("");
    (in_process && !name.is_empty()).then(|| name.to_owned())
}

/// The pause, resume and restart hooks on the in-process store `name`.
fn with_in_process_faults(factory: UrlFactory, name: String) -> UrlFactory {
    let (p, r, x) = (name.clone(), name.clone(), name);
    factory
        .with_pause(
            move || {
                let name = p.clone();
                async move { anykv::memory::pause_named(&name) }
            },
            move || {
                let name = r.clone();
                async move { anykv::memory::resume_named(&name) }
            },
        )
        .with_restart(move || {
            let name = x.clone();
            async move {
                anykv::memory::restart_named(&name, std::time::Duration::from_millis(300)).await
            }
        })
}

/// The URL with a path segment added to its root, the query kept.
pub fn with_segment(url: &str, segment: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = format!("{}/{segment}", base.trim_end_matches('/'));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The suite's compact hook: compacts through whichever built-in backend
/// the store belongs to; `Unsupported` for a backend without one
/// (ZooKeeper keeps no history to compact).
pub async fn compact(store: Arc<dyn Store>, revision: u64) -> Result<()> {
    let any = store.as_any();
    if any.is::<anykv::memory::MemoryStore>() {
        return anykv::memory::compact(&*store, revision);
    }
    if any.is::<anykv::etcd::EtcdStore>() {
        return anykv::etcd::compact(&*store, revision).await;
    }
    if any.is::<anykv::redis::RedisStore>() {
        return anykv::redis::compact(&*store, revision).await;
    }
    Err(Error::unsupported(
        "anykv conformance",
        "compact",
        format!(
            "the {} backend offers no compact hook",
            store.capabilities().backend
        ),
    ))
}

/// A case's outcome as a text line: `pass        NAME (0.31 s)`,
/// `FAIL        NAME (1.20 s): reason (the rule: …)`,
/// `unsupported NAME (0.01 s): reason`.
pub fn case_line(case: &CaseReport) -> String {
    let (word, why) = match &case.outcome {
        Outcome::Passed => ("pass", String::new()),
        Outcome::Failed(m) => (
            "FAIL",
            format!(": {} (the rule: {})", one_line(m), case.rule),
        ),
        Outcome::Unsupported(m) => ("unsupported", format!(": {}", one_line(m))),
    };
    format!(
        "{word:<11} {} ({:.2} s){why}",
        case.name,
        case.duration.as_secs_f64()
    )
}

/// A case's outcome as JSON: `{"case", "group", "rule", "outcome",
/// "seconds", "reason"}` (`reason` only for `fail` and `unsupported`).
pub fn case_json(case: &CaseReport) -> Value {
    let (outcome, reason) = match &case.outcome {
        Outcome::Passed => ("pass", None),
        Outcome::Failed(m) => ("fail", Some(m)),
        Outcome::Unsupported(m) => ("unsupported", Some(m)),
    };
    let mut v = json!({
        "case": case.name,
        "group": case.group,
        "rule": case.rule,
        "outcome": outcome,
        "seconds": case.duration.as_secs_f64(),
    });
    if let (Some(reason), Value::Object(o)) = (reason, &mut v) {
        o.insert("reason".into(), Value::String(reason.clone()));
    }
    v
}

/// The total line: `N cases: P passed, F failed, U unsupported`, or, after
/// an interruption, `interrupted: R of N cases run: ...`.
pub fn total_line(report: &Report, selected: usize, interrupted: bool) -> String {
    let counts = format!(
        "{} passed, {} failed, {} unsupported",
        report.passed(),
        report.failed(),
        report.unsupported()
    );
    if interrupted {
        format!(
            "interrupted: {} of {selected} cases run: {counts}",
            report.cases.len()
        )
    } else {
        format!("{selected} cases: {counts}")
    }
}

/// `anykv conformance`.
pub async fn run(
    args: ConformanceArgs,
    global_url: Option<String>,
    out: Out,
    interrupts: &Interrupts,
) -> std::result::Result<(), CliError> {
    let url =
        match args.target.clone().or(global_url) {
            Some(u) if !u.is_empty() => u,
            _ => return Err(CliError::usage(
                "no URL to test: give it as `anykv conformance URL`, with --url, or in ANYKV_URL",
            )),
        };
    let url = suite_url(&url);
    let mut cases = all_cases();
    if let Some(filter) = &args.filter {
        cases.retain(|c| c.name.contains(filter.as_str()));
        if cases.is_empty() {
            return Err(CliError::usage(format!(
                "no conformance case name contains {filter:?}"
            )));
        }
    }
    let selected = cases.len();

    // Reach the server before running anything, so an unreachable one is
    // one clear error rather than a failure per case.
    let base = open_store(&url).await?;
    if let Err(e) = base.exists("anykv-conformance-probe").await {
        close_store(&base).await;
        return Err(CliError::from(e).context(format!("cannot use {}", anykv::redact_url(&url))));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let unique = format!(
        "anykv-conformance-{}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff_ffff
    );
    let mut factory = UrlFactory::new(with_segment(&url, &unique), |u| async move {
        anykv::open(&u).await
    })
    .with_compact(compact);
    if let Some(name) = in_process_store(&url) {
        factory = with_in_process_faults(factory, name);
    }
    let factory = Arc::new(factory);
    output::progress(&format!(
        "running {} against {} ({} at a time; Ctrl-C stops)",
        if selected == 1 {
            "1 conformance case".to_string()
        } else {
            format!("{selected} conformance cases")
        },
        anykv::redact_url(&url),
        args.concurrency
    ));

    let mut pending = cases.into_iter();
    let mut running = FuturesUnordered::new();
    let mut report = Report::default();
    let mut interrupted: Option<i32> = None;
    let mut result = Ok(());
    loop {
        while interrupted.is_none() && running.len() < args.concurrency {
            let Some(case) = pending.next() else { break };
            let factory: Arc<dyn anykv_conformance::StoreFactory> = factory.clone();
            running.push(run_case(factory, case));
        }
        if running.is_empty() {
            break;
        }
        let wanted = if interrupted.is_some() { 2 } else { 1 };
        tokio::select! {
            Some(case) = running.next() => {
                let printed = if out.json {
                    out.json(&case_json(&case))
                } else {
                    out.line(&case_line(&case))
                };
                report.cases.push(case);
                if let Err(e) = printed {
                    result = Err(e);
                    break;
                }
            }
            signal = interrupts.wait(wanted) => {
                if interrupted.is_some() {
                    output::progress(&format!(
                        "interrupted again: abandoning {} running {}",
                        running.len(),
                        if running.len() == 1 { "case" } else { "cases" }
                    ));
                    break;
                }
                interrupted = Some(signal);
                output::progress(&format!(
                    "interrupted: waiting for {} running {} to finish (Ctrl-C again to stop at once)",
                    running.len(),
                    if running.len() == 1 { "case" } else { "cases" }
                ));
            }
        }
    }
    drop(running);

    let cleanup = match tokio::time::timeout(CLEANUP_TIMEOUT, base.delete_tree(&unique)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("timed out after {CLEANUP_TIMEOUT:?}")),
    };
    if let Some(why) = cleanup {
        output::progress(&format!(
            "could not delete the suite's keys under {unique:?}: {why}"
        ));
    }
    close_store(&base).await;
    result?;

    let total = total_line(&report, selected, interrupted.is_some());
    if out.json {
        out.json(&json!({
            "cases": selected,
            "run": report.cases.len(),
            "passed": report.passed(),
            "failed": report.failed(),
            "unsupported": report.unsupported(),
            "interrupted": interrupted.is_some(),
        }))?;
    } else {
        out.line(&total)?;
    }
    if let Some(signal) = interrupted {
        return Err(CliError::interrupted(signal));
    }
    if report.failed() > 0 {
        return Err(CliError::new(
            FAILURE,
            "Failed",
            format!("{} of {selected} conformance cases failed", report.failed()),
        ));
    }
    Ok(())
}
