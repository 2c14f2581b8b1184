//! A service registry: instances written under one lease per registry,
//! kept alive, and written again whenever they go missing.
//!
//! A [`Registry`] runs one task that owns the registry's lease. Each
//! [`Registry::register`] writes the instance's record (see [`Instance`]
//! for the key and the JSON) bound to that lease, and resolves once it is
//! in the store. The task then keeps it there:
//!
//! - when the lease is lost (expired through an outage, revoked, or the
//!   server forgot it), it grants a new lease and writes every instance
//!   again, retrying with [`Backoff`] while the backend is unreachable;
//! - it follows each service it registers in with a [`Cache`], so a record
//!   deleted or overwritten behind its back (another client, a server that
//!   lost data) is written again, and when the cache comes back from an
//!   outage every record is checked;
//! - [`Registry::statuses`] reports what it is doing.
//!
//! An instance leaves on [`Registration::deregister`], when its
//! [`Registration`] is dropped, on [`Registry::close`], and when the last
//! `Registry` handle is dropped (the lease is revoked, so every record of
//! the registry vanishes at once). If the process dies, the records vanish
//! when the lease expires.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::{Bytes, Error, ErrorKind, Lease, LeaseId, PutOptions, Result, Store};
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::cache::{Cache, CacheEvent, CacheEvents, CacheOptions};
use crate::instance::{Instance, DEFAULT_SERVICES_PREFIX};
use crate::util::{is_permanent, join, Backoff};

/// Options of a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Where services live (`{prefix}/{service}/{id}`). Default
    /// [`DEFAULT_SERVICES_PREFIX`].
    pub prefix: String,
    /// The lease's TTL (raised to the backend's `min_ttl`): the records of
    /// a registry whose process died vanish this long after its last
    /// keep-alive. Default 10 s.
    pub ttl: Duration,
    /// Delays between attempts while the backend is unreachable.
    pub backoff: Backoff,
    /// Options of the caches that watch the registered records.
    pub cache: CacheOptions,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            prefix: DEFAULT_SERVICES_PREFIX.into(),
            ttl: Duration::from_secs(10),
            backoff: Backoff::default(),
            cache: CacheOptions::default(),
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl RegistryOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the options of the caches that watch the records.
    pub fn with_cache(mut self, cache: CacheOptions) -> Self {
        self.cache = cache;
        self
    }
}

/// What a registry is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryState {
    /// Getting a lease or writing records for the first time.
    Connecting,
    /// Every instance is in the store under the current lease.
    Registered,
    /// The last attempt failed; the next comes after `retry_in`.
    Retrying {
        /// Attempts failed in a row.
        attempt: u32,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// Closed: nothing is registered any more.
    Closed,
}

/// A registry's status, from [`Registry::status`] and
/// [`Registry::statuses`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStatus {
    /// What it is doing.
    pub state: RegistryState,
    /// The current lease, if any.
    pub lease: Option<LeaseId>,
    /// Instances registered.
    pub instances: usize,
    /// Leases granted so far: more than 1 means a lease was lost and
    /// everything was registered again.
    pub generation: u64,
    /// Records written again after they went missing or were changed
    /// behind the registry's back.
    pub repairs: u64,
    /// The last error met, if any.
    pub last_error: Option<String>,
}

enum Command {
    Register {
        key: String,
        instance: Instance,
        body: Bytes,
        serial: u64,
        ack: oneshot::Sender<Result<()>>,
    },
    Deregister {
        key: String,
        serial: Option<u64>,
        ack: Option<oneshot::Sender<Result<()>>>,
    },
    Close {
        ack: oneshot::Sender<Result<()>>,
    },
}

/// A service registry on one store; see the [module](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// use anykv_core::Store;
/// use anykv_recipes::{Instance, Registry, RegistryOptions};
/// let store = anykv_memory::MemoryStore::new().into_dyn();
/// let registry = Registry::new(store.clone(), RegistryOptions::new())?;
/// let web1 = registry
///     .register(Instance::new("web", "web-1", "10.0.0.1", 8080).with_metadata("zone", "a"))
///     .await?;
/// assert!(store.get("services/web/web-1").await?.is_some());
/// web1.deregister().await?;
/// assert!(store.get("services/web/web-1").await?.is_none());
/// registry.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Registry {
    tx: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<RegistryStatus>,
    prefix: String,
    serial: Arc<AtomicU64>,
    backend: &'static str,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.prefix)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Registry {
    /// A registry writing under `options.prefix`. Fails with `Unsupported`
    /// for a backend without leases or watches and `InvalidKey` for a bad
    /// prefix. Must be called within a Tokio runtime.
    pub fn new(store: Arc<dyn Store>, options: RegistryOptions) -> Result<Registry> {
        let prefix = anykv_core::key::normalize_prefix(&options.prefix)?;
        let caps = store.capabilities();
        if !caps.leases || !caps.watch {
            return Err(Error::unsupported(
                caps.backend,
                "register",
                "a registry needs leases and watches",
            ));
        }
        let backend = caps.backend;
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(RegistryStatus {
            state: RegistryState::Connecting,
            lease: None,
            instances: 0,
            generation: 0,
            repairs: 0,
            last_error: None,
        });
        let actor = Actor {
            store,
            options,
            entries: BTreeMap::new(),
            dirty: BTreeSet::new(),
            doomed: BTreeSet::new(),
            waiters: BTreeMap::new(),
            written: Vec::new(),
            lease: None,
            caches: BTreeMap::new(),
            events: SelectAll::new(),
            status: status_tx,
        };
        tokio::spawn(actor.run(rx));
        Ok(Registry {
            tx,
            status,
            prefix,
            serial: Arc::new(AtomicU64::new(1)),
            backend,
        })
    }

    fn closed(&self) -> Error {
        Error::closed(self.backend)
    }

    /// Registers `instance` (replacing a registered instance of the same
    /// service and id) and resolves once its record is in the store.
    /// While the backend is unreachable it waits, retrying with backoff;
    /// dropping the future gives up and deregisters it. Fails at once for
    /// a bad service name or id and for a record the backend refuses.
    pub async fn register(&self, instance: Instance) -> Result<Registration> {
        let key = instance.key(&self.prefix)?;
        let body = instance.to_json()?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        let command = Command::Register {
            key: key.clone(),
            instance: instance.clone(),
            body,
            serial,
            ack,
        };
        self.tx.send(command).map_err(|_| self.closed())?;
        done.await.map_err(|_| self.closed())??;
        Ok(Registration {
            key,
            instance,
            serial,
            tx: self.tx.downgrade(),
            done: false,
        })
    }

    /// Deregisters the instance `id` of `service`: its record is deleted.
    /// An error means the delete failed for now; the registry keeps trying,
    /// and the record goes with the lease in any case.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<()> {
        let key = Instance::new(service, id, "", 0).key(&self.prefix)?;
        let (ack, done) = oneshot::channel();
        let command = Command::Deregister {
            key,
            serial: None,
            ack: Some(ack),
        };
        self.tx.send(command).map_err(|_| self.closed())?;
        done.await.map_err(|_| self.closed())?
    }

    /// What the registry is doing now.
    pub fn status(&self) -> RegistryStatus {
        self.status.borrow().clone()
    }

    /// The status now, then at every change (a slow reader sees the
    /// latest). Ends when the registry has stopped.
    pub fn statuses(&self) -> impl Stream<Item = RegistryStatus> + Send + 'static {
        let rx = self.status.clone();
        futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let status = rx.borrow_and_update().clone();
            Some((status, (rx, false)))
        })
    }

    /// Waits until the status satisfies `condition`; `false` if the
    /// registry stopped first.
    pub async fn wait_for(&self, mut condition: impl FnMut(&RegistryStatus) -> bool) -> bool {
        let mut rx = self.status.clone();
        let ok = rx.wait_for(|s| condition(s)).await.is_ok();
        ok
    }

    /// Revokes the lease, so every instance leaves at once, and stops.
    /// Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Close { ack }).is_err() {
            return Ok(());
        }
        done.await.unwrap_or(Ok(()))
    }
}

/// One registered instance. Dropping it deregisters the instance in the
/// background; [`Registration::deregister`] waits for the delete.
pub struct Registration {
    key: String,
    instance: Instance,
    serial: u64,
    tx: mpsc::WeakUnboundedSender<Command>,
    done: bool,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Registration {
    /// The instance's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instance as registered.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Deregisters the instance and waits until its record is deleted
    /// (see [`Registry::deregister`]). Nothing happens if the same service
    /// and id were registered again since.
    pub async fn deregister(mut self) -> Result<()> {
        self.done = true;
        let Some(tx) = self.tx.upgrade() else {
            return Ok(());
        };
        let (ack, done) = oneshot::channel();
        let command = Command::Deregister {
            key: self.key.clone(),
            serial: Some(self.serial),
            ack: Some(ack),
        };
        if tx.send(command).is_err() {
            return Ok(());
        }
        done.await.unwrap_or(Ok(()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(tx) = self.tx.upgrade() {
            let _ = tx.send(Command::Deregister {
                key: self.key.clone(),
                serial: Some(self.serial),
                ack: None,
            });
        }
    }
}

/// Now plus `d`, or about thirty years on where that overflows.
fn far(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

struct Entry {
    body: Bytes,
    serial: u64,
    service_dir: String,
}

struct Actor {
    store: Arc<dyn Store>,
    options: RegistryOptions,
    entries: BTreeMap<String, Entry>,
    /// Keys to write (again).
    dirty: BTreeSet<String>,
    /// Keys deregistered whose delete has not succeeded yet.
    doomed: BTreeSet<String>,
    waiters: BTreeMap<String, (u64, oneshot::Sender<Result<()>>)>,
    /// Registrations whose record is written, answered once the status
    /// says so (so a caller sees the lease in the status as soon as its
    /// `register` returns).
    written: Vec<(String, oneshot::Sender<Result<()>>)>,
    lease: Option<Lease>,
    caches: BTreeMap<String, Cache>,
    events: SelectAll<CacheEvents>,
    status: watch::Sender<RegistryStatus>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut attempt = 0u32;
        let mut retry_at: Option<Instant> = None;
        loop {
            let busy = !self.dirty.is_empty()
                || !self.doomed.is_empty()
                || (!self.entries.is_empty() && self.lease.as_ref().is_none_or(Lease::is_lost));
            if busy && retry_at.is_none_or(|t| Instant::now() >= t) {
                match self.work().await {
                    Ok(()) => {
                        attempt = 0;
                        retry_at = None;
                        self.set_state(RegistryState::Registered, None);
                        self.answer_written();
                    }
                    Err(e) => {
                        let retry_in = self.options.backoff.delay(attempt);
                        attempt = attempt.saturating_add(1);
                        retry_at = Some(far(retry_in));
                        tracing::debug!("registry: {e}; retrying in {retry_in:?}");
                        self.set_state(
                            RegistryState::Retrying { attempt, retry_in },
                            Some(e.to_string()),
                        );
                        self.answer_written();
                        if e.kind() == ErrorKind::Closed {
                            let _ = self.shutdown().await;
                            return;
                        }
                    }
                }
            }
            let lease_lost = self.lease.as_ref().map(Lease::lost);
            let watching = !self.events.is_empty();
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Close { ack }) => {
                        let result = self.shutdown().await;
                        let _ = ack.send(result);
                        return;
                    }
                    Some(command) => self.handle(command).await,
                    None => {
                        let _ = self.shutdown().await;
                        return;
                    }
                },
                () = async {
                    match lease_lost {
                        Some(lost) => lost.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.lease = None;
                    self.dirty.extend(self.entries.keys().cloned());
                    self.set_state(RegistryState::Connecting, Some("the lease was lost".into()));
                    retry_at = None;
                }
                Some(event) = self.events.next(), if watching => self.check(event),
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            }
        }
    }

    /// Answers the registrations whose record is written; a caller that
    /// gave up waiting is deregistered.
    fn answer_written(&mut self) {
        for (key, waiter) in std::mem::take(&mut self.written) {
            if waiter.send(Ok(())).is_err() {
                self.entries.remove(&key);
                self.doomed.insert(key);
            }
        }
    }

    fn set_state(&self, state: RegistryState, error: Option<String>) {
        let lease = self.lease.as_ref().map(Lease::id);
        let instances = self.entries.len();
        self.status.send_modify(|s| {
            s.state = state;
            s.lease = lease;
            s.instances = instances;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                key,
                instance,
                body,
                serial,
                ack,
            } => {
                let service_dir = join(
                    &anykv_core::key::normalize_prefix(&self.options.prefix).unwrap_or_default(),
                    &instance.service,
                );
                if let Some((_, old)) = self.waiters.remove(&key) {
                    let _ = old.send(Ok(()));
                }
                self.doomed.remove(&key);
                self.follow(&service_dir);
                self.entries.insert(
                    key.clone(),
                    Entry {
                        body,
                        serial,
                        service_dir,
                    },
                );
                self.dirty.insert(key.clone());
                self.waiters.insert(key, (serial, ack));
            }
            Command::Deregister { key, serial, ack } => {
                let ours = self
                    .entries
                    .get(&key)
                    .is_some_and(|e| serial.is_none_or(|s| s == e.serial));
                if !ours {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                    return;
                }
                self.forget(&key);
                let result = self.store.delete(&key).await.map(|_| ());
                if result.is_err() {
                    self.doomed.insert(key);
                }
                let state = self.status.borrow().state.clone();
                self.set_state(state, None);
                if let Some(ack) = ack {
                    let _ = ack.send(result);
                }
            }
            Command::Close { .. } => {}
        }
    }

    fn forget(&mut self, key: &str) {
        self.entries.remove(key);
        self.dirty.remove(key);
        if let Some((_, waiter)) = self.waiters.remove(key) {
            let _ = waiter.send(Err(Error::InvalidArgument(format!(
                "{key:?} was deregistered before it was written"
            ))));
        }
    }

    /// Starts watching the records of a service, once.
    fn follow(&mut self, service_dir: &str) {
        if self.caches.contains_key(service_dir) {
            return;
        }
        match Cache::open(self.store.clone(), service_dir, self.options.cache.clone()) {
            Ok(cache) => {
                self.events.push(cache.subscribe());
                self.caches.insert(service_dir.to_owned(), cache);
            }
            Err(e) => tracing::warn!("registry: cannot watch {service_dir}: {e}"),
        }
    }

    /// Marks for writing every record the caches show missing or changed.
    fn check(&mut self, event: CacheEvent) {
        #[cfg(test)]
        if self.options.flaw == Some(crate::util::Flaw::RegistryNoRepair) {
            return;
        }
        let keys: Vec<String> = match &event {
            CacheEvent::Delete { pair, .. } | CacheEvent::Apply(pair) => vec![pair.key.clone()],
            CacheEvent::InitDone { .. } | CacheEvent::Resynced { .. } => {
                self.entries.keys().cloned().collect()
            }
            CacheEvent::Init(_) | CacheEvent::Stale { .. } => return,
        };
        let mut repairs = 0;
        for key in keys {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if self.dirty.contains(&key) {
                continue;
            }
            let Some(cache) = self.caches.get(&entry.service_dir) else {
                continue;
            };
            if !cache.status().ready {
                continue;
            }
            if cache.get(&key).is_none_or(|kv| kv.value != entry.body) {
                self.dirty.insert(key);
                repairs += 1;
            }
        }
        if repairs > 0 {
            self.status.send_modify(|s| s.repairs += repairs);
        }
    }

    /// Deletes what was deregistered, gets a lease if needed, and writes
    /// every record marked dirty.
    async fn work(&mut self) -> Result<()> {
        for key in self.doomed.clone() {
            match self.store.delete(&key).await {
                Ok(_) => {
                    self.doomed.remove(&key);
                }
                Err(e) if is_permanent(&e) && e.kind() != ErrorKind::Closed => {
                    self.doomed.remove(&key);
                }
                Err(e) => return Err(e),
            }
        }
        if self.entries.is_empty() {
            return Ok(());
        }
        let lease_id = match self.lease.as_ref().filter(|l| !l.is_lost()) {
            Some(lease) => lease.id(),
            None => {
                self.lease = None;
                let ttl = self.options.ttl.max(self.store.capabilities().min_ttl);
                let lease = self.store.grant_lease(ttl).await?;
                let id = lease.id();
                self.lease = Some(lease);
                self.dirty.extend(self.entries.keys().cloned());
                self.status.send_modify(|s| s.generation += 1);
                id
            }
        };
        for key in self.dirty.clone() {
            let Some(entry) = self.entries.get(&key) else {
                self.dirty.remove(&key);
                continue;
            };
            let put = PutOptions::new().with_lease(lease_id);
            match self.store.put(&key, entry.body.clone(), put).await {
                Ok(_) => {
                    self.dirty.remove(&key);
                    if let Some((_, waiter)) = self.waiters.remove(&key) {
                        self.written.push((key, waiter));
                    }
                }
                Err(e) if e.kind() == ErrorKind::LeaseLost => {
                    self.lease = None;
                    return Err(e);
                }
                Err(e) if is_permanent(&e) && e.kind() != ErrorKind::Closed => {
                    self.entries.remove(&key);
                    self.dirty.remove(&key);
                    match self.waiters.remove(&key) {
                        Some((_, waiter)) => {
                            let _ = waiter.send(Err(e));
                        }
                        None => tracing::warn!("registry: dropped {key}: {e}"),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Revokes the lease (every record vanishes) and stops.
    async fn shutdown(&mut self) -> Result<()> {
        let result = match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        };
        for key in std::mem::take(&mut self.entries).into_keys() {
            self.forget(&key);
        }
        for cache in self.caches.values() {
            cache.close();
        }
        self.set_state(RegistryState::Closed, None);
        result
    }
}
