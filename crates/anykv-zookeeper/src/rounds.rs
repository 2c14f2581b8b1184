//! The shared watch's reading rounds.
//!
//! ZooKeeper's notifications (before 3.9) carry neither data nor zxid, so
//! each notified key is re-read. The reads of one round are sent
//! together; what they return is delivered one round later, up to a
//! *watermark*: the largest zxid seen in any reply before the round began.
//! ZooKeeper sends a session the notification of every change before the
//! reply to any later request, so when a round's replies are in, the
//! notification of every change up to any zxid in them has arrived; the
//! next round reads those keys, after which the state of every key is
//! known up to that zxid. Delivering each key's newest read at or below
//! the watermark, in revision order, therefore never delivers anything
//! out of order, and a round never waits for the writers to pause: under
//! continuous writes events keep flowing (values overwritten within a
//! round are skipped), and when the writes stop every key's final state
//! is delivered within two rounds.
//!
//! A transaction writes several keys at one zxid (one `multi`): their
//! reads carry the same revision and go out in the same delivery, one
//! after the other in key order, so a stream accepts an event at the revision of the
//! event before it (but never at the revision of a `Synced` it was sent).
//!
//! A `Delete`'s revision is the zxid of the delete: every delete this
//! backend makes marks the key's node in the same multi-op, so the node's
//! `mzxid` is the delete's zxid (shared by the keys one transaction
//! deleted). A value node removed by the server (a
//! TTL or a lease session expiring) leaves the node's `pzxid`, the zxid of
//! its last child change. Where neither is usable (the key's node already
//! reaped, a revision shared by several keys, as when a session's
//! ephemeral nodes all go in one transaction), a fresh zxid is taken by
//! creating and deleting an ephemeral node under the root: later than the
//! delete, but still in order. The key may be created again between the
//! read and that zxid; a value read later then replaces the absence unless
//! its node was created after that zxid (the superseded delete is skipped,
//! like an overwritten value), so the re-created key is never lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anykv_core::backend::{EventSender, WatchTarget};
use anykv_core::{Bytes, Error, KvPair, Result, WatchEvent};
use zookeeper_client as zk;

use crate::client::{map_err, unexpected_reply, with_deadline, TARGET};
use crate::config::BACKEND;
use crate::layout::{child, CLOCK_PREFIX, DELETED_FLAG, VALUE};
use crate::nodes::{list_under, make_dirs};
use crate::state::{NewWatch, StoreState};

/// How many keys one multi-read covers (two reads each).
const READ_BATCH: usize = 32;

/// A key's state as read.
#[derive(Clone)]
pub(crate) enum State {
    /// The value, and the zxid that created its value node where the
    /// read tells it (a listing does not).
    Present(Bytes, Option<u64>),
    /// Absent at the delete's own revision (or an earlier one).
    Absent,
    /// Deleted at exactly this revision, by a delete of this backend (the
    /// key node's delete mark): the key existed just before it. A stream
    /// that started before it gets the `Delete` even if it never got the
    /// key's `Put` (skipped as overwritten, as when a transaction deletes
    /// a key the one before it wrote): a standing delete is never skipped.
    Deleted,
    /// Absent when read, at a fresh zxid taken after the read: the key may
    /// have been created again between the read and that zxid (see
    /// [`append`]).
    AbsentClocked,
}

/// A stream past its initial state.
pub(crate) struct RunningWatch {
    target: WatchTarget,
    events: EventSender,
    /// The revision of every key it was told is present.
    cache: BTreeMap<String, u64>,
    /// The last revision sent.
    last: u64,
    /// The last thing sent was `Synced` (or the initial state): the next
    /// event must be above `last`. After a `Put` or `Delete`, another at
    /// the same revision is the same transaction's (one zxid is one
    /// `multi`).
    last_synced: bool,
    /// It ended: its consumer went, it lagged, or it got an error.
    ended: bool,
}

impl RunningWatch {
    /// Sends a live event; one that would break the order ends the
    /// stream with an error instead (never silently out of order).
    fn deliver(&mut self, ev: WatchEvent) {
        let rev = ev.revision();
        let synced = matches!(ev, WatchEvent::Synced { .. });
        let ordered = if synced {
            rev >= self.last
        } else {
            self.accepts(rev)
        };
        if !ordered {
            tracing::warn!(
                target: TARGET,
                revision = rev,
                last = self.last,
                "zookeeper watch: out of order"
            );
            self.send(Err(Error::Unavailable {
                backend: BACKEND,
                message: format!(
                    "the watch could not keep its order (revision {rev} after {}); open it again",
                    self.last
                ),
                source: None,
            }));
            self.ended = true;
            return;
        }
        self.last = rev;
        self.last_synced = synced;
        self.send(Ok(ev));
    }

    /// Whether a `Put` or `Delete` at `rev` keeps the order: above the
    /// last revision sent, or at it when that was an event (of the same
    /// transaction) rather than `Synced`.
    fn accepts(&self, rev: u64) -> bool {
        rev > self.last || (rev == self.last && !self.last_synced)
    }

    /// Queues an event or an error without waiting; a stream that is gone
    /// or lagged (its buffer full) ends.
    fn send(&mut self, ev: Result<WatchEvent>) {
        if !self.ended && self.events.send(ev).is_err() {
            self.ended = true;
        }
    }
}

/// A new stream whose initial state is being completed.
struct Waiting {
    sub: NewWatch,
    /// Reads of its keys since its listing, per key in revision order.
    snap: HashMap<String, Vec<(u64, State)>>,
    /// It starts once the watermark reaches this.
    ready_at: u64,
}

/// The rounds' state: the streams, and what was read and not yet
/// delivered.
#[derive(Default)]
pub(crate) struct WatchRounds {
    /// Streams past their initial state.
    subs: Vec<RunningWatch>,
    /// New streams whose listing is still to be read.
    fresh: Vec<NewWatch>,
    waiting: Vec<Waiting>,
    /// Reads not yet delivered, per key, in revision order.
    reads: HashMap<String, Vec<(u64, State)>>,
    /// Keys notified and not yet read.
    dirty: BTreeSet<String>,
    /// The largest zxid seen in any reply.
    seen: u64,
    /// Every stream has been told everything up to this zxid.
    delivered: u64,
    /// After a reconnect, every stream gets `Synced` when the watermark
    /// reaches this.
    resync_at: Option<u64>,
}

/// What a key read gave.
enum Read {
    /// The value, its node's `mzxid` and `czxid`.
    Present(Bytes, u64, u64),
    /// The value node is absent; the key's node, if it exists: its data,
    /// `mzxid` and `pzxid`.
    Absent(Option<(Vec<u8>, u64, u64)>),
}

impl WatchRounds {
    /// Takes a new stream: its listing is read in the next round.
    pub(crate) fn add(&mut self, new: NewWatch) {
        self.fresh.push(new);
    }

    /// Notes that `k` changed, if some stream covers it: the next round
    /// reads it.
    pub(crate) fn changed(&mut self, k: String) {
        if self.covers(&k) {
            self.dirty.insert(k);
        }
    }

    /// Whether streams past their initial state are running (after a
    /// reconnect they are read again).
    pub(crate) fn has_running(&self) -> bool {
        !self.subs.is_empty()
    }

    /// Whether `k` is covered by some stream, running or starting.
    fn covers(&self, k: &str) -> bool {
        self.subs.iter().any(|s| s.target.covers(k))
            || self.fresh.iter().any(|n| n.target.covers(k))
            || self.waiting.iter().any(|w| w.sub.target.covers(k))
    }

    /// Whether another round has work without waiting for a notification.
    pub(crate) fn busy(&self) -> bool {
        !self.dirty.is_empty()
            || !self.fresh.is_empty()
            || !self.waiting.is_empty()
            || !self.reads.is_empty()
            || self.resync_at.is_some()
    }

    /// Whether no stream is left.
    pub(crate) fn idle(&self) -> bool {
        self.subs.is_empty() && self.fresh.is_empty() && self.waiting.is_empty()
    }

    /// Drops streams that ended.
    pub(crate) fn prune(&mut self) {
        self.subs.retain(|s| !s.ended && !s.events.is_closed());
        self.waiting.retain(|w| !w.sub.events.is_closed());
    }

    /// Ends every stream with `make()`'s error.
    pub(crate) fn fail_all(&mut self, make: impl Fn() -> Error) {
        for mut sub in self.subs.drain(..) {
            sub.send(Err(make()));
        }
        for n in self.fresh.drain(..) {
            let _ = n.events.send(Err(make()));
        }
        for w in self.waiting.drain(..) {
            let _ = w.sub.events.send(Err(make()));
        }
        self.reads.clear();
        self.dirty.clear();
        self.resync_at = None;
    }

    /// One round: reads what is dirty (and, for new streams or after a
    /// reconnect, lists what they cover), then delivers what is known up
    /// to the watermark from before the round.
    pub(crate) async fn round(
        &mut self,
        state: &StoreState,
        session: &zk::Client,
        resync: bool,
    ) -> Result<()> {
        if resync {
            // Reads were lost (a round failed, or the session came back):
            // a stream still completing its initial state may have missed
            // changes, so it lists its keys again.
            let waiting = std::mem::take(&mut self.waiting);
            self.fresh.extend(waiting.into_iter().map(|w| w.sub));
        }
        let watermark = self.seen;
        let mut top = self.seen;
        let mut got: BTreeMap<String, Vec<(u64, State)>> = BTreeMap::new();
        let mut listing: Vec<WatchTarget> = self.fresh.iter().map(|n| n.target.clone()).collect();
        if resync {
            listing.extend(self.subs.iter().map(|s| s.target.clone()));
        }
        if !listing.is_empty() {
            // A fresh zxid, so that `Synced` is at least the revision of
            // every write completed before the stream was opened.
            top = top.max(fresh_zxid(state, session).await?);
        }
        for f in &listing {
            match f {
                WatchTarget::Key(k) => {
                    self.dirty.insert(k.clone());
                }
                WatchTarget::Tree(p) => {
                    for pair in list_under(&state.client, session, p).await? {
                        top = top.max(pair.revision);
                        got.entry(pair.key)
                            .or_default()
                            .push((pair.revision, State::Present(pair.value, None)));
                    }
                }
            }
        }
        if resync {
            for s in &self.subs {
                self.dirty.extend(s.cache.keys().cloned());
            }
        }
        let keys: Vec<String> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|k| self.covers(k))
            .collect();
        let reads = read_keys(state, session, &keys).await?;
        let mut need_clock = Vec::new();
        let mut used: BTreeSet<u64> = BTreeSet::new();
        let mut absent = Vec::new();
        for (k, r) in keys.into_iter().zip(reads) {
            match r {
                Read::Present(v, rev, created) => {
                    top = top.max(rev);
                    got.entry(k)
                        .or_default()
                        .push((rev, State::Present(v, Some(created))));
                }
                Read::Absent(dir) => {
                    if let Some((_, m, p)) = &dir {
                        top = top.max(*m).max(*p);
                    }
                    absent.push((k, dir));
                }
            }
        }
        for (k, dir) in absent {
            let this_round = got.get(&k).and_then(|l| l.iter().map(|e| e.0).max());
            let known = self.known(&k).max(this_round.unwrap_or(0));
            // The key node's `mzxid` after a delete is that delete's own
            // zxid, which only the keys deleted by the same transaction
            // share; its `pzxid` after a removal by the server may be
            // shared by unrelated keys (a session's ephemeral nodes go in
            // one zxid), so each such revision serves one key per round.
            let (candidate, exact) = match &dir {
                Some((data, m, _)) if data.as_slice() == DELETED_FLAG => (Some(*m), true),
                Some((_, _, p)) => (Some(*p), false),
                None => (None, false),
            };
            // A key no stream was told of: only an exact delete is news
            // (see [`State::Deleted`]), and it needs no fresh zxid.
            let told = self.thought_present(&k) || this_round.is_some();
            if !told && !exact {
                continue;
            }
            // The same delete read again (a notification that came after an
            // earlier read already saw it): nothing new, and no reason to
            // take a fresh zxid for it.
            let pending = self.reads.get(&k).and_then(|l| l.last());
            if this_round.is_none()
                && candidate.is_some()
                && pending.is_some_and(|e| {
                    Some(e.0) == candidate && matches!(e.1, State::Absent | State::Deleted)
                })
            {
                continue;
            }
            match candidate {
                Some(c) if this_round.is_some_and(|p| c < p) => {}
                Some(c) if c > known && c > self.delivered && (used.insert(c) || exact) => {
                    let st = if exact { State::Deleted } else { State::Absent };
                    got.entry(k).or_default().push((c, st));
                }
                _ if told => need_clock.push(k),
                _ => {}
            }
        }
        // One fresh zxid per key (the events' revisions strictly
        // increase), taken concurrently.
        let clocks =
            futures::future::try_join_all(need_clock.iter().map(|_| fresh_zxid(state, session)))
                .await?;
        for (k, c) in need_clock.into_iter().zip(clocks) {
            top = top.max(c);
            got.entry(k).or_default().push((c, State::AbsentClocked));
        }
        self.seen = top;
        for (k, mut list) in got {
            list.sort_by_key(|e| e.0);
            for (rev, st) in list {
                append(self.reads.entry(k.clone()).or_default(), rev, st.clone());
                for w in &mut self.waiting {
                    if w.sub.target.covers(&k) {
                        append(w.snap.entry(k.clone()).or_default(), rev, st.clone());
                    }
                }
            }
        }
        let reads = &self.reads;
        for n in self.fresh.drain(..) {
            let snap = reads
                .iter()
                .filter(|(k, _)| n.target.covers(k))
                .map(|(k, l)| (k.clone(), l.clone()))
                .collect();
            self.waiting.push(Waiting {
                sub: n,
                snap,
                ready_at: top,
            });
        }
        if resync {
            self.resync_at = Some(top);
        }
        // Nothing is delivered once `close()` has returned: it marks the
        // store closed under the same lock.
        let _gate = state.delivery_gate.lock();
        state.ensure_open()?;
        self.deliver(watermark);
        Ok(())
    }

    /// The newest revision this store knows of `k`.
    fn known(&self, k: &str) -> u64 {
        let read = self.reads.get(k).and_then(|l| l.last()).map_or(0, |e| e.0);
        let cached = self
            .subs
            .iter()
            .filter_map(|s| s.cache.get(k).copied())
            .max()
            .unwrap_or(0);
        let snap = self
            .waiting
            .iter()
            .filter_map(|w| w.snap.get(k).and_then(|l| l.last()).map(|e| e.0))
            .max()
            .unwrap_or(0);
        read.max(cached).max(snap)
    }

    /// Whether some stream has (or is about to get) `k` as present.
    fn thought_present(&self, k: &str) -> bool {
        let present = |l: Option<&Vec<(u64, State)>>| {
            l.and_then(|l| l.last())
                .is_some_and(|e| matches!(e.1, State::Present(..)))
        };
        present(self.reads.get(k))
            || self.subs.iter().any(|s| s.cache.contains_key(k))
            || self.waiting.iter().any(|w| present(w.snap.get(k)))
    }

    /// Delivers each key's newest read at or below `watermark`, in
    /// revision order; then `Synced` after a reconnect, and starts the new
    /// streams whose initial state is complete.
    fn deliver(&mut self, watermark: u64) {
        let mut events = Vec::new();
        for (k, list) in self.reads.iter_mut() {
            if let Some(pos) = list.iter().rposition(|e| e.0 <= watermark) {
                let (rev, st) = list[pos].clone();
                list.drain(..=pos);
                events.push((rev, k.clone(), st));
            }
        }
        self.reads.retain(|_, l| !l.is_empty());
        // Revision order; the keys of one revision (one transaction's) in
        // key order.
        events.sort_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        for s in self.subs.iter_mut() {
            for (rev, k, st) in &events {
                if !s.target.covers(k) {
                    continue;
                }
                match st {
                    State::Present(v, _) => {
                        if s.cache.get(k) != Some(rev) {
                            s.cache.insert(k.clone(), *rev);
                            s.deliver(WatchEvent::Put(KvPair::new(k.clone(), v.clone(), *rev)));
                        }
                    }
                    State::Deleted => {
                        if s.cache.remove(k).is_some() || s.accepts(*rev) {
                            s.deliver(WatchEvent::Delete {
                                key: k.clone(),
                                revision: *rev,
                            });
                        }
                    }
                    State::Absent | State::AbsentClocked => {
                        if s.cache.remove(k).is_some() {
                            s.deliver(WatchEvent::Delete {
                                key: k.clone(),
                                revision: *rev,
                            });
                        }
                    }
                }
            }
        }
        self.delivered = self.delivered.max(watermark);
        if self.resync_at.is_some_and(|r| r <= watermark) {
            self.resync_at = None;
            for s in self.subs.iter_mut() {
                let revision = watermark.max(s.last);
                s.deliver(WatchEvent::Synced { revision });
            }
        }
        let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.ready_at <= watermark);
        self.waiting = still;
        for w in ready {
            let mut initial: Vec<KvPair> = w
                .snap
                .into_iter()
                .filter_map(|(k, list)| {
                    let (rev, st) = list.into_iter().rev().find(|e| e.0 <= watermark)?;
                    match st {
                        State::Present(v, _) => Some(KvPair::new(k, v, rev)),
                        State::Absent | State::AbsentClocked | State::Deleted => None,
                    }
                })
                .collect();
            initial.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
            let cache = initial
                .iter()
                .map(|p| (p.key.clone(), p.revision))
                .collect();
            let mut evs: Vec<WatchEvent> = initial.into_iter().map(WatchEvent::Put).collect();
            evs.push(WatchEvent::Synced {
                revision: watermark,
            });
            let ended = w.sub.initial.send(evs).is_err();
            self.subs.push(RunningWatch {
                target: w.sub.target,
                events: w.sub.events,
                cache,
                last: watermark,
                last_synced: true,
                ended,
            });
        }
    }
}

/// Appends a read to a key's reads unless it is not newer than the last.
///
/// A value found after a clocked absence ([`State::AbsentClocked`], not
/// yet delivered) was created after the read that found the key absent,
/// but possibly before the fresh zxid that absence carries: then the key
/// was not absent at that zxid, and keeping the absence would also drop
/// the value as older than it, losing the key's final state. Unless the
/// value node was created after that zxid, the absence is dropped: a
/// delete superseded by a re-create, which may be skipped; the value is
/// kept.
fn append(list: &mut Vec<(u64, State)>, rev: u64, st: State) {
    if let State::Present(_, created) = &st {
        if let Some((c, State::AbsentClocked)) = list.last() {
            if !created.is_some_and(|z| z > *c) {
                list.pop();
            }
        }
    }
    if list.last().is_none_or(|e| e.0 < rev) {
        list.push((rev, st));
    }
}

/// Reads keys: each key's node and value node, in multi-read requests.
async fn read_keys(state: &StoreState, session: &zk::Client, keys: &[String]) -> Result<Vec<Read>> {
    let limit = state.client.request_timeout();
    let layout = state.client.layout();
    let failed = |e: zk::Error| map_err(e, "watch: reading the changed keys");
    let replies = futures::future::join_all(keys.chunks(READ_BATCH).map(|chunk| {
        let mut reader = session.new_multi_reader();
        let built = chunk.iter().try_for_each(|k| {
            let dir = layout.key_dir(k);
            reader.add_get_data(&dir)?;
            reader.add_get_data(&child(&dir, VALUE))
        });
        let commit = built.map(|()| reader.commit());
        async move {
            match commit {
                Ok(commit) => with_deadline(limit, "watch read", commit).await,
                Err(e) => Ok(Err(e)),
            }
        }
    }))
    .await;
    let mut out = Vec::with_capacity(keys.len());
    for (chunk, reply) in keys.chunks(READ_BATCH).zip(replies) {
        let results = reply?.map_err(failed)?;
        if results.len() != 2 * chunk.len() {
            return Err(failed(zk::Error::UnexpectedError(format!(
                "a multi-read of {} operations answered {}",
                2 * chunk.len(),
                results.len()
            ))));
        }
        let mut results = results.into_iter();
        while let (Some(dir), Some(value)) = (results.next(), results.next()) {
            let dir = match dir {
                zk::MultiReadResult::Data { data, stat } => {
                    Some((data, stat.mzxid as u64, stat.pzxid as u64))
                }
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => None,
                zk::MultiReadResult::Error { err } => return Err(failed(err)),
                other => return Err(failed(unexpected_reply(Some(other)))),
            };
            out.push(match value {
                zk::MultiReadResult::Data { data, stat } if dir.is_some() => {
                    Read::Present(Bytes::from(data), stat.mzxid as u64, stat.czxid as u64)
                }
                zk::MultiReadResult::Data { .. }
                | zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => Read::Absent(dir),
                zk::MultiReadResult::Error { err } => return Err(failed(err)),
                other => return Err(failed(unexpected_reply(Some(other)))),
            });
        }
    }
    Ok(out)
}

/// A fresh zxid: create and delete an ephemeral sequential node under the
/// root.
async fn fresh_zxid(state: &StoreState, session: &zk::Client) -> Result<u64> {
    let root = state.client.layout().root_path();
    let limit = state.client.request_timeout();
    let opts = zk::CreateMode::EphemeralSequential.with_acls(state.client.acls());
    for _ in 0..8 {
        match with_deadline(
            limit,
            "watch clock",
            session.create(&child(root, CLOCK_PREFIX), b"", &opts),
        )
        .await?
        {
            Ok((st, seq)) => {
                let _ = with_deadline(
                    limit,
                    "watch clock",
                    session.delete(&child(root, &format!("{CLOCK_PREFIX}{seq}")), None),
                )
                .await;
                return Ok(st.czxid as u64);
            }
            Err(zk::Error::NoNode) => make_dirs(&state.client, session, root).await?,
            Err(e) => return Err(map_err(e, "watch: taking a revision")),
        }
    }
    Err(Error::Backend {
        backend: BACKEND,
        message: "watch: could not take a revision".into(),
        source: None,
    })
}
