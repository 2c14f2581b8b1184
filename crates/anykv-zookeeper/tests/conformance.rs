//! The conformance suite against a real ZooKeeper 3.8 (at
//! `ANYKV_ZOOKEEPER_URL`, or started on a free loopback port with TTL nodes
//! enabled): `cargo test -p anykv-zookeeper --test conformance`. The
//! factory (in `common`) offers the restart, pause/resume and request
//! timeout hooks; ZooKeeper keeps no history, so there is no compact hook.

mod common;

use anykv_conformance::conformance_tests;
use anykv_core::Store;

// ZooKeeper keeps no history (watch_resume = false), so resuming a watch is
// refused with Unsupported; its watches carry no data, so
// watch_every_revision is false, which the watch cases allow for.
conformance_tests!(
    common::factory(),
    unsupported = [
        watch_resume_from_revision,
        watch_tree_resume_from_revision,
        watch_resume_compacted,
        load_watch_every_write_exactly,
        load_watch_resume_while_writing,
    ]
);

#[test]
fn the_suite_has_at_least_45_cases() {
    assert!(anykv_conformance::all_cases().len() >= 45);
}

#[allow(dead_code)]
fn _store_is_object_safe(s: &dyn Store) -> &dyn Store {
    s
}
