//! Leader election: candidates queue in creation order, each waiting on the
//! one before it, as etcd's `concurrency.Election` and Curator's
//! `LeaderLatch` do.
//!
//! # How it works
//!
//! [`Election::campaign`] grants a lease and creates the candidate's key
//! `{prefix}/{name}/{id}` bound to it (create-only, a random `id`). The
//! revision of that write is the candidate's **token**: revisions of one
//! store only grow, so candidates queue in the order they arrived. The
//! candidate with the smallest token leads. Every other candidate watches
//! only its predecessor (the candidate just ahead of it), so when a
//! candidate leaves, one waiter wakes, not all of them: no herd. When its
//! predecessor's key is gone the waiter lists the candidates again; if none
//! is ahead it leads, otherwise it watches its new predecessor.
//!
//! The token is the leadership's fencing token: a later leader was a later
//! candidate, so tokens strictly increase from one term to the next. Hand
//! it to the resource the leader writes, which refuses older tokens.
//!
//! # When leadership ends
//!
//! [`Leadership::lost`] fires when the lease is lost (the backend's
//! `Lease::lost()`, which every anykv backend fires before the server can
//! expire the lease and so before the next candidate can see the key go),
//! when the candidate's key is deleted or replaced by someone else, when
//! its store is closed, and on [`Leadership::resign`] or drop — there it
//! fires **before** the key is deleted, so it always precedes the next
//! leader's win. A leader stops acting on its leadership as soon as `lost`
//! fires. (An application that closes the [`Store`] itself, under a live
//! leadership, lets the store revoke the lease first: the store deletes
//! the key and then reports the loss, so close the leadership first.)
//!
//! # Suspended connections
//!
//! Leadership follows the lease, not the connection. A connection that is
//! down (ZooKeeper's SUSPENDED, an etcd or Redis client reconnecting) ends
//! nothing by itself: the leader stays leader, and the other candidates
//! keep waiting, until the backend reports the lease lost. Each backend
//! does so before the server can expire it: ZooKeeper when the session has
//! been disconnected for the loss deadline (`anykv_core::backend::loss_deadline`
//! of the lease's TTL), etcd and Redis when keep-alives have failed for that
//! long. So during an outage shorter than that the leader keeps leading; a
//! longer one ends its term, and it must campaign again ([`Terms`] does so
//! by itself).
//!
//! # Records
//!
//! A candidate's value is JSON: `{"value": "<string>"}` when created, and
//! `{"value": "<string>", "token": <u64>}` after a
//! [`Leadership::proclaim`] rewrote it (the rewrite changes the key's
//! revision, so the token travels in the value). A reader takes `token`
//! when present, else the key's revision.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anykv_core::{
    lost_signal, Bytes, Error, ErrorKind, KvPair, Lease, LostSignal, LostTrigger, PutOptions,
    Result, Store, WatchEvent, WatchOptions,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CacheEvent, CacheEvents, CacheOptions};
use crate::util::{check_segment, is_permanent, join, json_error, pause, Backoff, TaskGuard};

/// Options of an [`Election`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElectionOptions {
    /// Where elections live: the candidates of election `name` are under
    /// `{prefix}/{name}`. Default `elections`.
    pub prefix: String,
    /// The TTL of a candidate's lease (raised to the backend's `min_ttl`):
    /// a candidate that dies leaves the queue this long after its last
    /// keep-alive. Default 10 s.
    pub ttl: Duration,
    /// Delays between attempts while the backend is unreachable.
    pub backoff: Backoff,
    #[cfg(test)]
    pub(crate) flaw: Option<crate::util::Flaw>,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        ElectionOptions {
            prefix: "elections".into(),
            ttl: Duration::from_secs(10),
            backoff: Backoff::default(),
            #[cfg(test)]
            flaw: None,
        }
    }
}

impl ElectionOptions {
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
}

/// One candidate of an election, as its key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The candidate's id: the last segment of its key.
    pub id: String,
    /// Its value (the leader's is what [`Election::leader`] reports).
    pub value: String,
    /// Its place in the queue, and its fencing token if it leads.
    pub token: u64,
    /// Its key.
    pub key: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
}

fn encode(value: &str, token: Option<u64>) -> Result<Bytes> {
    let record = Record {
        value: value.to_owned(),
        token,
    };
    serde_json::to_vec(&record)
        .map(Bytes::from)
        .map_err(json_error)
}

fn decode(kv: &KvPair) -> Option<Candidate> {
    let record: Record = serde_json::from_slice(&kv.value).ok()?;
    let id = kv.key.rsplit('/').next()?.to_owned();
    Some(Candidate {
        id,
        value: record.value,
        token: record.token.unwrap_or(kv.revision),
        key: kv.key.clone(),
    })
}

/// Candidates sorted by token (malformed records are skipped).
fn queue(pairs: &[KvPair]) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = pairs.iter().filter_map(decode).collect();
    candidates.sort_by_key(|c| c.token);
    candidates
}

/// Elections on one store; see the [module](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// use anykv_recipes::{Election, ElectionOptions};
/// let store = anykv_memory::MemoryStore::new().into_dyn();
/// let election = Election::new(store, ElectionOptions::new());
/// let mut leadership = election.campaign("scheduler", "node-1").await?;
/// assert_eq!(election.leader("scheduler").await?.map(|l| l.value), Some("node-1".into()));
/// leadership.proclaim("node-1 (busy)").await?;
/// let token = leadership.token(); // hand it to what the leader writes
/// assert!(token > 0);
/// leadership.resign().await?;
/// assert_eq!(election.leader("scheduler").await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Election {
    store: Arc<dyn Store>,
    options: ElectionOptions,
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("store", &self.store)
            .field("options", &self.options)
            .finish()
    }
}

impl Election {
    /// Elections on `store`.
    pub fn new(store: Arc<dyn Store>, options: ElectionOptions) -> Self {
        Election { store, options }
    }

    fn dir(&self, name: &str) -> Result<String> {
        check_segment("election name", name)?;
        let prefix = anykv_core::key::normalize_prefix(&self.options.prefix)?;
        Ok(join(&prefix, name))
    }

    /// Joins election `name` with `value` and resolves when this candidate
    /// leads. Waits as long as others lead (wrap it in a timeout to bound
    /// that); dropping the future leaves the queue. Retries with backoff
    /// while the backend is unreachable, keeping its place while its lease
    /// lives; fails on errors no retry can mend (a bad name, a backend
    /// without leases or watches, a closed store).
    pub async fn campaign(&self, name: &str, value: impl Into<String>) -> Result<Leadership> {
        let dir = self.dir(name)?;
        let value = value.into();
        let caps = self.store.capabilities();
        if !caps.leases || !caps.watch {
            return Err(Error::unsupported(
                caps.backend,
                "campaign",
                "an election needs leases and watches",
            ));
        }
        let mut attempt = 0u32;
        loop {
            match self.try_campaign(name, &dir, &value).await {
                Ok(Some(leadership)) => return Ok(leadership),
                // The candidacy ended before leading: join again, after a
                // pause so that a key deleted over and over does not spin.
                Ok(None) => pause(self.options.backoff.delay(0)).await,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("campaign for {dir}: {e}; retrying");
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// One candidacy: `None` if it ended (lease lost, key gone) before
    /// leading.
    async fn try_campaign(&self, name: &str, dir: &str, value: &str) -> Result<Option<Leadership>> {
        let store = &self.store;
        let ttl = self.options.ttl.max(store.capabilities().min_ttl);
        let lease = store.grant_lease(ttl).await?;
        let body = encode(value, None)?;
        let (id, key, token) = loop {
            let id = format!("{:016x}", fastrand::u64(..));
            let key = join(dir, &id);
            let put = PutOptions::new().with_lease(lease.id());
            match store.atomic_put(&key, body.clone(), None, put).await {
                Ok(revision) => break (id, key, revision),
                Err(e) if e.kind() == ErrorKind::KeyExists => continue,
                Err(e) => return Err(e),
            }
        };
        let mut attempt = 0u32;
        loop {
            if lease.is_lost() {
                return Ok(None);
            }
            let step = async {
                let candidates = queue(&store.list(dir).await?);
                if !candidates.iter().any(|c| c.key == key) {
                    return Ok(Some(false));
                }
                let Some(predecessor) = candidates.iter().rev().find(|c| c.token < token) else {
                    return Ok(Some(true));
                };
                #[cfg(test)]
                if self.options.flaw == Some(crate::util::Flaw::ElectionDoesNotWait) {
                    return Ok(Some(true));
                }
                #[cfg(test)]
                if self.options.flaw == Some(crate::util::Flaw::ElectionHerd) {
                    return wait_any_change(store.as_ref(), dir).await.map(|()| None);
                }
                wait_gone(store.as_ref(), &predecessor.key)
                    .await
                    .map(|()| None)
            };
            let outcome = tokio::select! {
                outcome = step => outcome,
                () = lease.lost() => return Ok(None),
            };
            match outcome {
                Ok(Some(true)) => break,
                Ok(Some(false)) => return Ok(None),
                Ok(None) => attempt = 0,
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("waiting in {dir}: {e}; retrying");
                    pause(self.options.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        let (trigger, lost) = lost_signal();
        #[cfg(test)]
        let trigger = if self.options.flaw == Some(crate::util::Flaw::ElectionNeverLost) {
            let (quiet, _) = lost_signal();
            std::mem::forget(trigger);
            quiet
        } else {
            trigger
        };
        let monitor = tokio::spawn(monitor(
            store.clone(),
            key.clone(),
            lease.lost_signal(),
            trigger.clone(),
        ));
        Ok(Some(Leadership {
            store: store.clone(),
            name: name.to_owned(),
            id,
            key,
            token,
            revision: token,
            value: value.to_owned(),
            lease: Some(lease),
            trigger,
            lost,
            _monitor: TaskGuard(monitor),
        }))
    }

    /// A candidate that campaigns again each time its term ends: see
    /// [`Terms`].
    pub fn terms(&self, name: &str, value: impl Into<String>) -> Terms {
        Terms {
            election: self.clone(),
            name: name.to_owned(),
            value: value.into(),
            previous: None,
        }
    }

    /// The current leader of election `name`, or `None` when it has no
    /// candidate.
    pub async fn leader(&self, name: &str) -> Result<Option<Candidate>> {
        Ok(self.candidates(name).await?.into_iter().next())
    }

    /// Every candidate of election `name`, the leader first, then in the
    /// order they will lead.
    pub async fn candidates(&self, name: &str) -> Result<Vec<Candidate>> {
        let dir = self.dir(name)?;
        Ok(queue(&self.store.list(&dir).await?))
    }

    /// Follows election `name`: a stream of its leader, first as it is
    /// now, then at every change (a new leader, or a new value proclaimed).
    /// `None` means no candidate. It serves the last known leader while
    /// the backend is unreachable.
    pub fn observe(&self, name: &str) -> Result<Observer> {
        let dir = self.dir(name)?;
        let cache = Cache::open(self.store.clone(), &dir, CacheOptions::new())?;
        let events = cache.subscribe();
        Ok(Observer {
            cache,
            events,
            ready: false,
            last: None,
        })
    }
}

/// Waits until `key` is absent; an error for the caller to look again.
pub(crate) async fn wait_gone(store: &dyn Store, key: &str) -> Result<()> {
    let mut watch = store.watch(key, WatchOptions::new()).await?;
    let mut present = false;
    let mut synced = false;
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Put(_))) => present = true,
            Some(Ok(WatchEvent::Synced { .. })) if !synced && !present => return Ok(()),
            Some(Ok(WatchEvent::Synced { .. })) => synced = true,
            Some(Ok(WatchEvent::Delete { .. })) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// The herd: waits for any change among the candidates (a broken
/// variant, for the cases' own tests).
#[cfg(test)]
async fn wait_any_change(store: &dyn Store, dir: &str) -> Result<()> {
    let mut watch = store.watch_tree(dir, WatchOptions::new()).await?;
    let mut synced = false;
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Synced { .. })) => synced = true,
            Some(Ok(_)) if synced => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// Fires `trigger` when the leader's lease is lost or its key goes.
pub(crate) async fn monitor(
    store: Arc<dyn Store>,
    key: String,
    lease: LostSignal,
    trigger: LostTrigger,
) {
    let mut attempt = 0u32;
    loop {
        let watched = async {
            let mut watch = match store.watch(&key, WatchOptions::new()).await {
                Ok(watch) => watch,
                Err(e) => return is_permanent(&e),
            };
            let mut present = false;
            let mut synced = false;
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Put(_))) => present = true,
                    Some(Ok(WatchEvent::Synced { .. })) if !synced && !present => return true,
                    Some(Ok(WatchEvent::Synced { .. })) => synced = true,
                    Some(Ok(WatchEvent::Delete { .. })) => return true,
                    Some(Err(e)) => return e.kind() == ErrorKind::Closed,
                    None => return false,
                }
            }
        };
        let gone = tokio::select! {
            gone = watched => gone,
            () = lease.wait() => true,
        };
        if gone {
            trigger.fire();
            return;
        }
        pause(Backoff::default().delay(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Leadership of one term: its fencing token, its loss signal, and the
/// means to change its value or step down. Dropping it resigns in the
/// background (the loss signal fires first).
pub struct Leadership {
    store: Arc<dyn Store>,
    name: String,
    id: String,
    key: String,
    token: u64,
    revision: u64,
    value: String,
    lease: Option<Lease>,
    trigger: LostTrigger,
    lost: LostSignal,
    _monitor: TaskGuard,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("token", &self.token)
            .field("value", &self.value)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Leadership {
    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This candidate's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This candidate's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: strictly greater than every earlier leader's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The value last proclaimed.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Completes when this term has ended; see the [module](self).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lost.wait()
    }

    /// Whether this term has ended.
    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// A loss signal that outlives this handle.
    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    fn lost_error(&self) -> Error {
        Error::LeaseLost {
            backend: self.store.capabilities().backend,
            lease: self.lease.as_ref().map_or(0, |l| l.id().0),
        }
    }

    /// Publishes a new value while leading: a compare-and-swap on the
    /// candidate's key, so it fails with `LeaseLost` (and ends the term)
    /// if the key was changed or deleted behind its back, or the term has
    /// already ended.
    pub async fn proclaim(&mut self, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        let Some(lease) = self.lease.as_ref().filter(|_| !self.is_lost()) else {
            return Err(self.lost_error());
        };
        let body = encode(&value, Some(self.token))?;
        let put = PutOptions::new().with_lease(lease.id());
        match self
            .store
            .atomic_put(&self.key, body, Some(self.revision), put)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.value = value;
                Ok(())
            }
            Err(e) if is_gone(&e) => {
                self.trigger.fire();
                Err(self.lost_error())
            }
            Err(e) => Err(e),
        }
    }

    /// Steps down: the loss signal fires, then the lease is revoked, which
    /// deletes the key and lets the next candidate lead.
    pub async fn resign(mut self) -> Result<()> {
        self.trigger.fire();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }
}

fn is_gone(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::KeyModified | ErrorKind::KeyNotFound | ErrorKind::LeaseLost
    )
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Before the lease (a field) is dropped and revoked.
        self.trigger.fire();
    }
}

/// A candidate that re-enters its election each time a term ends, from
/// [`Election::terms`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anykv_core::Result<()> {
/// use anykv_recipes::{Election, ElectionOptions};
/// let store = anykv_memory::MemoryStore::new().into_dyn();
/// let mut terms = Election::new(store, ElectionOptions::new()).terms("jobs", "me");
/// let first = terms.next().await?;
/// let token = first.token();
/// first.resign().await?; // a term ends (resigned here; lost in real life)
/// let second = terms.next().await?;
/// assert!(second.token() > token);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Terms {
    election: Election,
    name: String,
    value: String,
    previous: Option<LostSignal>,
}

impl Terms {
    /// Waits until the previous term (if any) has ended, then campaigns
    /// again and resolves with the next term.
    pub async fn next(&mut self) -> Result<Leadership> {
        if let Some(previous) = self.previous.take() {
            previous.wait().await;
        }
        let leadership = self
            .election
            .campaign(&self.name, self.value.clone())
            .await?;
        self.previous = Some(leadership.lost_signal());
        Ok(leadership)
    }

    /// Sets the value the next campaigns start with.
    pub fn set_value(&mut self, value: impl Into<String>) {
        self.value = value.into();
    }
}

/// The leader of an election as it changes, from [`Election::observe`].
pub struct Observer {
    cache: Cache,
    events: CacheEvents,
    ready: bool,
    last: Option<Option<Candidate>>,
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("cache", &self.cache)
            .field("last", &self.last)
            .finish()
    }
}

impl Observer {
    /// Whether the leader shown may be out of date (the backend is
    /// unreachable).
    pub fn is_stale(&self) -> bool {
        self.cache.is_stale()
    }
}

impl Stream for Observer {
    type Item = Option<Candidate>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let event = match self.events.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => event,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match event {
                CacheEvent::InitDone { .. } => self.ready = true,
                CacheEvent::Init(_) | CacheEvent::Stale { .. } => continue,
                _ => {}
            }
            if !self.ready {
                continue;
            }
            let leader = queue(&self.cache.list()).into_iter().next();
            if self.last.as_ref() != Some(&leader) {
                self.last = Some(leader.clone());
                return Poll::Ready(Some(leader));
            }
        }
    }
}
