//! Watches: one persistent recursive watch per store, shared by every
//! stream; notifications answered by re-reading the keys.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use anykv_core::{key, Error, Result, WatchEvent, WatchOptions, WatchStream};
use futures::{FutureExt, Stream};
use tokio::sync::mpsc;
use zookeeper_client as zk;

use crate::client::{map_err, timed};
use crate::paths::key_of_value_path;
use crate::rounds::Engine;
use crate::store::{Inner, ZkStore};
use crate::BACKEND;

/// What a stream covers.
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    Key(String),
    Tree(String),
}

impl Filter {
    pub(crate) fn covers(&self, k: &str) -> bool {
        match self {
            Filter::Key(key) => key == k,
            Filter::Tree(prefix) => key::is_in_tree(prefix, k),
        }
    }
}

pub(crate) enum Msg {
    Initial(Vec<WatchEvent>),
    Event(WatchEvent),
    Fail(Error),
}

/// A stream that registered with the hub.
pub(crate) struct NewSub {
    pub(crate) filter: Filter,
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) lagged: Arc<AtomicBool>,
}

/// A running stream.
pub(crate) struct Sub {
    pub(crate) filter: Filter,
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) lagged: Arc<AtomicBool>,
    /// The revision of every key it was told is present.
    pub(crate) cache: BTreeMap<String, u64>,
    /// The last revision sent.
    pub(crate) last: u64,
    pub(crate) dead: bool,
}

impl Sub {
    /// Sends a live event; one that would break the order ends the
    /// stream with an error instead (never silently out of order).
    pub(crate) fn event(&mut self, ev: WatchEvent) {
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

    pub(crate) fn send(&mut self, msg: Msg) {
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

fn note(ev: zk::WatchedEvent, root_path: &str, flags: &mut Flags, engine: &mut Engine) {
    match ev.event_type {
        zk::EventType::Session => match ev.session_state {
            zk::SessionState::Disconnected => flags.disconnected = true,
            s if s.is_terminated() => flags.terminal = true,
            _ => {}
        },
        _ => {
            if let Some(k) = key_of_value_path(root_path, &ev.path) {
                if engine.covers(&k) {
                    engine.dirty.insert(k);
                }
            }
        }
    }
}

/// Takes every notification already received, without waiting.
fn drain(
    watcher: &mut zk::PersistentWatcher,
    root_path: &str,
    flags: &mut Flags,
    engine: &mut Engine,
) {
    while !flags.terminal {
        match watcher.changed().now_or_never() {
            Some(ev) => note(ev, root_path, flags, engine),
            None => break,
        }
    }
}

/// The error every stream gets when the watch cannot go on.
fn fatal_error(e: &Error) -> impl Fn() -> Error {
    let text = e.to_string();
    let kind = e.kind();
    move || match kind {
        anykv_core::ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: BACKEND,
            message: text.clone(),
        },
        anykv_core::ErrorKind::Unauthenticated => Error::Unauthenticated {
            backend: BACKEND,
            message: text.clone(),
        },
        anykv_core::ErrorKind::Unsupported => Error::unsupported(BACKEND, "watch", text.clone()),
        _ => Error::Backend {
            backend: BACKEND,
            message: text.clone(),
            source: None,
        },
    }
}

/// Runs the store's shared watch until the store is closed or dropped, or
/// no stream is left. Closing ends it wherever it is (a round in flight
/// included), which drops every stream's sender, so the streams end right
/// after what they already hold.
async fn run(
    weak: Weak<Inner>,
    reg_rx: mpsc::UnboundedReceiver<NewSub>,
    closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut ended = closed.clone();
    // The borrow `wait_for` returns is a read lock on the channel: release
    // it before the loop is dropped, which may drop the store's last
    // handle, whose `Drop` writes to the same channel.
    let closing = async move {
        let _ = ended.wait_for(|c| *c).await;
    };
    tokio::select! {
        () = watch_loop(weak, reg_rx, closed) => {}
        () = closing => {}
    }
}

async fn watch_loop(
    weak: Weak<Inner>,
    mut reg_rx: mpsc::UnboundedReceiver<NewSub>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut engine = Engine::default();
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
                let err = if unimplemented {
                    Error::unsupported(
                        BACKEND,
                        "watch",
                        format!("{err} (persistent recursive watches need ZooKeeper 3.6+)"),
                    )
                } else {
                    err
                };
                while let Ok(n) = reg_rx.try_recv() {
                    engine.fresh.push(n);
                }
                {
                    let _gate = store.inner.gate.lock();
                    if store.check().is_err() {
                        return;
                    }
                    engine.fail_all(fatal_error(&err));
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
        let mut resync = !engine.subs.is_empty();
        let mut connected = true;
        loop {
            let mut flags = Flags::default();
            if !resync && (!engine.busy() || !connected) {
                tokio::select! {
                    ev = watcher.changed() => note(ev, &root_path, &mut flags, &mut engine),
                    r = reg_rx.recv() => match r {
                        Some(n) => engine.fresh.push(n),
                        None => return,
                    },
                    _ = closed.wait_for(|c| *c) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        engine.prune();
                        if engine.idle() {
                            // No stream left: end the shared watch. Under the
                            // store's hub lock no stream can register in
                            // between; the next stream starts a new hub.
                            let Some(inner) = weak.upgrade() else { return };
                            let mut hub = inner.hub.lock();
                            match reg_rx.try_recv() {
                                Ok(n) => engine.fresh.push(n),
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
            while let Ok(n) = reg_rx.try_recv() {
                engine.fresh.push(n);
            }
            drain(&mut watcher, &root_path, &mut flags, &mut engine);
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
                resync = !engine.subs.is_empty();
                continue;
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = ZkStore { inner };
            let r = engine.round(&store, &client, resync).await;
            if let Err(e) = &r {
                if !e.is_retryable() {
                    // Every stream gets the error and ends; nothing is
                    // silently dropped. A closed store's streams just end.
                    let _gate = store.inner.gate.lock();
                    if store.check().is_err() {
                        return;
                    }
                    engine.fail_all(fatal_error(e));
                }
            }
            drop(store);
            match r {
                Ok(()) => resync = false,
                Err(e) if !e.is_retryable() => {}
                Err(_) => {
                    // Reads were lost: read everything again.
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
            engine.prune();
        }
    }
}
