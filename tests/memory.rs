//! The whole conformance suite against the in-process backend, one test per
//! case: `cargo test --test memory`.

use std::time::Duration;

use anykv_conformance::{conformance_tests, UrlFactory};

fn factory() -> UrlFactory {
    UrlFactory::new(
        "memory://conformance?request_timeout=2s",
        |url| async move { anykv::open(&url).await },
    )
    .with_compact(|store, revision| async move { anykv::memory::compact(&*store, revision) })
    .with_pause(
        || async { anykv::memory::pause_named("conformance") },
        || async { anykv::memory::resume_named("conformance") },
    )
    .with_restart(|| async {
        anykv::memory::restart_named("conformance", Duration::from_millis(300)).await
    })
    .with_request_timeout(Duration::from_secs(2))
}

conformance_tests!(factory());

#[test]
fn the_suite_has_at_least_140_cases() {
    let n = anykv_conformance::all_cases().len();
    assert!(n >= 140, "only {n} cases");
}
