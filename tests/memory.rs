//! The whole conformance suite against the in-process backend, one test per
//! case: `cargo test --test memory`.

use anykv_conformance::{conformance_tests, UrlFactory};

fn factory() -> UrlFactory {
    UrlFactory::new("memory://conformance", |url| async move {
        anykv::open(&url).await
    })
    .with_compact(|store, revision| async move { anykv::memory::compact(&*store, revision) })
}

conformance_tests!(factory());

#[test]
fn the_suite_has_at_least_45_cases() {
    let n = anykv_conformance::all_cases().len();
    assert!(n >= 45, "only {n} cases");
}
