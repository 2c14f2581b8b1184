//! Watches: one persistent recursive watch per store, shared by every
//! stream; notifications answered by re-reading the keys.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use anykv_core::{key, Bytes, Error, KvPair, Result, WatchEvent, WatchOptions, WatchStream};
use futures::{FutureExt, Stream};
use tokio::sync::mpsc;
use zookeeper_client as zk;

use crate::client::{map_err, timed};
use crate::paths::{child, key_of_value_path, parent};
use crate::store::{Inner, ZkStore};
use crate::BACKEND;

/// What a stream covers.
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    Key(String),
    Tree(String),
}

impl Filter {
    fn covers(&self, k: &str) -> bool {
        match self {
            Filter::Key(key) => key == k,
            Filter::Tree(prefix) => key::is_in_tree(prefix, k),
        }
    }
}

enum Msg {
    Initial(Vec<WatchEvent>),
    Event(WatchEvent),
    Fail(Error),
}

struct NewSub {
    filter: Filter,
    tx: mpsc::Sender<Msg>,
    lagged: Arc<AtomicBool>,
}

struct Sub {
    filter: Filter,
    tx: mpsc::Sender<Msg>,
    lagged: Arc<AtomicBool>,
    cache: BTreeMap<String, u64>,
    /// The last revision sent.
    last: u64,
    dead: bool,
}

impl Sub {
    /// Sends a live event; one that would break the order ends the
    /// stream with an error instead (never silently out of order).
    fn event(&mut self, ev: WatchEvent) {
        let rev = ev.revision();
        let ordered = match ev {
            WatchEvent::Synced { .. } => rev >= self.last,
            _ => rev > self.last,
        };
        if !ordered {
            tracing::warn!(
                revision = rev,
                last = self.last,
                "zookeeper watch: out of order"
            );
            self.send(Msg::Fail(Error::Unavailable {
                backend: BACKEND,
                message: format!(
                    "the watch could not keep its order (revision {rev} after {}); open it again",
                    self.last
                ),
                source: None,
            }));
            self.dead = true;
            return;
        }
        self.last = rev;
        self.send(Msg::Event(ev));
    }

    fn send(&mut self, msg: Msg) {
        if self.dead {
            return;
        }
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::SeqCst);
                self.dead = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.dead = true,
        }
    }
}

/// The store's shared watch: registration of new streams.
pub(crate) struct Hub {
    reg: mpsc::UnboundedSender<NewSub>,
}

enum State {
    Present(Bytes, u64),
    Absent,
}

/// Opens a stream.
pub(crate) async fn open(
    store: &ZkStore,
    filter: Filter,
    options: WatchOptions,
) -> Result<WatchStream> {
    options.validate()?;
    if options.from_revision.is_some() {
        return Err(Error::unsupported(
            BACKEND,
            "watch from a revision",
            "ZooKeeper keeps no history of changes (watch_resume = false); \
             watch without from_revision to get the current state, Synced, then every change",
        ));
    }
    let buffer = options.buffer.max(1);
    let (tx, rx) = mpsc::channel(buffer + 1);
    let lagged = Arc::new(AtomicBool::new(false));
    let sub = NewSub {
        filter,
        tx,
        lagged: lagged.clone(),
    };
    {
        let mut hub = store.inner.hub.lock();
        let leftover = match hub.as_ref() {
            Some(h) => h.reg.send(sub).err().map(|e| e.0),
            None => Some(sub),
        };
        if let Some(sub) = leftover {
            let (reg, reg_rx) = mpsc::unbounded_channel();
            let weak = Arc::downgrade(&store.inner);
            let closed = store.inner.closed_tx.subscribe();
            tokio::spawn(run(weak, reg_rx, closed));
            let _ = reg.send(sub);
            *hub = Some(Arc::new(Hub { reg }));
        }
    }
    Ok(Box::pin(open_stream(store, rx, lagged, buffer)))
}

fn open_stream(
    store: &ZkStore,
    rx: mpsc::Receiver<Msg>,
    lagged: Arc<AtomicBool>,
    buffer: usize,
) -> ZkWatch {
    store.inner.watches.fetch_add(1, Ordering::SeqCst);
    ZkWatch {
        rx,
        closed: store.inner.closed_tx.subscribe(),
        queue: VecDeque::new(),
        lagged,
        buffer,
        done: false,
        count: store.inner.watches.clone(),
    }
}

struct ZkWatch {
    rx: mpsc::Receiver<Msg>,
    closed: tokio::sync::watch::Receiver<bool>,
    queue: VecDeque<WatchEvent>,
    lagged: Arc<AtomicBool>,
    buffer: usize,
    done: bool,
    count: Arc<AtomicUsize>,
}

impl Drop for ZkWatch {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stream for ZkWatch {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(ev) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Msg::Initial(evs))) => this.queue.extend(evs),
                Poll::Ready(Some(Msg::Event(ev))) => return Poll::Ready(Some(Ok(ev))),
                Poll::Ready(Some(Msg::Fail(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.lagged.load(Ordering::SeqCst) {
                        return Poll::Ready(Some(Err(Error::WatchLagged {
                            backend: BACKEND,
                            buffer: this.buffer,
                        })));
                    }
                    // Ended by close (or the store dropped): None. Ended
                    // otherwise: say so, never end silently.
                    let closed = *this.closed.borrow() || this.closed.has_changed().is_err();
                    if !closed {
                        return Poll::Ready(Some(Err(Error::Unavailable {
                            backend: BACKEND,
                            message:
                                "the store's shared watch ended unexpectedly; open the watch again"
                                    .into(),
                            source: None,
                        })));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[derive(Default)]
struct Flags {
    disconnected: bool,
    terminal: bool,
}

fn note(ev: zk::WatchedEvent, root_path: &str, flags: &mut Flags, dirty: &mut BTreeSet<String>) {
    match ev.event_type {
        zk::EventType::Session => match ev.session_state {
            zk::SessionState::Disconnected => flags.disconnected = true,
            s if s.is_terminated() => flags.terminal = true,
            _ => {}
        },
        _ => {
            if let Some(k) = key_of_value_path(root_path, &ev.path) {
                dirty.insert(k);
            }
        }
    }
}

/// Takes every notification already received, without waiting.
fn drain(
    watcher: &mut zk::PersistentWatcher,
    root_path: &str,
    flags: &mut Flags,
    dirty: &mut BTreeSet<String>,
) {
    while !flags.terminal {
        match watcher.changed().now_or_never() {
            Some(ev) => note(ev, root_path, flags, dirty),
            None => break,
        }
    }
}

async fn run(
    weak: Weak<Inner>,
    mut reg_rx: mpsc::UnboundedReceiver<NewSub>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut subs: Vec<Sub> = Vec::new();
    let mut pending: Vec<NewSub> = Vec::new();
    let mut last: u64 = 0;
    'outer: loop {
        if *closed.borrow() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let store = ZkStore { inner };
        let root_path = store.inner.root_path.clone();
        let client = match store.client().await {
            Ok(c) => c,
            Err(_) => {
                drop(store);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut watcher = match timed(
            store.limit(),
            "watch",
            client.watch(&root_path, zk::AddWatchMode::PersistentRecursive),
        )
        .await
        {
            Ok(Ok(w)) => w,
            Ok(Err(e @ (zk::Error::NoAuth | zk::Error::AuthFailed | zk::Error::Unimplemented))) => {
                // Retrying cannot help (no read permission on the root, or a
                // server without persistent watches, which need 3.6+): every
                // stream gets the error and ends rather than staying silent.
                let unimplemented = matches!(e, zk::Error::Unimplemented);
                let err = map_err(e, "watch: registering the store's watch");
                let text = err.to_string();
                let make = || {
                    if unimplemented {
                        Error::unsupported(
                            BACKEND,
                            "watch",
                            format!("{text} (persistent recursive watches need ZooKeeper 3.6+)"),
                        )
                    } else if matches!(err, Error::Unauthenticated { .. }) {
                        Error::Unauthenticated {
                            backend: BACKEND,
                            message: text.clone(),
                        }
                    } else {
                        Error::PermissionDenied {
                            backend: BACKEND,
                            message: text.clone(),
                        }
                    }
                };
                for mut sub in subs.drain(..) {
                    sub.send(Msg::Fail(make()));
                }
                for n in pending.drain(..) {
                    let _ = n.tx.try_send(Msg::Fail(make()));
                }
                drop(store);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            _ => {
                drop(store);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let limit = store.limit();
        drop(store);
        let mut resync = !subs.is_empty();
        let mut connected = true;
        loop {
            let mut flags = Flags::default();
            let mut dirty = BTreeSet::new();
            if !resync && (pending.is_empty() || !connected) {
                tokio::select! {
                    ev = watcher.changed() => note(ev, &root_path, &mut flags, &mut dirty),
                    r = reg_rx.recv() => match r {
                        Some(n) => pending.push(n),
                        None => return,
                    },
                    _ = closed.wait_for(|c| *c) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        subs.retain(|s| !s.dead && !s.tx.is_closed());
                        if subs.is_empty() && pending.is_empty() {
                            // No stream left: end the shared watch. Under the
                            // store's hub lock no stream can register in
                            // between; the next stream starts a new hub.
                            let Some(inner) = weak.upgrade() else { return };
                            let mut hub = inner.hub.lock();
                            match reg_rx.try_recv() {
                                Ok(n) => pending.push(n),
                                Err(_) => {
                                    *hub = None;
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            drain(&mut watcher, &root_path, &mut flags, &mut dirty);
            while let Ok(n) = reg_rx.try_recv() {
                pending.push(n);
            }
            if flags.terminal {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'outer;
            }
            if flags.disconnected {
                connected = false;
            }
            if !connected {
                // Wait until the session is back; events in between may be
                // lost, so everything is re-read then.
                // The session's state, not its events, decides: an event
                // may have been taken by an earlier drain.
                loop {
                    match client.state() {
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            break
                        }
                        s if s.is_terminated() => continue 'outer,
                        _ => {}
                    }
                    tokio::select! {
                        ev = watcher.changed() => {
                            if let (zk::EventType::Session, s) = (ev.event_type, ev.session_state) {
                                if s.is_terminated() {
                                    continue 'outer;
                                }
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                }
                // Register the watch again before the old one goes: the
                // automatic reset after a reconnect is not always enough
                // (ZOOKEEPER-4698 and a just-restarted server).
                match timed(
                    limit,
                    "watch",
                    client.watch(&root_path, zk::AddWatchMode::PersistentRecursive),
                )
                .await
                {
                    Ok(Ok(w)) => watcher = w,
                    Ok(Err(zk::Error::SessionExpired)) => continue 'outer,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                connected = true;
                resync = true;
                continue;
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = ZkStore { inner };
            let r = cycle(
                &store,
                &client,
                &mut watcher,
                &mut subs,
                &mut pending,
                dirty,
                resync,
                &mut last,
            )
            .await;
            drop(store);
            match r {
                Ok(()) => resync = false,
                Err(Some(CycleErr { fatal: Some(e), .. })) => {
                    // Every stream gets the error and ends; nothing is
                    // silently dropped.
                    let text = e.to_string();
                    let kind_of = |e: &Error| match e {
                        Error::PermissionDenied { .. } => Error::PermissionDenied {
                            backend: BACKEND,
                            message: text.clone(),
                        },
                        Error::Unauthenticated { .. } => Error::Unauthenticated {
                            backend: BACKEND,
                            message: text.clone(),
                        },
                        _ => Error::Backend {
                            backend: BACKEND,
                            message: text.clone(),
                            source: None,
                        },
                    };
                    for mut sub in subs.drain(..) {
                        sub.send(Msg::Fail(kind_of(&e)));
                    }
                    for n in pending.drain(..) {
                        let _ = n.tx.try_send(Msg::Fail(kind_of(&e)));
                    }
                }
                Err(Some(f)) if f.terminal => continue 'outer,
                Err(_) => {
                    resync = true;
                    if *closed.borrow() {
                        return;
                    }
                    if client.state() != zk::SessionState::SyncConnected {
                        connected = false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            subs.retain(|s| !s.dead && !s.tx.is_closed());
        }
    }
}

async fn read_state(store: &ZkStore, client: &zk::Client, k: &str) -> Result<State> {
    let path = store.value_path(k);
    match timed(store.limit(), "watch read", client.get_data(&path)).await? {
        Ok((data, stat)) => Ok(State::Present(Bytes::from(data), stat.mzxid as u64)),
        Err(zk::Error::NoNode) => Ok(State::Absent),
        Err(e) => Err(map_err(e, &format!("watch: reading {k:?}"))),
    }
}

/// A revision for the delete of `k`: the pzxid of its node (the zxid of
/// the last change among its children), or of the nearest ancestor left.
async fn delete_revision(store: &ZkStore, client: &zk::Client, k: &str) -> Result<u64> {
    let mut path = store.key_dir(k);
    loop {
        match timed(store.limit(), "watch read", client.check_stat(&path)).await? {
            Ok(Some(st)) => return Ok(st.pzxid as u64),
            Ok(None) => {}
            Err(e) => return Err(map_err(e, "watch: reading a delete's revision")),
        }
        match parent(&path) {
            Some(p) => path = p.to_owned(),
            None => return Ok(0),
        }
    }
}

/// A fresh zxid: create and delete an ephemeral sequential node under the
/// root.
async fn clock(store: &ZkStore, client: &zk::Client) -> Result<u64> {
    let root = store.inner.root_path.clone();
    let opts = zk::CreateMode::EphemeralSequential.with_acls(store.acls());
    for _ in 0..8 {
        match timed(
            store.limit(),
            "watch clock",
            client.create(&child(&root, "@clock-"), b"", &opts),
        )
        .await?
        {
            Ok((st, seq)) => {
                let _ = timed(
                    store.limit(),
                    "watch clock",
                    client.delete(&child(&root, &format!("@clock-{seq}")), None),
                )
                .await;
                return Ok(st.czxid as u64);
            }
            Err(zk::Error::NoNode) => store.make_dirs(client, &root).await?,
            Err(e) => return Err(map_err(e, "watch: taking a revision")),
        }
    }
    Err(Error::Backend {
        backend: BACKEND,
        message: "watch: could not take a revision".into(),
        source: None,
    })
}

struct CycleErr {
    terminal: bool,
    /// An error that retrying will not cure (permissions, a bad reply).
    fatal: Option<Error>,
}

/// Takes every notification already received (as [`drain`]) and returns
/// the keys among them that some stream covers; a disconnect or the
/// session's end stops the cycle instead.
fn take_more(
    watcher: &mut zk::PersistentWatcher,
    root_path: &str,
    covered: impl Fn(&str) -> bool,
) -> std::result::Result<Vec<String>, Option<CycleErr>> {
    let mut flags = Flags::default();
    let mut more = BTreeSet::new();
    drain(watcher, root_path, &mut flags, &mut more);
    if flags.terminal {
        return Err(Some(CycleErr {
            terminal: true,
            fatal: None,
        }));
    }
    if flags.disconnected {
        return Err(None);
    }
    Ok(more.into_iter().filter(|k| covered(k)).collect())
}

#[allow(clippy::too_many_arguments)]
async fn cycle(
    store: &ZkStore,
    client: &zk::Client,
    watcher: &mut zk::PersistentWatcher,
    subs: &mut Vec<Sub>,
    pending: &mut Vec<NewSub>,
    mut dirty: BTreeSet<String>,
    resync: bool,
    last: &mut u64,
) -> std::result::Result<(), Option<CycleErr>> {
    let root_path = store.inner.root_path.clone();
    let fail = |e: Error| {
        if e.is_retryable() {
            None
        } else {
            Some(CycleErr {
                terminal: false,
                fatal: Some(e),
            })
        }
    };
    let mut latest: HashMap<String, State> = HashMap::new();
    // Snapshots of new streams (and of every stream after a reconnect).
    let filters: Vec<Filter> = pending
        .iter()
        .map(|n| n.filter.clone())
        .chain(if resync {
            subs.iter().map(|s| s.filter.clone()).collect()
        } else {
            Vec::new()
        })
        .collect();
    for f in &filters {
        match f {
            Filter::Key(k) => {
                dirty.insert(k.clone());
            }
            Filter::Tree(p) => {
                for pair in store.list_under(client, p).await.map_err(fail)? {
                    latest.insert(pair.key, State::Present(pair.value, pair.revision));
                }
            }
        }
    }
    if resync {
        for s in subs.iter() {
            dirty.extend(s.cache.keys().cloned());
        }
    }
    let covered = |k: &str, subs: &Vec<Sub>, pending: &Vec<NewSub>| {
        subs.iter().any(|s| s.filter.covers(k)) || pending.iter().any(|n| n.filter.covers(k))
    };
    let mut to_read: Vec<String> = dirty
        .into_iter()
        .filter(|k| covered(k, subs, pending))
        .collect();
    let mut clocked: HashMap<String, u64> = HashMap::new();
    // New streams (and all of them after a reconnect) get `Synced` with a
    // fresh zxid: at least that of every write completed before.
    let wants_clock = !pending.is_empty() || resync;
    let mut synced_clock: Option<u64> = None;
    let mut events: Vec<(u64, String, Option<Bytes>)>;
    loop {
        loop {
            let reads =
                futures::future::join_all(to_read.iter().map(|k| read_state(store, client, k)))
                    .await;
            for (k, r) in to_read.drain(..).zip(reads) {
                let st = r.map_err(fail)?;
                if matches!(st, State::Present(..)) {
                    clocked.remove(&k);
                }
                latest.insert(k, st);
            }
            to_read = take_more(watcher, &root_path, |k| covered(k, subs, pending))?;
            if to_read.is_empty() {
                break;
            }
        }
        // The events for the streams already running, in revision order.
        events = Vec::new();
        let mut deletes = Vec::new();
        for (k, st) in &latest {
            match st {
                State::Present(v, rev) => {
                    if subs
                        .iter()
                        .any(|s| s.filter.covers(k) && s.cache.get(k) != Some(rev))
                    {
                        events.push((*rev, k.clone(), Some(v.clone())));
                    }
                }
                State::Absent => {
                    let cached = subs
                        .iter()
                        .filter(|s| s.filter.covers(k))
                        .filter_map(|s| s.cache.get(k).copied())
                        .max();
                    if let Some(cached) = cached {
                        deletes.push((k.clone(), cached));
                    }
                }
            }
        }
        let mut need_clock = Vec::new();
        let mut used: BTreeSet<u64> = events.iter().map(|e| e.0).collect();
        deletes.sort();
        for (k, cached) in deletes {
            if let Some(&c) = clocked.get(&k) {
                used.insert(c);
                events.push((c, k, None));
                continue;
            }
            let rev = delete_revision(store, client, &k).await.map_err(fail)?;
            if rev <= cached || rev <= *last || used.contains(&rev) {
                need_clock.push(k);
            } else {
                used.insert(rev);
                events.push((rev, k, None));
            }
        }
        // The reads of deletes' revisions may have seen later changes:
        // their notifications are in by now; read those keys too first.
        to_read = take_more(watcher, &root_path, |k| covered(k, subs, pending))?;
        if !to_read.is_empty() {
            continue;
        }
        if need_clock.is_empty() && (!wants_clock || synced_clock.is_some()) {
            break;
        }
        for k in need_clock {
            let c = clock(store, client).await.map_err(fail)?;
            clocked.insert(k, c);
        }
        if wants_clock && synced_clock.is_none() {
            synced_clock = Some(clock(store, client).await.map_err(fail)?);
        }
        // Notifications of changes before the clock's zxid are in by now:
        // read them too, then recompute.
        to_read = take_more(watcher, &root_path, |k| covered(k, subs, pending))?;
    }
    events.sort_by_key(|e| e.0);
    let newest = events
        .iter()
        .map(|e| e.0)
        .max()
        .unwrap_or(0)
        .max(synced_clock.unwrap_or(0));
    for s in subs.iter_mut() {
        for (rev, k, v) in &events {
            if !s.filter.covers(k) {
                continue;
            }
            match v {
                Some(v) => {
                    if s.cache.get(k) != Some(rev) {
                        s.cache.insert(k.clone(), *rev);
                        s.event(WatchEvent::Put(KvPair::new(k.clone(), v.clone(), *rev)));
                    }
                }
                None => {
                    if s.cache.remove(k).is_some() {
                        s.event(WatchEvent::Delete {
                            key: k.clone(),
                            revision: *rev,
                        });
                    }
                }
            }
        }
        if resync {
            s.event(WatchEvent::Synced {
                revision: (*last).max(newest),
            });
        }
    }
    *last = (*last).max(newest);
    for n in pending.drain(..) {
        let mut initial: Vec<KvPair> = latest
            .iter()
            .filter(|(k, _)| n.filter.covers(k))
            .filter_map(|(k, st)| match st {
                State::Present(v, rev) => Some(KvPair::new(k.clone(), v.clone(), *rev)),
                State::Absent => None,
            })
            .collect();
        initial.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        let synced = initial
            .iter()
            .map(|p| p.revision)
            .max()
            .unwrap_or(0)
            .max(*last);
        *last = synced;
        let cache = initial
            .iter()
            .map(|p| (p.key.clone(), p.revision))
            .collect();
        let mut evs: Vec<WatchEvent> = initial.into_iter().map(WatchEvent::Put).collect();
        evs.push(WatchEvent::Synced { revision: synced });
        let mut sub = Sub {
            filter: n.filter,
            tx: n.tx,
            lagged: n.lagged,
            cache,
            last: synced,
            dead: false,
        };
        sub.send(Msg::Initial(evs));
        subs.push(sub);
    }
    Ok(())
}
