//! Watches: one persistent recursive watch per store, shared by every
//! stream; notifications answered by re-reading the keys in rounds
//! (`rounds.rs`).
//!
//! Each stream is core's watch channel ([`event_channel`]): the shared
//! watch sends a new stream's initial state and `Synced` once they are
//! complete (however large, never counted against the buffer), then its
//! live events through the channel, which ends the stream with
//! `WatchLagged` when its consumer falls `buffer` events behind. A stream
//! whose shared watch ended without the store being closed says so with
//! an error rather than ending silently.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use anykv_core::backend::{event_channel, WatchTarget};
use anykv_core::{Error, ErrorKind, Result, WatchEvent, WatchOptions, WatchStream};
use futures::{FutureExt, Stream};
use tokio::sync::{mpsc, oneshot, watch};
use zookeeper_client as zk;

use crate::client::{
    connection_timeout, count_watch_resume, map_err, silence_grace, with_deadline, TARGET,
};
use crate::config::BACKEND;
use crate::layout::Layout;
use crate::rounds::WatchRounds;
use crate::state::{NewWatch, StoreState, WatchFeed};

/// How long the shared watch waits before trying again after its session
/// or its registration failed.
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// How often an idle shared watch looks whether any stream is left.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Opens a stream on `target`, starting the store's shared watch if none
/// runs.
pub(crate) async fn open(
    state: &Arc<StoreState>,
    target: WatchTarget,
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
    let (events, receiver) = event_channel(BACKEND, options.buffer.max(1));
    let (initial_tx, initial_rx) = oneshot::channel();
    let new = NewWatch {
        target,
        initial: initial_tx,
        events,
    };
    {
        let mut feed = state.watch_feed.lock();
        let leftover = match feed.as_ref() {
            Some(f) => f.registrations.send(new).err().map(|e| e.0),
            None => Some(new),
        };
        if let Some(new) = leftover {
            let (registrations, incoming) = mpsc::unbounded_channel();
            let weak = Arc::downgrade(state);
            let shutdown = state.shutdown.subscribe();
            tokio::spawn(run(weak, incoming, shutdown));
            let _ = registrations.send(new);
            *feed = Some(WatchFeed { registrations });
        }
    }
    let counted = OpenWatch::new(&state.open_watches);
    let events = async move {
        // The shared watch drops the sender without sending when it ends
        // before the initial state is complete; the channel then tells why.
        let initial = initial_rx.await.unwrap_or_default();
        receiver.into_stream(initial, counted)
    }
    .flatten_stream();
    Ok(Box::pin(EndsWithReason {
        events: Box::pin(events),
        shutdown: state.shutdown.subscribe(),
        failed: false,
        done: false,
    }))
}

/// Counts an open stream in the store's stats while it lives.
struct OpenWatch(Arc<AtomicUsize>);

impl OpenWatch {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        OpenWatch(count.clone())
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that, when its channel ends without an error while the store
/// is open (the shared watch ended unexpectedly), yields `Unavailable`
/// rather than ending silently. Ended by `close()` (or the store dropped),
/// it just ends.
struct EndsWithReason {
    events: Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>,
    shutdown: watch::Receiver<bool>,
    /// An error was yielded (the channel's end then needs no reason).
    failed: bool,
    done: bool,
}

impl Stream for EndsWithReason {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                this.failed |= item.is_err();
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                this.done = true;
                let closed = *this.shutdown.borrow() || this.shutdown.has_changed().is_err();
                if this.failed || closed {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(Error::Unavailable {
                    backend: BACKEND,
                    message: "the store's shared watch ended unexpectedly; open the watch again"
                        .into(),
                    source: None,
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How long the store's session has been out of touch with every server.
/// A stream cannot tell what changed while it is, so once that lasts
/// until the session may be expired ([`silence_grace`] after the client
/// noticed), the streams get a retryable error rather than staying
/// silent: with a server to move to, the client has moved long before.
struct Outage {
    since: Option<Instant>,
    grace: Duration,
}

impl Outage {
    /// The grace of the store's session `session` (its timeout as
    /// granted, its connection timeout as configured).
    fn of(state: &StoreState, session: Option<&zk::Client>) -> Outage {
        let config = state.client.config();
        let granted = session.map_or(config.session_timeout, |s| s.session_timeout());
        Outage {
            since: None,
            grace: silence_grace(granted, connection_timeout(config, config.session_timeout)),
        }
    }

    /// The session is connected.
    fn over(&mut self) {
        self.since = None;
    }

    /// Notes that the session is not connected; whether it has been out
    /// of touch for longer than the grace.
    fn too_long(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        since.elapsed() >= self.grace
    }

    /// When the grace runs out.
    fn deadline(&self) -> Instant {
        self.since.unwrap_or_else(Instant::now) + self.grace
    }

    /// The error the streams get.
    fn error(&self) -> Error {
        let away = self.since.map(|s| s.elapsed()).unwrap_or_default();
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the store has not reached a ZooKeeper server for {away:?}: the watch cannot \
                 tell what changed meanwhile; open it again"
            ),
            source: None,
        }
    }
}

/// Ends every stream of the shared watch with the outage's error (new
/// streams that were on their way included) and ends the shared watch; the
/// next stream starts a new one.
fn give_up(
    weak: &Weak<StoreState>,
    incoming: &mut mpsc::UnboundedReceiver<NewWatch>,
    rounds: &mut WatchRounds,
    outage: &Outage,
) {
    let Some(state) = weak.upgrade() else { return };
    tracing::warn!(target: TARGET, "zookeeper watch: out of touch for too long, ending the streams");
    let mut feed = state.watch_feed.lock();
    while let Ok(n) = incoming.try_recv() {
        rounds.add(n);
    }
    *feed = None;
    drop(feed);
    let _gate = state.delivery_gate.lock();
    if !state.is_closed() {
        rounds.fail_all(|| outage.error());
    }
}

/// What the notifications taken so far said about the session.
#[derive(Default)]
struct SessionNews {
    disconnected: bool,
    ended: bool,
}

/// Takes one notification: a session change into `news`, a changed key
/// into the rounds.
fn take_notification(
    ev: zk::WatchedEvent,
    layout: &Layout,
    news: &mut SessionNews,
    rounds: &mut WatchRounds,
) {
    match ev.event_type {
        zk::EventType::Session => match ev.session_state {
            zk::SessionState::Disconnected => news.disconnected = true,
            s if s.is_terminated() => news.ended = true,
            _ => {}
        },
        _ => {
            if let Some(k) = layout.key_of_value_path(&ev.path) {
                rounds.changed(k);
            }
        }
    }
}

/// Takes every notification already received, without waiting.
fn take_received(
    watcher: &mut zk::PersistentWatcher,
    layout: &Layout,
    news: &mut SessionNews,
    rounds: &mut WatchRounds,
) {
    while !news.ended {
        match watcher.changed().now_or_never() {
            Some(ev) => take_notification(ev, layout, news, rounds),
            None => break,
        }
    }
}

/// The error every stream gets when the watch cannot go on.
fn fatal_error(e: &Error) -> impl Fn() -> Error {
    let text = e.to_string();
    let kind = e.kind();
    move || match kind {
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: BACKEND,
            message: text.clone(),
        },
        ErrorKind::Unauthenticated => Error::Unauthenticated {
            backend: BACKEND,
            message: text.clone(),
        },
        ErrorKind::Unsupported => Error::unsupported(BACKEND, "watch", text.clone()),
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
    weak: Weak<StoreState>,
    incoming: mpsc::UnboundedReceiver<NewWatch>,
    shutdown: watch::Receiver<bool>,
) {
    let mut ended = shutdown.clone();
    // The borrow `wait_for` returns is a read lock on the channel: release
    // it before the loop is dropped, which may drop the store's last
    // handle, whose `Drop` writes to the same channel.
    let closing = async move {
        let _ = ended.wait_for(|c| *c).await;
    };
    tokio::select! {
        () = watch_loop(weak, incoming, shutdown) => {}
        () = closing => {}
    }
}

/// The shared watch: registers the persistent recursive watch on the
/// root, takes notifications and new streams, and runs rounds; after a
/// disconnect it registers again and re-reads everything. The store is
/// held only while a step needs it, so dropping its last handle ends this.
async fn watch_loop(
    weak: Weak<StoreState>,
    mut incoming: mpsc::UnboundedReceiver<NewWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rounds = WatchRounds::default();
    let mut outage = match weak.upgrade() {
        Some(state) => Outage::of(&state, None),
        None => return,
    };
    // Set when the session ended under the watch: the next registration
    // on a new session re-syncs the streams.
    let mut session_ended = false;
    'outer: loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(state) = weak.upgrade() else { return };
        let layout = state.client.layout().clone();
        let session = match state.client.session().await {
            Ok(c) => c,
            Err(_) => {
                drop(state);
                if outage.too_long() {
                    return give_up(&weak, &mut incoming, &mut rounds, &outage);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let since = outage.since;
        outage = Outage::of(&state, Some(&session));
        outage.since = since;
        let mut watcher = match with_deadline(
            state.client.request_timeout(),
            "watch",
            session.watch(layout.root_path(), zk::AddWatchMode::PersistentRecursive),
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
                while let Ok(n) = incoming.try_recv() {
                    rounds.add(n);
                }
                {
                    let _gate = state.delivery_gate.lock();
                    if state.is_closed() {
                        return;
                    }
                    rounds.fail_all(fatal_error(&err));
                }
                drop(state);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            _ => {
                drop(state);
                if session.state() == zk::SessionState::SyncConnected {
                    outage.over();
                } else if outage.too_long() {
                    return give_up(&weak, &mut incoming, &mut rounds, &outage);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        outage.over();
        let request_timeout = state.client.request_timeout();
        drop(state);
        let mut resync = rounds.has_running();
        if std::mem::take(&mut session_ended) && resync {
            count_watch_resume("the store's session was re-established");
        }
        let mut connected = true;
        loop {
            let mut news = SessionNews::default();
            if !resync && (!rounds.busy() || !connected) {
                tokio::select! {
                    ev = watcher.changed() => take_notification(ev, &layout, &mut news, &mut rounds),
                    r = incoming.recv() => match r {
                        Some(n) => rounds.add(n),
                        None => return,
                    },
                    _ = shutdown.wait_for(|c| *c) => return,
                    _ = tokio::time::sleep(IDLE_CHECK) => {
                        rounds.prune();
                        if rounds.idle() {
                            // No stream left: end the shared watch. Under the
                            // store's feed lock no stream can register in
                            // between; the next stream starts a new one.
                            let Some(state) = weak.upgrade() else { return };
                            let mut feed = state.watch_feed.lock();
                            match incoming.try_recv() {
                                Ok(n) => rounds.add(n),
                                Err(_) => {
                                    *feed = None;
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            while let Ok(n) = incoming.try_recv() {
                rounds.add(n);
            }
            take_received(&mut watcher, &layout, &mut news, &mut rounds);
            if news.ended {
                session_ended = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'outer;
            }
            if news.disconnected {
                connected = false;
            }
            if !connected {
                // Wait until the session is back; events in between may be
                // lost, so everything is re-read then.
                // The session's state, not its events, decides: an event
                // may have been taken by an earlier drain.
                loop {
                    match session.state() {
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            break
                        }
                        s if s.is_terminated() => {
                            session_ended = true;
                            continue 'outer;
                        }
                        _ => {}
                    }
                    if outage.too_long() {
                        return give_up(&weak, &mut incoming, &mut rounds, &outage);
                    }
                    tokio::select! {
                        ev = watcher.changed() => {
                            if let (zk::EventType::Session, s) = (ev.event_type, ev.session_state) {
                                if s.is_terminated() {
                                    session_ended = true;
                                    continue 'outer;
                                }
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = tokio::time::sleep_until(outage.deadline()) => {}
                        _ = shutdown.wait_for(|c| *c) => return,
                    }
                }
                outage.over();
                // Register the watch again before the old one goes: the
                // automatic reset after a reconnect is not always enough
                // (ZOOKEEPER-4698 and a just-restarted server).
                match with_deadline(
                    request_timeout,
                    "watch",
                    session.watch(layout.root_path(), zk::AddWatchMode::PersistentRecursive),
                )
                .await
                {
                    Ok(Ok(w)) => watcher = w,
                    Ok(Err(zk::Error::SessionExpired)) => {
                        session_ended = true;
                        continue 'outer;
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                connected = true;
                resync = rounds.has_running();
                if resync {
                    count_watch_resume("the connection was back");
                }
                continue;
            }
            let Some(state) = weak.upgrade() else { return };
            let r = rounds.round(&state, &session, resync).await;
            if let Err(e) = &r {
                if !e.is_retryable() {
                    // Every stream gets the error and ends; nothing is
                    // silently dropped. A closed store's streams just end.
                    let _gate = state.delivery_gate.lock();
                    if state.is_closed() {
                        return;
                    }
                    rounds.fail_all(fatal_error(e));
                }
            }
            drop(state);
            match r {
                Ok(()) => resync = false,
                Err(e) if !e.is_retryable() => {}
                Err(_) => {
                    // Reads were lost: read everything again.
                    resync = true;
                    if *shutdown.borrow() {
                        return;
                    }
                    if session.state() != zk::SessionState::SyncConnected {
                        connected = false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            rounds.prune();
        }
    }
}
