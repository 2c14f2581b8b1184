//! Discovery: a cached view of a service's instances, with selection,
//! error feedback, protection against an empty push during an outage, and
//! an optional cache file.
//!
//! A [`Discovery`] follows `{prefix}/{service}` with a [`Cache`] and keeps
//! the decoded [`Instance`]s (records that do not parse, or whose fields
//! disagree with their key, are skipped and counted). [`Discovery::pick`]
//! chooses among the enabled instances that pass the filter, by
//! [`Strategy`], leaving out for a while those reported with
//! [`Discovery::note_error`] (unless that would leave none).
//!
//! **Empty protection.** An outage often ends with every instance gone at
//! once: their leases expired while the backend was down, and their
//! registries have not written them again yet. With
//! [`EmptyProtection::KeepLastNonEmpty`] (the default), a view that would
//! become empty keeps its last non-empty state while the cache is stale
//! (the backend unreachable) and for `grace` after it is current again;
//! after that an empty service is shown empty. [`DiscoveryStatus::protected`]
//! says when the view shown is such a kept one.
//!
//! **Cache file.** With [`DiscoveryOptions::cache_file`], every live,
//! non-empty view is saved (written to a temporary file, then renamed).
//! When the backend does not answer within
//! [`DiscoveryOptions::startup_timeout`] at start-up, the view starts from
//! that file, and [`DiscoveryStatus::source`] says
//! [`ViewSource::CacheFile`] until the first live listing. The file is JSON:
//! `{"version": 1, "service": "web", "saved_at_ms": <unix ms>, "instances":
//! [<record>...]}`, each record as [`Instance`] describes it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anykv_core::{Result, Store};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cache::{Cache, CacheEvents, CacheOptions};
use crate::instance::{Instance, DEFAULT_SERVICES_PREFIX};
use crate::util::{check_segment, join, TaskGuard};

/// How [`Discovery::pick`] chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Each in turn, in id order.
    #[default]
    RoundRobin,
    /// At random, in proportion to [`Instance::weight`] (uniformly if every
    /// weight is 0).
    Random,
    /// The same instance as last time while it is still eligible; a new
    /// one at random (weighted) when it leaves, is disabled, filtered out,
    /// or reported with [`Discovery::note_error`].
    Sticky,
}

/// What happens when the view would become empty; see the
/// [module](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmptyProtection {
    /// The view follows the store, empty included.
    Off,
    /// Keep the last non-empty view while the backend is unreachable and
    /// for `grace` after it is reachable again.
    KeepLastNonEmpty {
        /// How long after the outage an empty service stays hidden.
        grace: Duration,
    },
}

impl Default for EmptyProtection {
    /// Protection on, with a grace of 10 s.
    fn default() -> Self {
        EmptyProtection::KeepLastNonEmpty {
            grace: Duration::from_secs(10),
        }
    }
}

/// A predicate on instances: only those it accepts are picked.
pub type InstanceFilter = Arc<dyn Fn(&Instance) -> bool + Send + Sync>;

/// Options of a [`Discovery`].
#[derive(Clone)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// Where services live. Default [`DEFAULT_SERVICES_PREFIX`].
    pub prefix: String,
    /// How [`Discovery::pick`] chooses. Default round-robin.
    pub strategy: Strategy,
    /// Only instances it accepts are picked. Default: all.
    pub filter: Option<InstanceFilter>,
    /// How long [`Discovery::note_error`] leaves an instance out. Default
    /// 30 s.
    pub error_exclusion: Duration,
    /// Protection against an empty view during an outage.
    pub empty_protection: EmptyProtection,
    /// Where to save the last view and start from when the backend is down
    /// at start-up. Default: none.
    pub cache_file: Option<PathBuf>,
    /// How long [`Discovery::open`] waits for the backend before starting
    /// from the cache file (or from nothing). Default 3 s.
    pub startup_timeout: Duration,
    /// Options of the underlying cache.
    pub cache: CacheOptions,
}

impl fmt::Debug for DiscoveryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryOptions")
            .field("prefix", &self.prefix)
            .field("strategy", &self.strategy)
            .field("filter", &self.filter.as_ref().map(|_| "<fn>"))
            .field("error_exclusion", &self.error_exclusion)
            .field("empty_protection", &self.empty_protection)
            .field("cache_file", &self.cache_file)
            .field("startup_timeout", &self.startup_timeout)
            .field("cache", &self.cache)
            .finish()
    }
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            prefix: DEFAULT_SERVICES_PREFIX.into(),
            strategy: Strategy::default(),
            filter: None,
            error_exclusion: Duration::from_secs(30),
            empty_protection: EmptyProtection::default(),
            cache_file: None,
            startup_timeout: Duration::from_secs(3),
            cache: CacheOptions::default(),
        }
    }
}

impl DiscoveryOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the filter.
    pub fn with_filter(
        mut self,
        filter: impl Fn(&Instance) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Sets how long an instance noted with an error is left out.
    pub fn with_error_exclusion(mut self, exclusion: Duration) -> Self {
        self.error_exclusion = exclusion;
        self
    }

    /// Sets the empty protection.
    pub fn with_empty_protection(mut self, protection: EmptyProtection) -> Self {
        self.empty_protection = protection;
        self
    }

    /// Sets the cache file.
    pub fn with_cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Sets how long start-up waits for the backend.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets the cache's options.
    pub fn with_cache(mut self, cache: CacheOptions) -> Self {
        self.cache = cache;
        self
    }
}

/// Where the view shown comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewSource {
    /// Nothing yet: the backend did not answer and there was no cache
    /// file.
    Nothing,
    /// The cache file, because the backend was down at start-up.
    CacheFile,
    /// The store.
    Live,
}

/// The state of a [`Discovery`]'s view.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryStatus {
    /// Where the view comes from.
    pub source: ViewSource,
    /// The backend is unreachable: the view may be out of date.
    pub stale: bool,
    /// The store shows no instance, and the view kept its last non-empty
    /// state (see [`EmptyProtection`]).
    pub protected: bool,
    /// Instances in the view, disabled ones included.
    pub instances: usize,
    /// Records skipped because they do not parse or disagree with their
    /// key.
    pub skipped: usize,
}

struct View {
    all: Vec<Instance>,
    last_nonempty: Vec<Instance>,
    status: DiscoveryStatus,
}

struct Inner {
    dir: String,
    service: String,
    options: DiscoveryOptions,
    view: Mutex<View>,
    changed: watch::Sender<u64>,
    turn: AtomicUsize,
    sticky: Mutex<Option<String>>,
    errors: Mutex<HashMap<String, Instant>>,
    /// Saves of the cache file handed out, and the newest written (saves
    /// run on blocking threads, which may finish out of order).
    saves: Arc<(std::sync::atomic::AtomicU64, Mutex<u64>)>,
}

/// The format of the cache file; readers refuse other versions.
const CACHE_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    service: String,
    saved_at_ms: u64,
    instances: Vec<Instance>,
}

/// A cached view of one service; see the [module](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// use anykv_recipes::{Discovery, DiscoveryOptions, Instance, Registry, RegistryOptions};
/// let store = anykv_memory::MemoryStore::new().into_dyn();
/// let registry = Registry::new(store.clone(), RegistryOptions::new())?;
/// let _a = registry.register(Instance::new("web", "a", "10.0.0.1", 80)).await?;
/// let _b = registry.register(Instance::new("web", "b", "10.0.0.2", 80)).await?;
/// let web = Discovery::open(store, "web", DiscoveryOptions::new()).await?;
/// let picks: Vec<String> = (0..4).filter_map(|_| web.pick()).map(|i| i.id).collect();
/// assert_eq!(picks, ["a", "b", "a", "b"]);
/// web.note_error("a"); // a failed: leave it out for a while
/// assert_eq!(web.pick().map(|i| i.id), Some("b".into()));
/// # Ok(())
/// # }
/// ```
pub struct Discovery {
    inner: Arc<Inner>,
    cache: Cache,
    _task: TaskGuard,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("service", &self.inner.service)
            .field("status", &self.status())
            .finish()
    }
}

impl Discovery {
    /// Follows `service` and waits for its first listing, at most
    /// `options.startup_timeout`; past that it starts from the cache file,
    /// if any, and goes on waiting in the background. Fails for a bad
    /// service name or prefix, a backend without watches, or a closed
    /// store; never because the backend is unreachable.
    pub async fn open(
        store: Arc<dyn Store>,
        service: &str,
        options: DiscoveryOptions,
    ) -> Result<Discovery> {
        check_segment("service name", service)?;
        let prefix = anykv_core::key::normalize_prefix(&options.prefix)?;
        let dir = join(&prefix, service);
        let cache = Cache::open(store, &dir, options.cache.clone())?;
        let events = cache.subscribe();
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            dir,
            service: service.to_owned(),
            options,
            view: Mutex::new(View {
                all: Vec::new(),
                last_nonempty: Vec::new(),
                status: DiscoveryStatus {
                    source: ViewSource::Nothing,
                    stale: false,
                    protected: false,
                    instances: 0,
                    skipped: 0,
                },
            }),
            changed,
            turn: AtomicUsize::new(0),
            sticky: Mutex::new(None),
            errors: Mutex::new(HashMap::new()),
            saves: Arc::default(),
        });
        let started = tokio::time::timeout(inner.options.startup_timeout, cache.ready()).await;
        match started {
            Ok(result) => result?,
            Err(_) => {
                if let Some(path) = inner.options.cache_file.clone() {
                    let service = inner.service.clone();
                    let loaded = tokio::task::spawn_blocking(move || load(&path, &service))
                        .await
                        .unwrap_or_else(|e| Err(format!("the loader failed: {e}")));
                    match loaded {
                        Ok(instances) => {
                            let mut view = inner.view.lock();
                            view.status.source = ViewSource::CacheFile;
                            view.status.stale = true;
                            view.status.instances = instances.len();
                            view.last_nonempty = instances.clone();
                            view.all = instances;
                        }
                        Err(e) => tracing::warn!("discovery of {}: {e}", inner.service),
                    }
                }
            }
        }
        // When the first live listing replaced a view from the cache file:
        // a recovery, for the protection's grace.
        let mut from_file = None;
        recompute(&inner, &cache, &mut from_file);
        let task = tokio::spawn(maintain(inner.clone(), cache.clone(), events, from_file));
        Ok(Discovery {
            inner,
            cache,
            _task: TaskGuard(task),
        })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The state of the view.
    pub fn status(&self) -> DiscoveryStatus {
        self.inner.view.lock().status.clone()
    }

    /// Every instance in the view, disabled ones included, by id.
    pub fn all_instances(&self) -> Vec<Instance> {
        self.inner.view.lock().all.clone()
    }

    /// The instances [`Discovery::pick`] chooses from: enabled, accepted by
    /// the filter, by id (instances noted with errors included).
    pub fn instances(&self) -> Vec<Instance> {
        let filter = self.inner.options.filter.clone();
        self.inner
            .view
            .lock()
            .all
            .iter()
            .filter(|i| i.enabled && filter.as_ref().is_none_or(|f| f(i)))
            .cloned()
            .collect()
    }

    /// One instance, by the strategy, leaving out those noted with an error
    /// unless every instance is; `None` when there is none.
    pub fn pick(&self) -> Option<Instance> {
        let eligible = self.instances();
        if eligible.is_empty() {
            return None;
        }
        let now = Instant::now();
        let healthy: Vec<&Instance> = {
            let mut errors = self.inner.errors.lock();
            errors.retain(|_, until| *until > now);
            eligible
                .iter()
                .filter(|i| !errors.contains_key(&i.id))
                .collect()
        };
        let pool: Vec<&Instance> = if healthy.is_empty() {
            eligible.iter().collect()
        } else {
            healthy
        };
        let chosen = match self.inner.options.strategy {
            Strategy::RoundRobin => {
                let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
                pool[turn % pool.len()]
            }
            Strategy::Random => weighted(&pool),
            Strategy::Sticky => {
                let mut sticky = self.inner.sticky.lock();
                match pool
                    .iter()
                    .find(|i| sticky.as_deref() == Some(i.id.as_str()))
                {
                    Some(same) => same,
                    None => {
                        let chosen = weighted(&pool);
                        *sticky = Some(chosen.id.clone());
                        chosen
                    }
                }
            }
        };
        Some(chosen.clone())
    }

    /// Reports that instance `id` failed: it is left out of
    /// [`Discovery::pick`] for [`DiscoveryOptions::error_exclusion`].
    pub fn note_error(&self, id: &str) {
        let until = far(Instant::now(), self.inner.options.error_exclusion);
        self.inner.errors.lock().insert(id.to_owned(), until);
        let mut sticky = self.inner.sticky.lock();
        if sticky.as_deref() == Some(id) {
            *sticky = None;
        }
    }

    /// Completes at the next change of the view or its status.
    pub async fn changed(&self) {
        let mut rx = self.inner.changed.subscribe();
        let _ = rx.changed().await;
    }

    /// The instances [`Discovery::instances`] returns, now and after every
    /// change (a slow reader sees the latest).
    pub fn changes(&self) -> impl Stream<Item = Vec<Instance>> + Send + 'static {
        let rx = self.inner.changed.subscribe();
        let discovery = Arc::downgrade(&self.inner);
        futures::stream::unfold((rx, true), move |(mut rx, first)| {
            let discovery = discovery.clone();
            async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                rx.borrow_and_update();
                let inner = discovery.upgrade()?;
                let filter = inner.options.filter.clone();
                let instances = inner
                    .view
                    .lock()
                    .all
                    .iter()
                    .filter(|i| i.enabled && filter.as_ref().is_none_or(|f| f(i)))
                    .cloned()
                    .collect();
                Some((instances, (rx, false)))
            }
        })
    }

    /// The cache underneath, with the raw records.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// `at + d`, or about thirty years on where that overflows.
fn far(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(at)
}

fn weighted<'a>(pool: &[&'a Instance]) -> &'a Instance {
    let total: u64 = pool.iter().map(|i| u64::from(i.weight)).sum();
    if total == 0 {
        return pool[fastrand::usize(..pool.len())];
    }
    let mut point = fastrand::u64(..total);
    for instance in pool {
        let w = u64::from(instance.weight);
        if point < w {
            return instance;
        }
        point -= w;
    }
    pool[pool.len() - 1]
}

/// Follows the cache, recomputing the view at every event and when a
/// protection grace runs out.
async fn maintain(
    inner: Arc<Inner>,
    cache: Cache,
    mut events: CacheEvents,
    mut from_file: Option<Instant>,
) {
    loop {
        let deadline = recompute(&inner, &cache, &mut from_file);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next() => {
                if event.is_none() {
                    recompute(&inner, &cache, &mut from_file);
                    return;
                }
            }
            () = sleep => {}
        }
    }
}

/// Recomputes the view; returns when the protection's grace ends, if it
/// is running.
fn recompute(inner: &Inner, cache: &Cache, from_file: &mut Option<Instant>) -> Option<Instant> {
    let (pairs, status) = cache.snapshot();
    let mut view = inner.view.lock();
    if !status.ready {
        if !view.status.stale {
            view.status.stale = true;
            drop(view);
            inner.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        return None;
    }
    if view.status.source == ViewSource::CacheFile && from_file.is_none() {
        *from_file = Some(Instant::now());
    }
    let mut skipped = 0;
    let mut fresh: Vec<Instance> = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        match Instance::from_pair(pair, &inner.dir) {
            Ok(instance) => fresh.push(instance),
            Err(_) => skipped += 1,
        }
    }
    let now = Instant::now();
    let mut deadline = None;
    let protect = match inner.options.empty_protection {
        EmptyProtection::Off => false,
        EmptyProtection::KeepLastNonEmpty { grace } => {
            let recovered = [status.recovered_at, *from_file]
                .into_iter()
                .flatten()
                .max();
            let grace_end = recovered.map(|t| far(t, grace)).filter(|end| *end > now);
            deadline = grace_end;
            fresh.is_empty()
                && !view.last_nonempty.is_empty()
                && (status.stale.is_some() || grace_end.is_some())
        }
    };
    let all = if protect {
        view.last_nonempty.clone()
    } else {
        fresh
    };
    let new_status = DiscoveryStatus {
        source: ViewSource::Live,
        stale: status.stale.is_some(),
        protected: protect,
        instances: all.len(),
        skipped,
    };
    if all == view.all && new_status == view.status {
        return deadline.filter(|_| protect);
    }
    if !protect && !all.is_empty() {
        view.last_nonempty = all.clone();
        if let Some(path) = inner.options.cache_file.clone() {
            let file = CacheFile {
                version: CACHE_FILE_VERSION,
                service: inner.service.clone(),
                saved_at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                instances: all.clone(),
            };
            let saves = inner.saves.clone();
            let number = saves.0.fetch_add(1, Ordering::Relaxed) + 1;
            tokio::task::spawn_blocking(move || {
                let mut newest = saves.1.lock();
                if *newest > number {
                    return;
                }
                *newest = number;
                if let Err(e) = save(&path, &file) {
                    tracing::warn!("discovery: cannot save {}: {e}", path.display());
                }
            });
        }
    }
    view.all = all;
    view.status = new_status;
    drop(view);
    inner.changed.send_modify(|v| *v = v.wrapping_add(1));
    deadline.filter(|_| protect)
}

fn save(path: &Path, file: &CacheFile) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(file)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

fn load(path: &Path, service: &str) -> Result<Vec<Instance>, String> {
    let body = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: CacheFile = serde_json::from_slice(&body)
        .map_err(|e| format!("{} is not a discovery cache file: {e}", path.display()))?;
    if file.version != CACHE_FILE_VERSION {
        return Err(format!(
            "{} is a version {} cache file; this discovery reads version {CACHE_FILE_VERSION}",
            path.display(),
            file.version
        ));
    }
    if file.service != service {
        return Err(format!(
            "{} holds service {:?}, not {service:?}",
            path.display(),
            file.service
        ));
    }
    Ok(file.instances)
}
