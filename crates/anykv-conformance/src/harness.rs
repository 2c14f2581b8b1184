//! Running cases: the factory a backend provides, the per-case context,
//! outcomes and reports.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anykv_core::{async_trait, Error, Result, Store};
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;

/// What a backend gives the suite: clients on fresh roots, and optional
/// hooks for cases that need to act on the server.
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// Opens a new, independent client (as another process would) whose
    /// root is `root`. Every call gives a new client; clients on one root
    /// see each other's writes.
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>>;

    /// Discards the history up to and including `revision`, so that a watch
    /// resuming from an older revision gets [`Error::Compacted`]. Optional:
    /// the default refuses with [`Error::Unsupported`], and the cases that
    /// need it report "unsupported".
    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        let _ = (store, revision);
        Err(Error::unsupported(
            "conformance",
            "compact",
            "the factory offers no compact hook",
        ))
    }

    /// Stops and starts the server, keeping its data. Optional, for fault
    /// cases; the default refuses with [`Error::Unsupported`].
    async fn restart_server(&self) -> Result<()> {
        Err(Error::unsupported(
            "conformance",
            "restart_server",
            "the factory offers no restart_server hook",
        ))
    }

    /// Freezes the server (as `SIGSTOP` does) until
    /// [`StoreFactory::resume_server`]: connections stay open, nothing is
    /// answered. Optional, for fault cases; the default refuses with
    /// [`Error::Unsupported`], and the cases that need it report
    /// "unsupported" naming the hook. A case that paused the server always
    /// resumes it, even when it fails.
    async fn pause_server(&self) -> Result<()> {
        Err(Error::unsupported(
            "conformance",
            "pause_server",
            "the factory offers no pause_server hook",
        ))
    }

    /// Lets a server frozen by [`StoreFactory::pause_server`] run again.
    async fn resume_server(&self) -> Result<()> {
        Err(Error::unsupported(
            "conformance",
            "resume_server",
            "the factory offers no resume_server hook",
        ))
    }

    /// The request timeout of the stores this factory opens: a call that
    /// cannot finish (a paused server) must fail within it, plus
    /// [`crate::SLACK`]. Fault cases read it; the default is 5 s, what the
    /// anykv backends use when a URL sets no `request_timeout`.
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// A [`StoreFactory`] that opens `{base}/{root}` through an opener such as
/// `anykv::open`, so any URL-addressed backend can be tested without code.
pub struct UrlFactory {
    base: String,
    opener: OpenFn,
    compact: Option<CompactFn>,
    restart: Option<HookFn>,
    pause: Option<(HookFn, HookFn)>,
    request_timeout: Duration,
}

type HookFn = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

fn hook<F, Fut>(f: F) -> HookFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

type OpenFn = Arc<dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn Store>>> + Send + Sync>;

type CompactFn = Arc<dyn Fn(Arc<dyn Store>, u64) -> BoxFuture<'static, Result<()>> + Send + Sync>;

impl UrlFactory {
    /// A factory opening `{base}/{root}` with `opener`. `base` is a URL whose
    /// path is the prefix every case's root goes under, such as
    /// `memory://conformance` or `etcd://127.0.0.1:2379/conformance`. Its
    /// query string, if any, is kept at the end.
    pub fn new<F, Fut>(base: impl Into<String>, opener: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Store>>> + Send + 'static,
    {
        UrlFactory {
            base: base.into(),
            opener: Arc::new(move |url| Box::pin(opener(url))),
            compact: None,
            restart: None,
            pause: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Adds a restart hook: stop the server and start it again with its
    /// data.
    pub fn with_restart<F, Fut>(mut self, restart: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.restart = Some(hook(restart));
        self
    }

    /// Adds the pause and resume hooks: freeze the server (`SIGSTOP`) and
    /// let it run again (`SIGCONT`).
    pub fn with_pause<P, PFut, R, RFut>(mut self, pause: P, resume: R) -> Self
    where
        P: Fn() -> PFut + Send + Sync + 'static,
        PFut: Future<Output = Result<()>> + Send + 'static,
        R: Fn() -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<()>> + Send + 'static,
    {
        self.pause = Some((hook(pause), hook(resume)));
        self
    }

    /// Says what request timeout the opened stores use (the URL's
    /// `request_timeout`); fault cases allow it plus [`crate::SLACK`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Adds a compact hook.
    pub fn with_compact<F, Fut>(mut self, compact: F) -> Self
    where
        F: Fn(Arc<dyn Store>, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.compact = Some(Arc::new(move |s, r| Box::pin(compact(s, r))));
        self
    }

    fn url_for(&self, root: &str) -> String {
        let (base, query) = match self.base.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.base.as_str(), None),
        };
        let mut url = format!("{}/{}", base.trim_end_matches('/'), root);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    }
}

#[async_trait]
impl StoreFactory for UrlFactory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        (self.opener)(self.url_for(root)).await
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        match &self.compact {
            Some(f) => f(store.clone(), revision).await,
            None => Err(Error::unsupported(
                "conformance",
                "compact",
                "the factory offers no compact hook",
            )),
        }
    }

    async fn restart_server(&self) -> Result<()> {
        match &self.restart {
            Some(f) => f().await,
            None => Err(Error::unsupported(
                "conformance",
                "restart_server",
                "the factory offers no restart_server hook",
            )),
        }
    }

    async fn pause_server(&self) -> Result<()> {
        match &self.pause {
            Some((pause, _)) => pause().await,
            None => Err(Error::unsupported(
                "conformance",
                "pause_server",
                "the factory offers no pause_server hook",
            )),
        }
    }

    async fn resume_server(&self) -> Result<()> {
        match &self.pause {
            Some((_, resume)) => resume().await,
            None => Err(Error::unsupported(
                "conformance",
                "resume_server",
                "the factory offers no resume_server hook",
            )),
        }
    }

    fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The backend broke a rule; the message says which and where.
    Failed(String),
    /// The backend's capabilities (or the factory's hooks) rule the case
    /// out; the message names the capability.
    Unsupported(String),
}

impl Failure {
    /// A failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Failure::Failed(message.into())
    }

    /// An unsupported outcome.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Failure::Unsupported(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(m) => write!(f, "failed: {m}"),
            Failure::Unsupported(m) => write!(f, "unsupported: {m}"),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Failed(format!("unexpected error ({}): {e}", e.kind()))
    }
}

/// What a case function returns.
pub type CaseResult = std::result::Result<(), Failure>;

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, as its function and its test are called.
    pub name: &'static str,
    /// The group (module) it belongs to.
    pub group: &'static str,
    /// The rule the case checks: the first paragraph of its doc comment,
    /// quoted by every failure report.
    pub rule: &'static str,
    /// The case changes something every case can see (compaction, a
    /// restart, a paused server), so it runs alone.
    pub exclusive: bool,
    /// The case opens many clients or writes a lot (load, races, history
    /// checks), so it runs one at a time with the other heavy cases, which
    /// bounds the connections a run holds on one server.
    pub heavy: bool,
    run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("rule", &self.rule)
            .field("exclusive", &self.exclusive)
            .field("heavy", &self.heavy)
            .finish()
    }
}

impl Case {
    /// A case (used by the registration macros).
    pub fn new(
        name: &'static str,
        group: &'static str,
        run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>,
    ) -> Self {
        Case {
            name,
            group,
            rule: crate::case_rule(name),
            exclusive: crate::EXCLUSIVE_CASES.contains(&name)
                || crate::EXCLUSIVE_GROUPS.contains(&group),
            heavy: crate::HEAVY_GROUPS.contains(&group),
            run,
        }
    }
}

/// The context of one case: its fresh root and the clients opened on it.
pub struct Ctx {
    factory: Arc<dyn StoreFactory>,
    case: &'static str,
    root: String,
    stores: Mutex<Vec<Arc<dyn Store>>>,
    paused: std::sync::atomic::AtomicBool,
}

static RUN_ID: LazyLock<String> = LazyLock::new(|| {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{:x}", std::process::id(), nanos % 0xffff_ffff)
});
static NEXT_ROOT: AtomicU64 = AtomicU64::new(1);

impl Ctx {
    /// A context for the case `case` on a fresh, unique root.
    pub fn new(factory: Arc<dyn StoreFactory>, case: &'static str) -> Self {
        let n = NEXT_ROOT.fetch_add(1, Ordering::Relaxed);
        Ctx {
            factory,
            case,
            root: format!("anykv-conformance/{}/{case}-{n}", *RUN_ID),
            stores: Mutex::new(Vec::new()),
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The case's name.
    pub fn case(&self) -> &'static str {
        self.case
    }

    /// The case's root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The factory.
    pub fn factory(&self) -> &Arc<dyn StoreFactory> {
        &self.factory
    }

    /// A new, independent client on the case's root.
    pub async fn store(&self) -> std::result::Result<Arc<dyn Store>, Failure> {
        self.open_root(&self.root.clone()).await
    }

    /// A new client on the root `{root}{suffix}`: with suffix `"b"` a root
    /// whose name extends this one's (for boundary checks), with `"-other"`
    /// an unrelated sibling.
    pub async fn store_with_root_suffix(
        &self,
        suffix: &str,
    ) -> std::result::Result<Arc<dyn Store>, Failure> {
        self.open_root(&format!("{}{suffix}", self.root)).await
    }

    /// A new client on the case's root that the suite keeps no handle on,
    /// so that dropping it drops the client's last handle. The case cleans
    /// up after it (it is not closed for the case).
    pub async fn unmanaged_store(&self) -> std::result::Result<Arc<dyn Store>, Failure> {
        self.factory.open(&self.root).await.map_err(|e| {
            Failure::failed(format!(
                "the factory could not open root {:?}: {e}",
                self.root
            ))
        })
    }

    /// A new client on an arbitrary root.
    pub async fn open_root(&self, root: &str) -> std::result::Result<Arc<dyn Store>, Failure> {
        let store = self.factory.open(root).await.map_err(|e| {
            Failure::failed(format!("the factory could not open root {root:?}: {e}"))
        })?;
        self.stores.lock().push(store.clone());
        Ok(store)
    }

    /// Fails with [`Failure::Unsupported`] unless `capability` holds.
    pub fn require(&self, capability: bool, name: &str) -> CaseResult {
        if capability {
            Ok(())
        } else {
            Err(Failure::unsupported(format!(
                "the backend's capabilities say {name} = false"
            )))
        }
    }

    /// Freezes the server through the factory's pause hook, or reports the
    /// case unsupported naming the hook. The server is resumed by
    /// [`Ctx::resume_server`] or, at the latest, when the case ends.
    pub async fn pause_server(&self) -> CaseResult {
        match self.factory.pause_server().await {
            Ok(()) => {
                self.paused.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) if e.kind() == anykv_core::ErrorKind::Unsupported => Err(Failure::unsupported(
                format!("the factory has no pause hook (StoreFactory::pause_server): {e}"),
            )),
            Err(e) => Err(Failure::failed(format!("the pause hook failed: {e}"))),
        }
    }

    /// Lets the server paused by [`Ctx::pause_server`] run again.
    pub async fn resume_server(&self) -> CaseResult {
        self.paused.store(false, Ordering::SeqCst);
        self.factory
            .resume_server()
            .await
            .map_err(|e| Failure::failed(format!("the resume hook failed: {e}")))
    }

    /// Restarts the server through the factory's hook, or reports the case
    /// unsupported naming the hook.
    pub async fn restart_server(&self) -> CaseResult {
        match self.factory.restart_server().await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == anykv_core::ErrorKind::Unsupported => Err(Failure::unsupported(
                format!("the factory has no restart hook (StoreFactory::restart_server): {e}"),
            )),
            Err(e) => Err(Failure::failed(format!("the restart hook failed: {e}"))),
        }
    }

    /// The request timeout of the factory's stores.
    pub fn request_timeout(&self) -> Duration {
        self.factory.request_timeout()
    }

    async fn cleanup(&self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            let _ = self.factory.resume_server().await;
        }
        let stores: Vec<_> = std::mem::take(&mut *self.stores.lock());
        for s in &stores {
            let _ = tokio::time::timeout(Duration::from_secs(10), s.delete_tree("")).await;
        }
        for s in &stores {
            let _ = tokio::time::timeout(Duration::from_secs(10), s.close()).await;
        }
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// An assertion failed; the reason.
    Failed(String),
    /// Ruled out by the backend's capabilities; the capability.
    Unsupported(String),
}

/// One case's outcome and how long it took.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: &'static str,
    /// Its group.
    pub group: &'static str,
    /// The rule it checks (see [`Case::rule`]).
    pub rule: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: Duration,
}

/// The outcomes of a run, in suite order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per case run.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// How many passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// How many failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// How many were unsupported.
    pub fn unsupported(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unsupported(_)))
    }

    /// True when no case failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// The report of the case `name`.
    pub fn case(&self, name: &str) -> Option<&CaseReport> {
        self.cases.iter().find(|c| c.name == name)
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            let (word, why) = match &c.outcome {
                Outcome::Passed => ("pass", String::new()),
                Outcome::Failed(m) => ("FAIL", format!(": {}", shorten(m, 400))),
                Outcome::Unsupported(m) => ("unsupported", format!(": {m}")),
            };
            writeln!(
                f,
                "{word:<11} {}::{} ({:.2}s){why}",
                c.group,
                c.name,
                c.duration.as_secs_f64()
            )?;
        }
        let failures: Vec<&CaseReport> = self
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .collect();
        if !failures.is_empty() {
            writeln!(f, "failures:")?;
            for c in failures {
                if let Outcome::Failed(m) = &c.outcome {
                    writeln!(f, "  {}::{}: {}", c.group, c.name, shorten(m, 400))?;
                    writeln!(f, "    the rule: {}", c.rule)?;
                }
            }
        }
        writeln!(
            f,
            "{} passed, {} failed, {} unsupported",
            self.passed(),
            self.failed(),
            self.unsupported()
        )
    }
}

/// `text` cut to at most `max` characters, saying how much was cut: a
/// failure that shows a 1 MB value stays readable.
pub fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({} more characters)", count - max)
}

/// The longest a case may run before it counts as failed.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

static GATE: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(|| tokio::sync::RwLock::new(()));
/// Held by a test that uses the suite's server beside the cases (in the
/// same test binary): while it is held, the cases that pause or restart
/// the server wait, and once they run, the test waits.
pub async fn shared_server_guard() -> tokio::sync::RwLockReadGuard<'static, ()> {
    GATE.read().await
}

static HEAVY: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Runs one case on a fresh root and reports its outcome. A panic or a
/// timeout counts as a failure. Exclusive cases wait until no other case of
/// this process runs.
pub async fn run_case(factory: Arc<dyn StoreFactory>, case: Case) -> CaseReport {
    let started = Instant::now();
    let _heavy = if case.heavy {
        Some(HEAVY.lock().await)
    } else {
        None
    };
    let (_read, _write);
    if case.exclusive {
        _write = Some(GATE.write().await);
        _read = None;
    } else {
        _read = Some(GATE.read().await);
        _write = None;
    }
    let task = tokio::spawn(async move {
        let ctx = Ctx::new(factory, case.name);
        let result = tokio::time::timeout(CASE_TIMEOUT, (case.run)(&ctx)).await;
        ctx.cleanup().await;
        match result {
            Ok(r) => r,
            Err(_) => Err(Failure::failed(format!(
                "the case did not finish within {CASE_TIMEOUT:?}"
            ))),
        }
    });
    let outcome = match task.await {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(Failure::Failed(m))) => Outcome::Failed(m),
        Ok(Err(Failure::Unsupported(m))) => Outcome::Unsupported(m),
        Err(e) => Outcome::Failed(format!("the case panicked: {}", panic_message(e))),
    };
    CaseReport {
        name: case.name,
        group: case.group,
        rule: case.rule,
        outcome,
        duration: started.elapsed(),
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic".to_owned()
    }
}

/// How many cases [`run_all`] runs at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Runs every case against `factory`, [`DEFAULT_CONCURRENCY`] at a time,
/// and reports each in suite order.
pub async fn run_all(factory: Arc<dyn StoreFactory>) -> Report {
    run_cases(factory, crate::all_cases(), DEFAULT_CONCURRENCY).await
}

/// Runs the given cases, `concurrency` at a time.
pub async fn run_cases(
    factory: Arc<dyn StoreFactory>,
    cases: Vec<Case>,
    concurrency: usize,
) -> Report {
    let mut results: Vec<(usize, CaseReport)> =
        futures::stream::iter(cases.into_iter().enumerate().map(|(i, case)| {
            let factory = factory.clone();
            async move { (i, run_case(factory, case).await) }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    Report {
        cases: results.into_iter().map(|(_, r)| r).collect(),
    }
}

/// What the generated `#[tokio::test]` functions call: runs the case and
/// panics unless it passed, or it is unsupported and listed in
/// `allowed_unsupported`. A listed case that passes panics too, so the list
/// stays true.
pub async fn run_case_as_test(
    name: &str,
    factory: Arc<dyn StoreFactory>,
    allowed_unsupported: &[&str],
) {
    let case = crate::all_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case is called {name}"));
    let report = run_case(factory, case).await;
    let allowed = allowed_unsupported.contains(&name);
    match report.outcome {
        Outcome::Passed if allowed => {
            panic!("{name} passed, but the test lists it as unsupported: remove it from the list")
        }
        Outcome::Passed => {}
        Outcome::Failed(m) => panic!(
            "{name} failed: {}\n  the rule: {}",
            shorten(&m, 2000),
            report.rule
        ),
        Outcome::Unsupported(m) if allowed => {
            eprintln!("{name}: unsupported, as declared: {m}");
        }
        Outcome::Unsupported(m) => {
            panic!(
                "{name} is unsupported ({m}) but the test does not list it as unsupported: \
                 offer what it needs (the capability, or the factory hook it names), or \
                 list it: conformance_tests!(factory, unsupported = [{name}])"
            )
        }
    }
}
