//! A list-then-watch view of a prefix, kept current by a watch, as
//! Kubernetes informers keep theirs.
//!
//! A [`Cache`] opens `watch_tree(prefix)`, whose initial state (one `Put`
//! per key, then `Synced`) is the listing, and applies every later event
//! to an in-memory map. Readers call [`Cache::get`] and [`Cache::list`];
//! followers call [`Cache::subscribe`] for [`CacheEvent`]s.
//!
//! When the watch fails (an error, its end, `Compacted`, a consumer that
//! fell behind), the cache marks itself stale and opens it again with
//! [`Backoff`]: from the last revision it applied where the backend can
//! resume, otherwise (and always after `Compacted`) with a fresh listing,
//! which it compares with what it holds and emits only the differences.
//! A watch that stays silent through an outage (backends resume their
//! streams by themselves) is caught by a probe: a one-key listing every
//! [`CacheOptions::probe_interval`]; when it fails the cache says it is
//! stale, and when it answers again the cache re-lists and emits the
//! differences. Meanwhile every read serves the last known state.
//!
//! Every event is applied at most once: a `Put` whose revision is not
//! newer than the entry's, or a `Delete` of an absent key or one older
//! than the entry, is dropped, so the events a resumed watch delivers
//! again never reach subscribers twice.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anykv_core::{
    Error, KvPair, ListOptions, Result, Store, WatchEvent, WatchOptions, WatchStream,
    DEFAULT_WATCH_BUFFER,
};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::util::{is_permanent, pause, Backoff, TaskGuard};

/// Options of a [`Cache`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Delays between attempts to watch again while the backend is
    /// unreachable.
    pub backoff: Backoff,
    /// How often the cache checks that the backend answers (`None`: never,
    /// and a silent outage goes unnoticed until the watch fails).
    pub probe_interval: Option<Duration>,
    /// How long a probe may take before the cache counts the backend as
    /// unreachable.
    pub probe_timeout: Duration,
    /// The watch's buffer ([`WatchOptions::buffer`]).
    pub watch_buffer: usize,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for CacheOptions {
    /// The default backoff, a probe every 2 s allowed 2 s, and the default
    /// watch buffer.
    fn default() -> Self {
        CacheOptions {
            backoff: Backoff::default(),
            probe_interval: Some(Duration::from_secs(2)),
            probe_timeout: Duration::from_secs(2),
            watch_buffer: DEFAULT_WATCH_BUFFER,
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl CacheOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how often, and how patiently, the backend is probed; `None`
    /// turns probing off.
    pub fn with_probe(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.probe_interval = interval;
        self.probe_timeout = timeout;
        self
    }
}

/// What a [`Cache`] tells its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// An entry of the initial state.
    Init(KvPair),
    /// The initial state is complete: the `Init` events before it are the
    /// prefix's content at `revision`. Live events follow.
    InitDone {
        /// The store's revision at the listing.
        revision: u64,
    },
    /// An entry was created or changed (also when a re-listing found it
    /// new or different).
    Apply(KvPair),
    /// An entry was removed.
    Delete {
        /// The entry as the cache last held it.
        pair: KvPair,
        /// The revision of the delete, or of the re-listing that found the
        /// key gone.
        revision: u64,
    },
    /// The backend cannot be reached or the watch failed; the cache keeps
    /// serving its last known state.
    Stale {
        /// What went wrong.
        reason: String,
    },
    /// The backend answers again and the cache follows it: after a
    /// re-listing, the differences it found were emitted before this event;
    /// after a watch resumed from its last revision, the changes it missed
    /// follow as `Apply` and `Delete` events, in order.
    Resynced {
        /// The store's revision it is current with.
        revision: u64,
    },
}

/// A snapshot of a cache's health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStatus {
    /// The initial listing has arrived.
    pub ready: bool,
    /// Why the cache is stale, if it is: it serves its last known state.
    pub stale: Option<String>,
    /// The newest revision applied.
    pub revision: u64,
    /// The cache stopped for good (its store closed, or an error no retry
    /// can mend); it keeps its last state.
    pub stopped: Option<String>,
    /// When the cache last became current again after being stale.
    pub recovered_at: Option<std::time::Instant>,
}

struct State {
    entries: BTreeMap<String, KvPair>,
    status: CacheStatus,
    subscribers: Vec<mpsc::UnboundedSender<CacheEvent>>,
}

impl State {
    fn emit(&mut self, event: CacheEvent) {
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }
}

struct Shared {
    prefix: String,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    #[cfg(test)]
    flaw: Option<crate::util::Flaw>,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn mark_stale(&self, reason: String) {
        let mut st = self.state.lock();
        if st.status.stale.is_none() {
            st.status.stale = Some(reason.clone());
            st.emit(CacheEvent::Stale { reason });
            drop(st);
            self.bump();
        }
    }

    fn mark_fresh(&self) {
        let mut st = self.state.lock();
        if st.status.stale.take().is_some() {
            let revision = st.status.revision;
            st.status.recovered_at = Some(std::time::Instant::now());
            st.emit(CacheEvent::Resynced { revision });
            drop(st);
            self.bump();
        }
    }

    fn stop(&self, reason: String) {
        let mut st = self.state.lock();
        st.status.stopped = Some(reason);
        st.subscribers.clear();
        drop(st);
        self.bump();
    }

    /// Applies one live event, dropping what it already has.
    fn apply(&self, event: WatchEvent) {
        let mut st = self.state.lock();
        let revision = event.revision();
        match event {
            WatchEvent::Put(kv) => {
                if st
                    .entries
                    .get(&kv.key)
                    .is_some_and(|old| old.revision >= kv.revision)
                {
                    return;
                }
                st.entries.insert(kv.key.clone(), kv.clone());
                st.emit(CacheEvent::Apply(kv));
            }
            WatchEvent::Delete { key, revision } => {
                #[cfg(test)]
                if self.flaw == Some(crate::util::Flaw::CacheSkipsDeletes) {
                    return;
                }
                let held_older = st.entries.get(&key).map(|old| old.revision < revision);
                if held_older != Some(true) {
                    return;
                }
                if let Some(pair) = st.entries.remove(&key) {
                    st.emit(CacheEvent::Delete { pair, revision });
                }
            }
            WatchEvent::Synced { .. } => {}
        }
        st.status.revision = st.status.revision.max(revision);
        drop(st);
        self.bump();
    }

    /// Installs a complete listing: the initial state, or the differences
    /// from what the cache held.
    fn install(&self, listing: BTreeMap<String, KvPair>, revision: u64) {
        let mut st = self.state.lock();
        if !st.status.ready {
            for kv in listing.values() {
                st.emit(CacheEvent::Init(kv.clone()));
            }
            st.emit(CacheEvent::InitDone { revision });
            st.status.ready = true;
        } else {
            let old = std::mem::take(&mut st.entries);
            for (key, pair) in &old {
                if !listing.contains_key(key) {
                    st.emit(CacheEvent::Delete {
                        pair: pair.clone(),
                        revision,
                    });
                }
            }
            for (key, kv) in &listing {
                let same = old.get(key).is_some_and(|o| o.revision == kv.revision);
                #[cfg(test)]
                let same = same && self.flaw != Some(crate::util::Flaw::CacheRelistEmitsAll);
                if !same {
                    st.emit(CacheEvent::Apply(kv.clone()));
                }
            }
        }
        st.entries = listing;
        st.status.revision = st.status.revision.max(revision);
        if st.status.stale.take().is_some() {
            let revision = st.status.revision;
            st.status.recovered_at = Some(std::time::Instant::now());
            st.emit(CacheEvent::Resynced { revision });
        }
        drop(st);
        self.bump();
    }
}

/// A list-then-watch view of a prefix; see the [module](self).
///
/// Cloning gives another handle on the same view; the watch stops when the
/// last handle is dropped or [`Cache::close`] is called.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// use anykv_core::{PutOptions, Store};
/// use anykv_recipes::{Cache, CacheEvent, CacheOptions};
/// use futures::StreamExt;
///
/// let store = anykv_memory::MemoryStore::new().into_dyn();
/// store.put("config/a", "1".into(), PutOptions::new()).await?;
/// let cache = Cache::open(store.clone(), "config", CacheOptions::new())?;
/// cache.ready().await?;
/// assert_eq!(cache.get("config/a").map(|kv| kv.value), Some("1".into()));
///
/// let mut events = cache.subscribe();
/// assert!(matches!(events.next().await, Some(CacheEvent::Init(kv)) if kv.key == "config/a"));
/// assert!(matches!(events.next().await, Some(CacheEvent::InitDone { .. })));
/// store.put("config/b", "2".into(), PutOptions::new()).await?;
/// assert!(matches!(events.next().await, Some(CacheEvent::Apply(kv)) if kv.key == "config/b"));
/// assert_eq!(cache.list().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
    task: Arc<TaskGuard>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.shared.prefix)
            .field("status", &self.status())
            .finish()
    }
}

impl Cache {
    /// Starts following `prefix` (the keys `store.list(prefix)` returns).
    /// Returns at once; [`Cache::ready`] waits for the first listing.
    /// Fails with `InvalidKey` for a bad prefix and `Unsupported` for a
    /// backend without watches. Must be called within a Tokio runtime.
    pub fn open(store: Arc<dyn Store>, prefix: &str, options: CacheOptions) -> Result<Cache> {
        let prefix = anykv_core::key::normalize_prefix(prefix)?;
        let caps = store.capabilities();
        if !caps.watch {
            return Err(Error::unsupported(
                caps.backend,
                "watch",
                "a cache follows its prefix with a watch",
            ));
        }
        WatchOptions::new()
            .with_buffer(options.watch_buffer)
            .validate()?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                status: CacheStatus::default(),
                subscribers: Vec::new(),
            }),
            changed,
            #[cfg(test)]
            flaw: options.flaw,
        });
        let task = tokio::spawn(follow(store, shared.clone(), options));
        Ok(Cache {
            shared,
            task: Arc::new(TaskGuard(task)),
        })
    }

    /// The prefix followed, in canonical form.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The pair at `key` (relative to the store's root, as `get` takes it),
    /// as the cache last saw it.
    pub fn get(&self, key: &str) -> Option<KvPair> {
        let key = anykv_core::key::canonical_key(key).ok()?;
        self.shared.state.lock().entries.get(key).cloned()
    }

    /// Every entry, sorted by key: what `store.list(prefix)` returned when
    /// the cache was last current.
    pub fn list(&self) -> Vec<KvPair> {
        self.shared.state.lock().entries.values().cloned().collect()
    }

    /// Every entry and the status, read together.
    pub fn snapshot(&self) -> (Vec<KvPair>, CacheStatus) {
        let st = self.shared.state.lock();
        (st.entries.values().cloned().collect(), st.status.clone())
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        self.shared.state.lock().entries.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its health: ready, stale, revision, stopped.
    pub fn status(&self) -> CacheStatus {
        self.shared.state.lock().status.clone()
    }

    /// Whether the cache serves a state that may be out of date.
    pub fn is_stale(&self) -> bool {
        self.shared.state.lock().status.stale.is_some()
    }

    /// Waits until the initial listing has arrived; fails if the cache
    /// stopped before (its store closed, or the prefix cannot be watched).
    /// Wrap it in a timeout: while the backend is unreachable it waits.
    pub async fn ready(&self) -> Result<()> {
        self.wait_for(|s| s.ready || s.stopped.is_some()).await;
        match self.status() {
            CacheStatus { ready: true, .. } => Ok(()),
            CacheStatus { stopped, .. } => Err(Error::Unavailable {
                backend: "anykv-recipes",
                message: format!(
                    "the cache of {:?} stopped: {}",
                    self.shared.prefix,
                    stopped.unwrap_or_default()
                ),
                source: None,
            }),
        }
    }

    /// Waits until `condition` holds for the cache's status.
    pub async fn wait_for(&self, mut condition: impl FnMut(&CacheStatus) -> bool) {
        let mut rx = self.shared.changed.subscribe();
        loop {
            if condition(&self.status()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Events from now on. A subscriber first receives the current state
    /// (`Init` per entry, `InitDone`, and `Stale` if the cache is stale) or,
    /// before the first listing, the `Init` events as it arrives; then
    /// every change, in order, each once. The stream ends when the cache
    /// stops. Events are queued without bound for a slow subscriber.
    pub fn subscribe(&self) -> CacheEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.shared.state.lock();
        if st.status.stopped.is_some() {
            return CacheEvents { rx };
        }
        if st.status.ready {
            for kv in st.entries.values() {
                let _ = tx.send(CacheEvent::Init(kv.clone()));
            }
            let _ = tx.send(CacheEvent::InitDone {
                revision: st.status.revision,
            });
            if let Some(reason) = &st.status.stale {
                let _ = tx.send(CacheEvent::Stale {
                    reason: reason.clone(),
                });
            }
        }
        st.subscribers.push(tx);
        CacheEvents { rx }
    }

    /// Stops following: the watch is dropped, subscribers' streams end, and
    /// reads go on serving the last state.
    pub fn close(&self) {
        self.task.0.abort();
        self.shared.stop("the cache was closed".into());
    }
}

/// The events of a [`Cache`], from [`Cache::subscribe`].
#[derive(Debug)]
pub struct CacheEvents {
    rx: mpsc::UnboundedReceiver<CacheEvent>,
}

impl Stream for CacheEvents {
    type Item = CacheEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CacheEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Why a watch stopped being followed.
enum Broke {
    /// Resume after the last revision applied, if the backend can.
    Resume(String),
    /// Re-list (`Compacted`, or the probe found the backend back).
    Relist(String),
    /// Nothing more can be done.
    Stop(String),
}

/// The cache's task: watch, apply, and start again with backoff.
async fn follow(store: Arc<dyn Store>, shared: Arc<Shared>, options: CacheOptions) {
    let resumable = store.capabilities().watch_resume;
    let mut attempt: u32 = 0;
    let mut relist = true;
    loop {
        let from = if relist || !resumable {
            None
        } else {
            // One revision back: a backend may give several deletes one
            // revision (an etcd lease expiring); those seen already are
            // dropped as duplicates.
            Some(shared.state.lock().status.revision.saturating_sub(1))
        };
        let mut watch_options = WatchOptions::new().with_buffer(options.watch_buffer);
        watch_options.from_revision = from;
        let broke = match store.watch_tree(&shared.prefix, watch_options).await {
            Ok(stream) => {
                let listing = from.is_none();
                let mut recovered = false;
                let broke = run(&store, &shared, &options, stream, listing, &mut recovered).await;
                if recovered {
                    attempt = 0;
                    // A listing that was installed needs no other.
                    relist &= !listing;
                }
                broke
            }
            Err(e) if is_permanent(&e) => Broke::Stop(e.to_string()),
            Err(e) => Broke::Resume(e.to_string()),
        };
        match broke {
            Broke::Stop(reason) => {
                shared.stop(reason);
                return;
            }
            Broke::Relist(reason) => {
                relist = true;
                shared.mark_stale(reason);
            }
            Broke::Resume(reason) => {
                // Until a listing is installed, only a listing will do (the
                // first one, or one asked for after `Compacted`).
                relist |= !shared.state.lock().status.ready;
                shared.mark_stale(reason);
            }
        }
        pause(options.backoff.delay(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Follows one watch stream until it breaks; `recovered` says whether it
/// got through (a listing installed, or a resumed watch confirmed).
async fn run(
    store: &Arc<dyn Store>,
    shared: &Shared,
    options: &CacheOptions,
    mut stream: WatchStream,
    listing: bool,
    recovered: &mut bool,
) -> Broke {
    let mut snapshot: Option<BTreeMap<String, KvPair>> = listing.then(BTreeMap::new);
    if !listing {
        // A resumed watch says nothing until something changes: ask the
        // backend once that it answers before saying the cache is current.
        if let Err(reason) = probe(store, shared, options).await {
            return Broke::Resume(reason);
        }
        *recovered = true;
        shared.mark_fresh();
    }
    let mut probing = false;
    let mut probe_fut = next_probe(store.clone(), shared.prefix.clone(), options.clone());
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(WatchEvent::Synced { revision })) => {
                    if let Some(listing) = snapshot.take() {
                        shared.install(listing, revision);
                        *recovered = true;
                    } else {
                        shared.apply(WatchEvent::Synced { revision });
                    }
                }
                Some(Ok(event)) => match &mut snapshot {
                    Some(listing) => {
                        if let WatchEvent::Put(kv) = event {
                            listing.insert(kv.key.clone(), kv);
                        }
                    }
                    None => shared.apply(event),
                },
                Some(Err(e)) if e.kind() == anykv_core::ErrorKind::Compacted => {
                    return Broke::Relist(e.to_string())
                }
                Some(Err(e)) if e.kind() == anykv_core::ErrorKind::Closed => {
                    return Broke::Stop(e.to_string())
                }
                Some(Err(e)) => return Broke::Resume(e.to_string()),
                None => return Broke::Resume("the watch ended".into()),
            },
            result = &mut probe_fut => {
                match result {
                    Ok(()) if probing => {
                        // The backend answers again: re-list, emitting the
                        // differences, rather than trust a stream that was
                        // silent through the outage.
                        return Broke::Relist("the backend is reachable again".into());
                    }
                    Ok(()) => {}
                    Err(reason) if reason.closed => return Broke::Stop(reason.message),
                    Err(reason) => {
                        probing = true;
                        shared.mark_stale(reason.message);
                    }
                }
                probe_fut = next_probe(store.clone(), shared.prefix.clone(), options.clone());
            }
        }
    }
}

struct ProbeFailure {
    message: String,
    closed: bool,
}

type ProbeFuture = Pin<Box<dyn std::future::Future<Output = Result<(), ProbeFailure>> + Send>>;

/// The next periodic probe, or a future that never completes when probing
/// is off.
fn next_probe(store: Arc<dyn Store>, prefix: String, options: CacheOptions) -> ProbeFuture {
    Box::pin(async move {
        let Some(interval) = options.probe_interval else {
            return std::future::pending().await;
        };
        tokio::time::sleep(interval).await;
        probe_once(&store, &prefix, options.probe_timeout).await
    })
}

async fn probe(
    store: &Arc<dyn Store>,
    shared: &Shared,
    options: &CacheOptions,
) -> Result<(), String> {
    probe_once(store, &shared.prefix, options.probe_timeout)
        .await
        .map_err(|f| f.message)
}

/// One small listing, bounded by `timeout`.
async fn probe_once(
    store: &Arc<dyn Store>,
    prefix: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let call = store.list_with(prefix, ListOptions::new().with_limit(1).keys_only());
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProbeFailure {
            closed: e.kind() == anykv_core::ErrorKind::Closed,
            message: format!("the backend does not answer: {e}"),
        }),
        Err(_) => Err(ProbeFailure {
            closed: false,
            message: format!("the backend did not answer within {timeout:?}"),
        }),
    }
}
