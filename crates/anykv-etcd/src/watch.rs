//! Watches: one multiplexed etcd watch stream per store, reconnecting and
//! resuming every watch from the revision after the last one it delivered.
//!
//! - The store's watches are grouped into *feeds*: one etcd watch per feed
//!   (created with client-chosen watch ids on the store's one watch
//!   stream), shared by every store watch of the same key or range that
//!   can start where the feed stands. A thousand watches of one key then
//!   cost etcd one watch and one response per change; the change is fanned
//!   out here, through core's [`event_channel`], one per store watch.
//! - Each store watch keeps its own position (`next`, the revision after
//!   the last event it delivered) and skips anything older; when the
//!   stream breaks the store reconnects and recreates every feed from the
//!   oldest position among its members, so nothing is lost or repeated
//!   across a server restart. The stream also moves when its member is
//!   found down (see [`crate::members`]): revisions are the cluster's, so
//!   every feed resumes on another member exactly where it stood. A compacted start yields `Compacted` and
//!   ends the stream. Events that share one revision (a multi-key
//!   transaction, a lease expiring) are all delivered, together and in
//!   etcd's order: etcd sends a revision's events in one response (it
//!   never splits a revision across responses without the `fragment`
//!   option, which is not used), each is delivered in turn, and a watch's
//!   position moves past the revision only after the whole response.
//! - A watch started with `from_revision` first replays the history up to
//!   the revision current when it started; that replay is queued without
//!   bound (it is bounded by the history it replays) and does not count as
//!   lag, so resuming with more than `WatchOptions::buffer` matching
//!   changes works. From then on at most `buffer` events are queued, and a
//!   consumer that falls further behind gets `WatchLagged`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::backend::{event_channel, EventReceiver, EventSender, WatchTarget};
use anykv_core::{Bytes, Error, KvPair, Result, WatchEvent, WatchOptions, WatchStream};
use etcd_client::{
    EventType, GetOptions, WatchOptions as EtcdWatchOptions, WatchRequestSender, WatchResponse,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::client::{header_revision, revision, EtcdClient, BACKEND};
use crate::layout::{relative_key, Layout};

/// A change of one etcd key, as the watch stream reported it.
#[derive(Debug, Clone)]
struct Change {
    key: Bytes,
    /// The new value; `None` for a delete.
    value: Option<Bytes>,
    revision: i64,
}

/// What the store asks of the multiplexer task.
enum MuxCommand {
    /// Starts delivering to a new store watch.
    Add(Watcher),
    /// Stops delivering to a store watch (its stream was dropped).
    Remove(i64),
    /// The store closed: end every watch and stop.
    Close,
}

/// One store watch, as the multiplexer serves it.
struct Watcher {
    id: i64,
    key: Vec<u8>,
    /// Empty for a single key.
    range_end: Vec<u8>,
    /// The first revision still to deliver.
    next: i64,
    /// The root its events' keys are made relative to (`""`: full keys).
    root: Arc<str>,
    events: EventSender,
    /// While replaying history (revisions up to `replay_until`, the store's
    /// revision when a resumed watch started), events go to this unbounded
    /// channel, so a replay longer than the buffer does not count as lag;
    /// it is dropped (closed) before anything goes to `events`.
    replay: Option<mpsc::UnboundedSender<Result<WatchEvent>>>,
    replay_until: i64,
}

impl Watcher {
    /// The event a change is for this watch: its key made relative to the
    /// root; `None` for a key outside it (skipped).
    fn event(&self, change: &Change) -> Option<WatchEvent> {
        let key = relative_key(&self.root, &change.key)?;
        let revision = revision(change.revision);
        Some(match &change.value {
            Some(value) => WatchEvent::Put(KvPair::new(key, value.clone(), revision)),
            None => WatchEvent::Delete { key, revision },
        })
    }

    /// Delivers one change; false if the watch is over (consumer gone or
    /// lagging).
    fn send(&mut self, change: &Change) -> bool {
        let Some(event) = self.event(change) else {
            return true;
        };
        if change.revision <= self.replay_until {
            if let Some(replay) = &self.replay {
                return replay.send(Ok(event)).is_ok();
            }
        }
        // Caught up: the consumer reads the replay to its end first.
        self.replay = None;
        self.events.send(Ok(event)).is_ok()
    }

    /// Ends the watch with an error, after the replay.
    fn end(&mut self, error: Error) {
        self.replay = None;
        let _ = self.events.send(Err(error));
    }

    /// Everything before `revision + 1` has been sent (a progress
    /// notification).
    fn progress(&mut self, revision: i64) {
        self.next = self.next.max(revision.saturating_add(1));
        if revision >= self.replay_until {
            self.replay = None;
        }
    }
}

/// One etcd watch and the store watches it serves.
struct Feed {
    key: Vec<u8>,
    /// Empty for a single key.
    range_end: Vec<u8>,
    /// The first revision this feed has not yet received: the etcd watch
    /// starts here when (re)created, and everything from here on is still
    /// to come, so a store watch whose `next` is at least `pos` may join.
    pos: i64,
    members: Vec<Watcher>,
}

impl Feed {
    fn options(&self, id: i64) -> EtcdWatchOptions {
        let mut o = EtcdWatchOptions::new()
            .with_start_revision(self.pos)
            .with_watch_id(id)
            .with_progress_notify();
        if !self.range_end.is_empty() {
            o = o.with_range(self.range_end.clone());
        }
        o
    }
}

/// What the server must be told after the feeds changed.
#[derive(Default)]
struct ServerRequests {
    /// Feeds to create on the server.
    create: Vec<i64>,
    /// Feeds to cancel on the server.
    cancel: Vec<i64>,
}

/// The store's watches, grouped into feeds.
#[derive(Default)]
struct Feeds {
    /// By etcd watch id.
    feeds: BTreeMap<i64, Feed>,
    /// The feeds of each (key, range end).
    by_range: HashMap<(Vec<u8>, Vec<u8>), Vec<i64>>,
    /// The feed of each store watch.
    feed_of: HashMap<i64, i64>,
    /// The last etcd watch id used (ids are never reused).
    last_id: i64,
}

impl Feeds {
    fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Adds a store watch; returns the feed to create on the server, if a
    /// new one is needed.
    fn add(&mut self, mut w: Watcher) -> Option<i64> {
        let range = (std::mem::take(&mut w.key), std::mem::take(&mut w.range_end));
        let joinable = self.by_range.get(&range).and_then(|ids| {
            ids.iter()
                .copied()
                .filter(|id| self.feeds.get(id).is_some_and(|f| f.pos <= w.next))
                .max_by_key(|id| self.feeds.get(id).map_or(0, |f| f.pos))
        });
        if let Some(fid) = joinable {
            if let Some(feed) = self.feeds.get_mut(&fid) {
                self.feed_of.insert(w.id, fid);
                feed.members.push(w);
                return None;
            }
        }
        let pos = w.next;
        Some(self.new_feed(range, pos, vec![w]))
    }

    fn new_feed(&mut self, range: (Vec<u8>, Vec<u8>), pos: i64, members: Vec<Watcher>) -> i64 {
        self.last_id += 1;
        let fid = self.last_id;
        for m in &members {
            self.feed_of.insert(m.id, fid);
        }
        self.by_range.entry(range.clone()).or_default().push(fid);
        self.feeds.insert(
            fid,
            Feed {
                key: range.0,
                range_end: range.1,
                pos,
                members,
            },
        );
        fid
    }

    /// Removes a feed (not its members' `feed_of` entries).
    fn drop_feed(&mut self, fid: i64) -> Option<Feed> {
        let feed = self.feeds.remove(&fid)?;
        let range = (feed.key.clone(), feed.range_end.clone());
        if let Some(ids) = self.by_range.get_mut(&range) {
            ids.retain(|id| *id != fid);
            if ids.is_empty() {
                self.by_range.remove(&range);
            }
        }
        Some(feed)
    }

    /// Removes a store watch; returns its feed if that is now empty (to
    /// cancel on the server).
    fn remove(&mut self, id: i64) -> Option<i64> {
        let fid = self.feed_of.remove(&id)?;
        let feed = self.feeds.get_mut(&fid)?;
        feed.members.retain(|m| m.id != id);
        if feed.members.is_empty() {
            self.drop_feed(fid);
            return Some(fid);
        }
        None
    }

    fn remove_all(&mut self) {
        *self = Feeds {
            last_id: self.last_id,
            ..Feeds::default()
        };
    }

    /// Applies one response of the watch stream.
    fn apply_response(&mut self, resp: WatchResponse) -> ServerRequests {
        let mut requests = ServerRequests::default();
        let fid = resp.watch_id();
        let Some(feed) = self.feeds.get_mut(&fid) else {
            return requests;
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            // The etcd watch is over.
            let Some(feed) = self.drop_feed(fid) else {
                return requests;
            };
            requests.cancel.push(fid);
            let oldest = resp.compact_revision();
            let mut rest = Vec::new();
            for mut m in feed.members {
                if oldest > 0 && m.next >= oldest {
                    // This member's own start is not compacted: it goes on
                    // in a feed of its own start.
                    rest.push(m);
                    continue;
                }
                self.feed_of.remove(&m.id);
                m.end(if oldest > 0 {
                    Error::Compacted {
                        backend: BACKEND,
                        requested: revision(m.next - 1),
                        oldest: revision(oldest),
                    }
                } else {
                    Error::Backend {
                        backend: BACKEND,
                        message: format!(
                            "the server cancelled the watch: {}",
                            resp.cancel_reason()
                        ),
                        source: None,
                    }
                });
            }
            if let Some(pos) = rest.iter().map(|m| m.next).min() {
                let range = (feed.key, feed.range_end);
                requests.create.push(self.new_feed(range, pos, rest));
            }
            return requests;
        }
        if resp.created() {
            return requests;
        }
        if resp.events().is_empty() {
            // A progress notification: everything up to its revision is sent.
            if let Some(h) = resp.header() {
                let revision = h.revision();
                feed.pos = feed.pos.max(revision.saturating_add(1));
                for m in &mut feed.members {
                    m.progress(revision);
                }
            }
            return requests;
        }
        let mut items = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            let key = Bytes::copy_from_slice(kv.key());
            let value = match ev.event_type() {
                EventType::Put => Some(Bytes::copy_from_slice(kv.value())),
                EventType::Delete => None,
            };
            items.push(Change {
                key,
                value,
                revision,
            });
        }
        let Some(top) = items.iter().map(|c| c.revision).max() else {
            return requests;
        };
        feed.pos = feed.pos.max(top.saturating_add(1));
        let mut gone = Vec::new();
        for m in &mut feed.members {
            if !deliver(m, &items) {
                gone.push(m.id);
            }
        }
        if !gone.is_empty() {
            feed.members.retain(|m| !gone.contains(&m.id));
            let empty = feed.members.is_empty();
            for id in gone {
                self.feed_of.remove(&id);
            }
            if empty {
                self.drop_feed(fid);
                requests.cancel.push(fid);
            }
        }
        requests
    }
}

/// Delivers the events of one response to one member; false if the
/// member is over.
fn deliver(m: &mut Watcher, items: &[Change]) -> bool {
    // Events of one response may share a revision (a multi-key txn, a
    // lease expiring deletes all its keys at once): skip only what was
    // delivered before this response, and advance `next` after it.
    let floor = m.next;
    let mut last = None;
    for item in items {
        if item.revision < floor {
            continue;
        }
        if !m.send(item) {
            return false;
        }
        last = Some(item.revision);
    }
    if let Some(revision) = last {
        m.next = m.next.max(revision.saturating_add(1));
    }
    true
}

/// Applies one command; true if the store closed. Feeds to create or
/// cancel are left to the next connection (the caller is not connected).
fn apply_offline(feeds: &mut Feeds, cmd: Option<MuxCommand>) -> bool {
    match cmd {
        None | Some(MuxCommand::Close) => {
            feeds.remove_all();
            true
        }
        Some(MuxCommand::Add(w)) => {
            feeds.add(w);
            false
        }
        Some(MuxCommand::Remove(id)) => {
            feeds.remove(id);
            false
        }
    }
}

/// Sends creates and cancels; false if the stream broke.
async fn send_requests(
    feeds: &Feeds,
    sender: &mut WatchRequestSender,
    requests: ServerRequests,
) -> bool {
    for fid in requests.cancel {
        if sender.cancel(fid).await.is_err() {
            return false;
        }
    }
    for fid in requests.create {
        if let Some(f) = feeds.feeds.get(&fid) {
            if sender
                .watch(f.key.clone(), Some(f.options(fid)))
                .await
                .is_err()
            {
                return false;
            }
        }
    }
    true
}

/// Runs the multiplexer until the store closes or is dropped.
async fn run(client: EtcdClient, mut cmds: mpsc::UnboundedReceiver<MuxCommand>) {
    let timeout = client.request_timeout();
    let mut feeds = Feeds::default();
    let mut backoff = Duration::from_millis(100);
    // Whether the last stream broke with feeds on it: the next stream
    // resumes them.
    let mut broke = false;
    loop {
        // Nothing to watch: wait for a command.
        if feeds.is_empty() {
            broke = false;
            if apply_offline(&mut feeds, cmds.recv().await) {
                return;
            }
            continue;
        }
        // Connect, creating the first feed's watch with the stream.
        let Some((&first_id, first)) = feeds.feeds.iter().next() else {
            continue;
        };
        let (first_key, first_opts) = (first.key.clone(), first.options(first_id));
        // The stream stays on one member until it breaks or the member is
        // found down; every feed then resumes on another member.
        let Some(conn) = client.stream_conn() else {
            if wait_or_close(&mut cmds, &mut feeds, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let mut wc = conn.watches();
        let connect = tokio::time::timeout(timeout, wc.watch(first_key, Some(first_opts)));
        let stream = tokio::select! {
            r = connect => match r {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!(
                        "etcd watch stream failed to open on {}: {}",
                        conn.url(),
                        crate::errors::describe(&e)
                    );
                    None
                }
                Err(_) => None,
            },
            _ = conn.failed() => None,
            cmd = cmds.recv() => {
                if apply_offline(&mut feeds, cmd) {
                    return;
                }
                // Start over so the new set of watches is created.
                continue;
            }
        };
        let Some(stream) = stream else {
            if wait_or_close(&mut cmds, &mut feeds, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (mut sender, mut responses) = stream.split();
        let rest = ServerRequests {
            create: feeds
                .feeds
                .keys()
                .copied()
                .filter(|id| *id != first_id)
                .collect(),
            cancel: Vec::new(),
        };
        if !send_requests(&feeds, &mut sender, rest).await {
            continue;
        }
        // (Every way out of the loop below sets `broke` again.)
        if broke {
            crate::background::reconnected("the watch stream", conn.url());
            crate::background::watches_resumed(feeds.feeds.len(), conn.url());
        }
        backoff = Duration::from_millis(100);
        // Serve until the stream breaks.
        loop {
            let requests = tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(MuxCommand::Close) => return,
                    Some(MuxCommand::Add(w)) => ServerRequests {
                        create: feeds.add(w).into_iter().collect(),
                        cancel: Vec::new(),
                    },
                    Some(MuxCommand::Remove(id)) => ServerRequests {
                        create: Vec::new(),
                        cancel: feeds.remove(id).into_iter().collect(),
                    },
                },
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => feeds.apply_response(resp),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(
                            "etcd watch stream on {} broke: {}",
                            conn.url(),
                            crate::errors::describe(&e)
                        );
                        break;
                    }
                },
                _ = conn.failed() => {
                    tracing::debug!("etcd member {} is down: its watch stream moves", conn.url());
                    break;
                }
            };
            if !send_requests(&feeds, &mut sender, requests).await {
                break;
            }
        }
        broke = true;
        // Reconnect after a short pause.
        if wait_or_close(&mut cmds, &mut feeds, Duration::from_millis(100)).await {
            return;
        }
    }
}

/// Sleeps `pause` while applying commands; true if the store closed.
async fn wait_or_close(
    cmds: &mut mpsc::UnboundedReceiver<MuxCommand>,
    feeds: &mut Feeds,
    pause: Duration,
) -> bool {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            cmd = cmds.recv() => if apply_offline(feeds, cmd) {
                return true;
            },
        }
    }
}

/// The store's side of its watches: registers them with the multiplexer
/// task and counts the user's.
pub(crate) struct Watches {
    commands: mpsc::UnboundedSender<MuxCommand>,
    next_id: AtomicI64,
    /// Open user watches (lock waits are not counted).
    open: Arc<AtomicUsize>,
    /// The store's root, which events' keys are made relative to.
    root: Arc<str>,
}

impl Watches {
    /// Starts the multiplexer task of a store on `root`.
    pub fn start(client: &EtcdClient, root: &str) -> Watches {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client.clone(), rx));
        Watches {
            commands,
            next_id: AtomicI64::new(1),
            open: Arc::new(AtomicUsize::new(0)),
            root: root.into(),
        }
    }

    /// How many user watches are open.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Ends every watch: their streams yield what they buffered, then
    /// end.
    pub fn close(&self) {
        let _ = self.commands.send(MuxCommand::Close);
    }

    /// A user watch of `target`: without a start revision, the current
    /// state and `Synced`, then the changes after it; with one, the
    /// changes after it.
    pub async fn open(
        &self,
        client: &EtcdClient,
        layout: &Layout,
        target: &WatchTarget,
        options: WatchOptions,
    ) -> Result<WatchStream> {
        let (start, end) = layout.watch_range(target);
        let (initial, next, replay_until) = match options.from_revision {
            Some(r) => {
                let next = i64::try_from(r)
                    .ok()
                    .and_then(|r| r.checked_add(1))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("revision {r} is out of range"))
                    })?;
                // The history up to the current revision is replayed
                // without counting against the buffer.
                let resp = client
                    .read("watch", |c| {
                        let (mut kv, key) = (c.kv(), start.clone());
                        async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
                    })
                    .await?;
                (Vec::new(), next, header_revision(resp.header())?)
            }
            None => {
                let opts = (!end.is_empty()).then(|| GetOptions::new().with_range(end.clone()));
                let mut resp = client
                    .read("watch", |c| {
                        let (mut kv, key, opts) = (c.kv(), start.clone(), opts.clone());
                        async move { kv.get(key, opts).await }
                    })
                    .await?;
                let rev = header_revision(resp.header())?;
                let mut initial: Vec<WatchEvent> = resp
                    .take_kvs()
                    .into_iter()
                    .filter_map(|kv| {
                        let revision = revision(kv.mod_revision());
                        let (key, value) = kv.into_key_value();
                        Some(KvPair::new(layout.relative(&key)?, value, revision))
                    })
                    .map(WatchEvent::Put)
                    .collect();
                initial.push(WatchEvent::Synced {
                    revision: revision(rev),
                });
                (initial, rev + 1, 0)
            }
        };
        let registered = self.register(Registration {
            key: start,
            range_end: end,
            next,
            buffer: options.buffer,
            root: self.root.clone(),
            counted: true,
            replay_until,
        })?;
        let live = registered.events.into_stream(initial, registered.guard);
        Ok(match registered.replay {
            Some(mut replay) => {
                let replay = futures::stream::poll_fn(move |cx| replay.poll_recv(cx));
                Box::pin(replay.chain(live))
            }
            None => live,
        })
    }

    /// A watch of one bookkeeping key from revision `next` on, with full
    /// keys and a small buffer, not counted as a user watch (a lock
    /// waiter's watch of its predecessor).
    pub fn open_bookkeeping(&self, key: Vec<u8>, next: i64) -> Result<WatchStream> {
        let registered = self.register(Registration {
            key,
            range_end: Vec::new(),
            next,
            buffer: 16,
            root: "".into(),
            counted: false,
            replay_until: 0,
        })?;
        Ok(registered.events.into_stream(Vec::new(), registered.guard))
    }

    fn register(&self, r: Registration) -> Result<Registered> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (events, receiver) = event_channel(BACKEND, r.buffer);
        let (replay_tx, replay_rx) = if r.replay_until >= r.next {
            let (t, rx) = mpsc::unbounded_channel();
            (Some(t), Some(rx))
        } else {
            (None, None)
        };
        let watcher = Watcher {
            id,
            key: r.key,
            range_end: r.range_end,
            next: r.next,
            root: r.root,
            events,
            replay: replay_tx,
            replay_until: r.replay_until,
        };
        self.commands
            .send(MuxCommand::Add(watcher))
            .map_err(|_| Error::closed(BACKEND))?;
        if r.counted {
            self.open.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Registered {
            events: receiver,
            replay: replay_rx,
            guard: WatchGuard {
                commands: self.commands.clone(),
                id,
                count: r.counted.then(|| self.open.clone()),
            },
        })
    }
}

/// What a new store watch asks of the multiplexer.
struct Registration {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision to deliver.
    next: i64,
    buffer: usize,
    root: Arc<str>,
    /// Whether it counts as a user watch in the store's stats.
    counted: bool,
    /// The last revision of the replay (0: none).
    replay_until: i64,
}

/// A registered store watch: its channels and the guard that removes it.
struct Registered {
    events: EventReceiver,
    replay: Option<mpsc::UnboundedReceiver<Result<WatchEvent>>>,
    guard: WatchGuard,
}

/// Removes a store watch from the multiplexer when its stream is dropped.
struct WatchGuard {
    commands: mpsc::UnboundedSender<MuxCommand>,
    id: i64,
    /// The store's count of user watches (`None` for bookkeeping ones).
    count: Option<Arc<AtomicUsize>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.commands.send(MuxCommand::Remove(self.id));
        if let Some(c) = &self.count {
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
