//! One multiplexed etcd watch stream per store, reconnecting and resuming
//! every watch from the revision after the last one it delivered.
//!
//! The store's watches are grouped into *feeds*: one etcd watch per feed,
//! shared by every store watch of the same key or range that can start
//! where the feed stands. A thousand watches of one key then cost etcd one
//! watch and one response per change; the change is fanned out here. Each
//! store watch keeps its own position (`next`), so it still skips what it
//! already has, and a feed is recreated after a reconnect from the oldest
//! position among its members (every member then skips what it has seen).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anykv_core::Bytes;
use etcd_client::{
    Client, EventType, WatchOptions as EtcdWatchOptions, WatchRequestSender, WatchResponse,
};
use tokio::sync::mpsc;

/// A change seen by the multiplexer, before the root is stripped.
#[derive(Debug, Clone)]
pub(crate) enum Raw {
    Put {
        key: Bytes,
        value: Bytes,
        revision: i64,
    },
    Delete {
        key: Bytes,
        revision: i64,
    },
    /// The watch's start is compacted; the watch is over.
    Compacted {
        requested: i64,
        oldest: i64,
    },
    /// The server cancelled the watch; the watch is over.
    Canceled(String),
}

pub(crate) enum Cmd {
    Add(Watcher),
    Remove(i64),
    Close,
}

/// One store watch.
pub(crate) struct Watcher {
    pub id: i64,
    pub key: Vec<u8>,
    /// Empty for a single key.
    pub range_end: Vec<u8>,
    /// The first revision still to deliver.
    pub next: i64,
    pub tx: mpsc::Sender<Raw>,
    pub lagged: Arc<AtomicBool>,
    /// While replaying history (revisions up to `replay_until`, the store's
    /// revision when a resumed watch started), events go to this unbounded
    /// channel, so a replay longer than the buffer does not count as lag;
    /// it is dropped (closed) before anything goes to `tx`.
    pub replay: Option<mpsc::UnboundedSender<Raw>>,
    pub replay_until: i64,
}

impl Watcher {
    /// Delivers one item; false if the watch is over (consumer gone or
    /// lagging).
    fn send(&mut self, item: Raw) -> bool {
        let replayed = match &item {
            Raw::Put { revision, .. } | Raw::Delete { revision, .. } => {
                *revision <= self.replay_until
            }
            Raw::Compacted { .. } | Raw::Canceled(_) => false,
        };
        if replayed {
            if let Some(replay) = &self.replay {
                return replay.send(item).is_ok();
            }
        }
        // Caught up: the consumer reads the replay to its end first.
        self.replay = None;
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
struct Changes {
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

    /// Applies one response.
    fn handle(&mut self, resp: WatchResponse) -> Changes {
        let mut changes = Changes::default();
        let fid = resp.watch_id();
        let Some(feed) = self.feeds.get_mut(&fid) else {
            return changes;
        };
        if resp.compact_revision() > 0 || resp.canceled() {
            // The etcd watch is over.
            let Some(feed) = self.drop_feed(fid) else {
                return changes;
            };
            changes.cancel.push(fid);
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
                m.send(if oldest > 0 {
                    Raw::Compacted {
                        requested: m.next - 1,
                        oldest,
                    }
                } else {
                    Raw::Canceled(resp.cancel_reason().to_owned())
                });
            }
            if let Some(pos) = rest.iter().map(|m| m.next).min() {
                let range = (feed.key, feed.range_end);
                changes.create.push(self.new_feed(range, pos, rest));
            }
            return changes;
        }
        if resp.created() {
            return changes;
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
            return changes;
        }
        let mut items = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let revision = kv.mod_revision();
            let key = Bytes::copy_from_slice(kv.key());
            items.push(match ev.event_type() {
                EventType::Put => Raw::Put {
                    key,
                    value: Bytes::copy_from_slice(kv.value()),
                    revision,
                },
                EventType::Delete => Raw::Delete { key, revision },
            });
        }
        let Some(top) = items.iter().map(revision_of).max() else {
            return changes;
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
                changes.cancel.push(fid);
            }
        }
        changes
    }
}

fn revision_of(item: &Raw) -> i64 {
    match item {
        Raw::Put { revision, .. } | Raw::Delete { revision, .. } => *revision,
        Raw::Compacted { .. } | Raw::Canceled(_) => 0,
    }
}

/// Delivers the events of one response to one member; false if the
/// member is over.
fn deliver(m: &mut Watcher, items: &[Raw]) -> bool {
    // Events of one response may share a revision (a multi-key txn, a
    // lease expiring deletes all its keys at once): skip only what was
    // delivered before this response, and advance `next` after it.
    let floor = m.next;
    let mut last = None;
    for item in items {
        let revision = revision_of(item);
        if revision < floor {
            continue;
        }
        if !m.send(item.clone()) {
            return false;
        }
        last = Some(revision);
    }
    if let Some(revision) = last {
        m.next = m.next.max(revision.saturating_add(1));
    }
    true
}

/// Applies one command; true if the store closed. Feeds to create or
/// cancel are left to the next connection (the caller is not connected).
fn apply_offline(feeds: &mut Feeds, cmd: Option<Cmd>) -> bool {
    match cmd {
        None | Some(Cmd::Close) => {
            feeds.remove_all();
            true
        }
        Some(Cmd::Add(w)) => {
            feeds.add(w);
            false
        }
        Some(Cmd::Remove(id)) => {
            feeds.remove(id);
            false
        }
    }
}

/// Sends creates and cancels; false if the stream broke.
async fn tell(feeds: &Feeds, sender: &mut WatchRequestSender, changes: Changes) -> bool {
    for fid in changes.cancel {
        if sender.cancel(fid).await.is_err() {
            return false;
        }
    }
    for fid in changes.create {
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
pub(crate) async fn run(client: Client, mut cmds: mpsc::UnboundedReceiver<Cmd>, timeout: Duration) {
    let mut feeds = Feeds::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        // Nothing to watch: wait for a command.
        if feeds.is_empty() {
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
        let mut wc = client
            .watch_client()
            .max_decoding_message_size(usize::MAX >> 1);
        let connect = tokio::time::timeout(timeout, wc.watch(first_key, Some(first_opts)));
        let stream = tokio::select! {
            r = connect => match r {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    tracing::debug!("etcd watch stream failed to open: {e}");
                    None
                }
                Err(_) => None,
            },
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
        let rest = Changes {
            create: feeds
                .feeds
                .keys()
                .copied()
                .filter(|id| *id != first_id)
                .collect(),
            cancel: Vec::new(),
        };
        if !tell(&feeds, &mut sender, rest).await {
            continue;
        }
        backoff = Duration::from_millis(100);
        // Serve until the stream breaks.
        loop {
            let changes = tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => return,
                    Some(Cmd::Add(w)) => Changes {
                        create: feeds.add(w).into_iter().collect(),
                        cancel: Vec::new(),
                    },
                    Some(Cmd::Remove(id)) => Changes {
                        create: Vec::new(),
                        cancel: feeds.remove(id).into_iter().collect(),
                    },
                },
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => feeds.handle(resp),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("etcd watch stream broke: {e}");
                        break;
                    }
                },
            };
            if !tell(&feeds, &mut sender, changes).await {
                break;
            }
        }
        // Reconnect after a short pause.
        if wait_or_close(&mut cmds, &mut feeds, Duration::from_millis(100)).await {
            return;
        }
    }
}

/// Sleeps `pause` while applying commands; true if the store closed.
async fn wait_or_close(
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
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
