//! One multiplexed etcd watch stream per store, reconnecting and resuming
//! every watch from the revision after the last one it delivered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions as EtcdWatchOptions, WatchResponse};
use tokio::sync::mpsc;

/// A change seen by the multiplexer, before the root is stripped.
#[derive(Debug)]
pub(crate) enum Raw {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        revision: i64,
    },
    Delete {
        key: Vec<u8>,
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
    fn options(&self) -> EtcdWatchOptions {
        let mut o = EtcdWatchOptions::new()
            .with_start_revision(self.next)
            .with_watch_id(self.id)
            .with_progress_notify();
        if !self.range_end.is_empty() {
            o = o.with_range(self.range_end.clone());
        }
        o
    }

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
}

/// Runs the multiplexer until the store closes or is dropped.
pub(crate) async fn run(client: Client, mut cmds: mpsc::UnboundedReceiver<Cmd>, timeout: Duration) {
    let mut watchers: BTreeMap<i64, Watcher> = BTreeMap::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        // Nothing to watch: wait for a command.
        if watchers.is_empty() {
            match cmds.recv().await {
                None | Some(Cmd::Close) => return,
                Some(Cmd::Add(w)) => {
                    watchers.insert(w.id, w);
                }
                Some(Cmd::Remove(id)) => {
                    watchers.remove(&id);
                }
            }
            continue;
        }
        // Connect, creating the first watch with the stream.
        let Some(first) = watchers.values().next() else {
            continue;
        };
        let (first_key, first_opts) = (first.key.clone(), first.options());
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
                match cmd {
                    None | Some(Cmd::Close) => return,
                    Some(Cmd::Add(w)) => { watchers.insert(w.id, w); }
                    Some(Cmd::Remove(id)) => { watchers.remove(&id); }
                }
                // Start over so the new set of watches is created.
                continue;
            }
        };
        let Some(stream) = stream else {
            if wait_or_close(&mut cmds, &mut watchers, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (mut sender, mut responses) = stream.split();
        let first_id = watchers.keys().next().copied().unwrap_or_default();
        let mut ok = true;
        for w in watchers.values().filter(|w| w.id != first_id) {
            if sender
                .watch(w.key.clone(), Some(w.options()))
                .await
                .is_err()
            {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        backoff = Duration::from_millis(100);
        // Serve until the stream breaks.
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => return,
                    Some(Cmd::Add(w)) => {
                        let sent = sender.watch(w.key.clone(), Some(w.options())).await;
                        watchers.insert(w.id, w);
                        if sent.is_err() {
                            break;
                        }
                    }
                    Some(Cmd::Remove(id)) => {
                        if watchers.remove(&id).is_some() && sender.cancel(id).await.is_err() {
                            break;
                        }
                    }
                },
                msg = responses.message() => match msg {
                    Ok(Some(resp)) => {
                        for id in handle(&mut watchers, resp) {
                            watchers.remove(&id);
                            let _ = sender.cancel(id).await;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("etcd watch stream broke: {e}");
                        break;
                    }
                },
            }
        }
        // Reconnect after a short pause.
        if wait_or_close(&mut cmds, &mut watchers, Duration::from_millis(100)).await {
            return;
        }
    }
}

/// Sleeps `pause` while applying commands; true if the store closed.
async fn wait_or_close(
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    watchers: &mut BTreeMap<i64, Watcher>,
    pause: Duration,
) -> bool {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            cmd = cmds.recv() => match cmd {
                None | Some(Cmd::Close) => return true,
                Some(Cmd::Add(w)) => { watchers.insert(w.id, w); }
                Some(Cmd::Remove(id)) => { watchers.remove(&id); }
            },
        }
    }
}

/// Applies one response; returns the watches that are over.
fn handle(watchers: &mut BTreeMap<i64, Watcher>, resp: WatchResponse) -> Vec<i64> {
    let id = resp.watch_id();
    let Some(w) = watchers.get_mut(&id) else {
        return Vec::new();
    };
    if resp.compact_revision() > 0 {
        w.send(Raw::Compacted {
            requested: w.next - 1,
            oldest: resp.compact_revision(),
        });
        return vec![id];
    }
    if resp.canceled() {
        w.send(Raw::Canceled(resp.cancel_reason().to_owned()));
        return vec![id];
    }
    if resp.created() {
        return Vec::new();
    }
    if resp.events().is_empty() {
        // A progress notification: everything up to its revision is sent.
        if let Some(h) = resp.header() {
            w.next = w.next.max(h.revision() + 1);
            if h.revision() >= w.replay_until {
                w.replay = None;
            }
        }
        return Vec::new();
    }
    // Events of one response may share a revision (a multi-key txn, a
    // lease expiring deletes all its keys at once): skip only what was
    // delivered before this response, and advance `next` after it.
    let floor = w.next;
    let mut last = None;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let revision = kv.mod_revision();
        if revision < floor {
            continue;
        }
        let item = match ev.event_type() {
            EventType::Put => Raw::Put {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                revision,
            },
            EventType::Delete => Raw::Delete {
                key: kv.key().to_vec(),
                revision,
            },
        };
        if !w.send(item) {
            return vec![id];
        }
        last = Some(revision);
    }
    if let Some(revision) = last {
        w.next = w.next.max(revision + 1);
    }
    Vec::new()
}
