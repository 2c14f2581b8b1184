//! The anykv conformance suite: one public async function per rule of the
//! anykv contract, runnable against any backend.
//!
//! A backend author provides a [`StoreFactory`] (a fresh client on a given
//! root) and either runs the suite programmatically:
//!
//! ```
//! use std::sync::Arc;
//! use anykv_conformance::{run_all, UrlFactory};
//!
//! # #[tokio::main]
//! # async fn main() {
//! let factory = UrlFactory::new("memory://doc-example", |url| async move {
//!     anykv_memory::MemoryStore::open_url(&url).map(anykv_memory::MemoryStore::into_dyn)
//! });
//! let report = run_all(Arc::new(factory)).await;
//! assert!(report.is_success(), "{report}");
//! assert!(report.passed() >= 45);
//! # }
//! ```
//!
//! or expands one `#[tokio::test]` per case with [`conformance_tests!`]
//! (the test crate needs `tokio` with the `macros` and `rt-multi-thread`
//! features), so `cargo test` lists every case by name:
//!
//! ```no_run
//! anykv_conformance::conformance_tests!(
//!     anykv_conformance::UrlFactory::new("memory://my-tests", |url| async move {
//!         anykv_memory::MemoryStore::open_url(&url).map(anykv_memory::MemoryStore::into_dyn)
//!     })
//! );
//! # fn main() {}
//! ```
//!
//! A backend whose capabilities rule a case out lists that case:
//! `conformance_tests!(factory, unsupported = [watch_resume_from_revision])`.
//! A listed case must report "unsupported" (naming the capability); an
//! unlisted unsupported case fails, and so does a listed case that passes.
//!
//! Each case runs on a fresh root (`anykv-conformance/<run>/<case>-<n>`),
//! so cases run in parallel against one server; the few that change what
//! every case sees (compaction) run alone. A case that a backend's
//! capabilities rule out reports [`Outcome::Unsupported`], never a pass.
//!
//! Case names are `<area>_<behaviour>` (`lock_timeout`,
//! `watch_resume_compacted`), the area being the first word of the case's
//! group. Each case's doc comment states the rule it checks; its first
//! paragraph is [`Case::rule`], which every failure report quotes beside
//! what went wrong.

#![deny(rustdoc::broken_intra_doc_links)]

pub mod check;
mod harness;

include!(concat!(env!("OUT_DIR"), "/case_rules.rs"));
pub mod linearizability;

pub use check::{
    bytes, expect_delete, expect_silence, is_gone, next_event, next_item, put_with, read_initial,
    wait_gone, wait_until, EVENT_TIMEOUT, SLACK,
};
pub use harness::{
    run_all, run_case, run_case_as_test, run_cases, shared_server_guard, shorten, Case, CaseReport,
    CaseResult, Ctx, Failure, Outcome, Report, StoreFactory, UrlFactory, CASE_TIMEOUT,
    DEFAULT_CONCURRENCY,
};

#[doc(hidden)]
pub mod __private {
    pub use anykv_core::ErrorKind;
}

/// The cases, one module per part of the contract.
pub mod cases {
    pub mod atomic;
    pub mod basic;
    pub mod capabilities;
    pub mod close;
    pub mod contend;
    pub mod fault;
    pub mod history;
    pub mod isolation;
    pub mod keys;
    pub mod lease;
    pub mod list;
    pub mod load;
    pub mod lock;
    pub mod race;
    pub mod revision;
    pub mod rules;
    pub mod ttl;
    pub mod txn;
    pub mod txn_load;
    pub mod watch;
    pub mod watch_concurrent;
    pub mod watch_resume;
}

/// Cases that change what every case can see, and so run alone.
pub const EXCLUSIVE_CASES: &[&str] = &["watch_resume_compacted"];

/// Groups whose cases change what every case can see (they pause or
/// restart the server), and so run alone.
pub const EXCLUSIVE_GROUPS: &[&str] = &["fault"];

/// Groups whose cases open many clients or write a lot; they run one at a
/// time among themselves (see [`Case::heavy`]).
pub const HEAVY_GROUPS: &[&str] = &["race", "load", "contend", "history", "txn_load"];

/// Calls `callback! { args group: [case, ...] }` once per group, in suite
/// order. Each group's list lives in its module, beside its cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_for_each_group {
    (($($cb:tt)*) $args:tt) => {
        $crate::__anykv_cases_basic!(($($cb)*) $args);
        $crate::__anykv_cases_keys!(($($cb)*) $args);
        $crate::__anykv_cases_list!(($($cb)*) $args);
        $crate::__anykv_cases_revision!(($($cb)*) $args);
        $crate::__anykv_cases_atomic!(($($cb)*) $args);
        $crate::__anykv_cases_race!(($($cb)*) $args);
        $crate::__anykv_cases_contend!(($($cb)*) $args);
        $crate::__anykv_cases_history!(($($cb)*) $args);
        $crate::__anykv_cases_isolation!(($($cb)*) $args);
        $crate::__anykv_cases_watch!(($($cb)*) $args);
        $crate::__anykv_cases_watch_concurrent!(($($cb)*) $args);
        $crate::__anykv_cases_watch_resume!(($($cb)*) $args);
        $crate::__anykv_cases_ttl!(($($cb)*) $args);
        $crate::__anykv_cases_lease!(($($cb)*) $args);
        $crate::__anykv_cases_lock!(($($cb)*) $args);
        $crate::__anykv_cases_txn!(($($cb)*) $args);
        $crate::__anykv_cases_txn_load!(($($cb)*) $args);
        $crate::__anykv_cases_close!(($($cb)*) $args);
        $crate::__anykv_cases_capabilities!(($($cb)*) $args);
        $crate::__anykv_cases_rules!(($($cb)*) $args);
        $crate::__anykv_cases_load!(($($cb)*) $args);
        $crate::__anykv_cases_fault!(($($cb)*) $args);
    };
}

macro_rules! __push_cases {
    ($v:ident $group:ident: [$($name:ident),* $(,)?]) => {
        $(
            $v.push(Case::new(stringify!($name), stringify!($group), |ctx| {
                Box::pin(crate::cases::$group::$name(ctx))
            }));
        )*
    };
}

/// Every case, in suite order.
pub fn all_cases() -> Vec<Case> {
    let mut v = Vec::new();
    __anykv_for_each_group!((__push_cases) v);
    v
}

/// Expands to one `#[tokio::test]` per case against a [`StoreFactory`]
/// expression (evaluated once per test). Optionally lists the cases the
/// backend's capabilities rule out: `unsupported = [case, ...]`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!($factory, unsupported = []);
    };
    ($factory:expr, unsupported = [$($u:ident),* $(,)?] $(,)?) => {
        $crate::__anykv_for_each_group!(($crate::__anykv_case_tests) { ($factory) [$(stringify!($u)),*] });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_case_tests {
    ({ ($factory:expr) $unsupported:tt } $group:ident: [$($name:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory: ::std::sync::Arc<dyn $crate::StoreFactory> =
                    ::std::sync::Arc::new($factory);
                $crate::run_case_as_test(stringify!($name), factory, &$unsupported).await;
            }
        )*
    };
}
