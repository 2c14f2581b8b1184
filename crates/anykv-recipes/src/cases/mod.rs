//! The recipe cases: one public async function per property of the
//! recipes, runnable on any backend, in the style of `anykv-conformance`.
//!
//! A backend provides a [`RecipeFactory`] (a fresh client on a given root,
//! plus optional hooks that act on its server) and either expands one
//! `#[tokio::test]` per case with [`recipe_tests!`](crate::recipe_tests),
//! or calls [`run_case`] itself. Each case runs on a fresh root
//! (`anykv-recipes/<run>/<case>`); the cases that pause, restart or compact
//! the server run alone ([`Case::exclusive`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use anykv_core::{async_trait, Result, Store};
//! use anykv_recipes::cases::RecipeFactory;
//!
//! struct Memory;
//!
//! #[async_trait]
//! impl RecipeFactory for Memory {
//!     async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
//!         Ok(anykv_memory::MemoryStore::open_url(&format!("memory://my-tests/{root}"))?.into_dyn())
//!     }
//! }
//!
//! anykv_recipes::recipe_tests!(Memory, unsupported = [cache_relists_after_compacted]);
//! # fn main() {}
//! ```
//!
//! A case a backend cannot run (no compact hook, no pause hook) reports
//! [`Failure::Unsupported`] naming what is missing; the test macro fails a
//! case that is unsupported without being listed, and a listed case that
//! passes. The crate's own tests run the cases against deliberately broken
//! variants of the recipes and require each to fail.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anykv_core::{Result, Store};
use futures::future::BoxFuture;
use parking_lot::Mutex;

pub mod cache;
pub mod discovery;
pub mod election;
pub mod registry;
mod tap;
pub mod txn_recipes;

pub use tap::Tap;

#[cfg(test)]
pub(crate) use crate::util::Flaw;
use crate::{
    BarrierOptions, CacheOptions, Counter, DiscoveryOptions, ElectionOptions, QueueOptions,
    RegistryOptions, SemaphoreOptions,
};

/// What a backend gives the cases: the conformance suite's factory
/// (clients on fresh roots, and the optional compact, restart and pause
/// hooks), so one factory serves both suites.
pub use anykv_conformance::StoreFactory as RecipeFactory;
/// Why a case did not pass (the conformance suite's type).
pub use anykv_conformance::{CaseResult, Failure};

/// A factory hook's result for a case: a hook the factory does not offer
/// (`Unsupported`) makes the case unsupported, naming the hook; any other
/// error fails it.
pub(crate) fn hook<T>(result: Result<T>) -> std::result::Result<T, Failure> {
    result.map_err(|e| {
        if e.kind() == anykv_core::ErrorKind::Unsupported {
            Failure::Unsupported(e.to_string())
        } else {
            Failure::Failed(format!("a factory hook failed ({}): {e}", e.kind()))
        }
    })
}

/// Fails the case with a message unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> CaseResult {
    if condition {
        Ok(())
    } else {
        Err(Failure::Failed(message()))
    }
}

/// Fails the case unless `left == right`, showing both.
pub fn ensure_eq<T: PartialEq + fmt::Debug>(left: T, right: T, what: &str) -> CaseResult {
    ensure(left == right, || format!("{what}: {left:?} != {right:?}"))
}

/// Polls `probe` every 20 ms until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Failed(format!("{what}: not within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the cases wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long one case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// The context of one case: its fresh root, the factory, and the clients
/// opened (closed when the case ends).
pub struct Ctx {
    factory: Arc<dyn RecipeFactory>,
    root: String,
    stores: Mutex<Vec<Arc<dyn Store>>>,
    #[cfg(test)]
    pub(crate) flaw: Option<Flaw>,
}

impl Ctx {
    /// A context for case `name` on a fresh root.
    pub fn new(factory: Arc<dyn RecipeFactory>, name: &str) -> Ctx {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        Ctx {
            factory,
            root: format!("anykv-recipes/{}-{nanos:x}-{n}/{name}", std::process::id()),
            stores: Mutex::new(Vec::new()),
            #[cfg(test)]
            flaw: None,
        }
    }

    /// The case's root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The factory.
    pub fn factory(&self) -> &dyn RecipeFactory {
        self.factory.as_ref()
    }

    /// A new client on the case's root, closed when the case ends.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        let store = self.factory.open(&self.root).await?;
        self.stores.lock().push(store.clone());
        Ok(store)
    }

    /// Cache options for the cases: quick backoff and probes.
    pub fn cache_options(&self) -> CacheOptions {
        #[allow(unused_mut)]
        let mut options = CacheOptions::new()
            .with_backoff(crate::Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ))
            .with_probe(Some(Duration::from_millis(300)), Duration::from_secs(1));
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// Election options for the cases: a short TTL, quick backoff.
    pub fn election_options(&self) -> ElectionOptions {
        #[allow(unused_mut)]
        let mut options = ElectionOptions::new()
            .with_ttl(Duration::from_secs(3))
            .with_backoff(crate::Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ));
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// Registry options for the cases: a short TTL, quick backoff.
    pub fn registry_options(&self) -> RegistryOptions {
        #[allow(unused_mut)]
        let mut options = RegistryOptions::new()
            .with_ttl(Duration::from_secs(3))
            .with_backoff(crate::Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ))
            .with_cache(self.cache_options());
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// Discovery options for the cases: protection on with a long grace,
    /// a short start-up wait.
    pub fn discovery_options(&self) -> DiscoveryOptions {
        #[allow(unused_mut)]
        let mut options = DiscoveryOptions::new()
            .with_cache(self.cache_options())
            .with_startup_timeout(Duration::from_secs(2))
            .with_empty_protection(crate::EmptyProtection::KeepLastNonEmpty {
                grace: Duration::from_secs(60),
            });
        #[cfg(test)]
        if self.flaw == Some(Flaw::DiscoveryUnprotected) {
            options = options.with_empty_protection(crate::EmptyProtection::Off);
        }
        options
    }

    /// Queue options for the cases: quick backoff.
    pub fn queue_options(&self) -> QueueOptions {
        #[allow(unused_mut)]
        let mut options = QueueOptions::new().with_backoff(crate::Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ));
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// Semaphore options for the cases: a short TTL, quick backoff.
    pub fn semaphore_options(&self) -> SemaphoreOptions {
        #[allow(unused_mut)]
        let mut options = SemaphoreOptions::new()
            .with_ttl(Duration::from_secs(3))
            .with_backoff(crate::Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ));
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// Barrier options for the cases: a short TTL, quick backoff.
    pub fn barrier_options(&self) -> BarrierOptions {
        #[allow(unused_mut)]
        let mut options = BarrierOptions::new()
            .with_ttl(Duration::from_secs(3))
            .with_backoff(crate::Backoff::new(
                Duration::from_millis(50),
                Duration::from_millis(500),
            ));
        #[cfg(test)]
        {
            options.flaw = self.flaw;
        }
        options
    }

    /// The counter at `key` of `store`, as the cases use it.
    pub fn counter(&self, store: Arc<dyn Store>, key: &str) -> Result<Counter> {
        #[allow(unused_mut)]
        let mut counter = Counter::new(store, key)?;
        #[cfg(test)]
        {
            counter.flaw = self.flaw;
        }
        Ok(counter)
    }

    async fn close_all(&self) {
        let stores = std::mem::take(&mut *self.stores.lock());
        for store in stores {
            let _ = tokio::time::timeout(Duration::from_secs(10), store.close()).await;
        }
    }
}

/// One case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name, as its function and its test are called.
    pub name: &'static str,
    /// The case pauses, restarts or compacts the server, so it runs alone.
    pub exclusive: bool,
    run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

macro_rules! case {
    ($module:ident :: $name:ident, $exclusive:expr) => {
        Case {
            name: stringify!($name),
            exclusive: $exclusive,
            run: |ctx| Box::pin($module::$name(ctx)),
        }
    };
}

/// Every case, in order.
pub fn all_cases() -> Vec<Case> {
    vec![
        case!(cache::cache_matches_list_after_churn, false),
        case!(cache::cache_diffs_after_interruption, false),
        case!(cache::cache_relists_after_compacted, true),
        case!(cache::cache_stale_while_server_paused, true),
        case!(election::election_exclusive_while_leaders_killed, false),
        case!(election::election_waits_on_predecessor_only, false),
        case!(election::election_observe_and_proclaim, false),
        case!(election::election_terms_rejoin_after_loss, false),
        case!(election::election_lost_before_successor_after_outage, true),
        case!(registry::registry_repairs_deleted_records, false),
        case!(registry::registry_instances_leave, false),
        case!(registry::registry_fails_back_after_restart, true),
        case!(registry::registry_fails_back_after_outage, true),
        case!(discovery::discovery_strategies_and_feedback, false),
        case!(discovery::discovery_never_empty_during_outage, false),
        case!(discovery::discovery_starts_from_cache_file, false),
        case!(txn_recipes::queue_items_claimed_exactly_once, false),
        case!(
            txn_recipes::semaphore_never_exceeds_permits_while_holders_killed,
            false
        ),
        case!(txn_recipes::barrier_nobody_passes_before_all_entered, false),
        case!(txn_recipes::counter_concurrent_adds_exact_sum, false),
    ]
}

static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs case `name` on a fresh root; exclusive cases wait for the others
/// of this process to finish, and the others for them.
pub async fn run_case(name: &str, factory: Arc<dyn RecipeFactory>) -> CaseResult {
    let Some(case) = all_cases().into_iter().find(|c| c.name == name) else {
        return Err(Failure::Failed(format!("there is no recipe case {name:?}")));
    };
    let ctx = Ctx::new(factory, name);
    run_in(&case, &ctx).await
}

pub(crate) async fn run_in(case: &Case, ctx: &Ctx) -> CaseResult {
    let (_shared, _exclusive);
    if case.exclusive {
        _exclusive = EXCLUSIVE.write().await;
    } else {
        _shared = EXCLUSIVE.read().await;
    }
    let outcome = match tokio::time::timeout(CASE_TIMEOUT, (case.run)(ctx)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Failed(format!(
            "the case ran longer than {CASE_TIMEOUT:?}"
        ))),
    };
    ctx.close_all().await;
    outcome
}

/// Runs case `name` as a test: panics unless it passed, or reported
/// unsupported and is listed in `unsupported`.
pub async fn run_case_as_test(name: &str, factory: Arc<dyn RecipeFactory>, unsupported: &[&str]) {
    let started = Instant::now();
    let outcome = run_case(name, factory).await;
    let listed = unsupported.contains(&name);
    match (outcome, listed) {
        (Ok(()), false) | (Err(Failure::Unsupported(_)), true) => {
            eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
        }
        (Ok(()), true) => panic!("{name} passed but is listed as unsupported"),
        (Err(failure), _) => panic!("{name}: {failure}"),
    }
}

/// Expands to one `#[tokio::test]` per recipe case against a
/// [`RecipeFactory`] expression (evaluated once per test), optionally
/// listing the cases the factory cannot run: `unsupported = [case, ...]`.
/// The test crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! recipe_tests {
    ($factory:expr $(,)?) => {
        $crate::recipe_tests!($factory, unsupported = []);
    };
    ($factory:expr, unsupported = [$($u:ident),* $(,)?] $(,)?) => {
        $crate::__recipe_tests!(($factory) [$(stringify!($u)),*]
            cache_matches_list_after_churn
            cache_diffs_after_interruption
            cache_relists_after_compacted
            cache_stale_while_server_paused
            election_exclusive_while_leaders_killed
            election_waits_on_predecessor_only
            election_observe_and_proclaim
            election_terms_rejoin_after_loss
            election_lost_before_successor_after_outage
            registry_repairs_deleted_records
            registry_instances_leave
            registry_fails_back_after_restart
            registry_fails_back_after_outage
            discovery_strategies_and_feedback
            discovery_never_empty_during_outage
            discovery_starts_from_cache_file
            queue_items_claimed_exactly_once
            semaphore_never_exceeds_permits_while_holders_killed
            barrier_nobody_passes_before_all_entered
            counter_concurrent_adds_exact_sum
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __recipe_tests {
    (($factory:expr) $unsupported:tt $($name:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory: ::std::sync::Arc<dyn $crate::cases::RecipeFactory> =
                    ::std::sync::Arc::new($factory);
                $crate::cases::run_case_as_test(stringify!($name), factory, &$unsupported).await;
            }
        )*
    };
}

#[cfg(test)]
mod teeth;
