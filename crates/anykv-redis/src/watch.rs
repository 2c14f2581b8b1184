//! Watches: the store's change-stream reader, and opening a watch.
//!
//! Each store has one reader task on a connection of its own, running
//! `XREAD BLOCK` on the change stream and fanning entries out to the
//! store's watches (through core's `event_channel`), so a thousand watches
//! cost one connection; a change is offered only to the watches of its key
//! and of the trees holding it. The reader reads only while the store has
//! a watch or a waiting `lock()`: otherwise it is parked (writes then cost
//! the server no `XREAD`), and the next watch or lock waiter starts it
//! again right after the revision it read itself, so nothing between is
//! missed. A new watch reads its snapshot and the store's revision in one
//! script, then catches up from the stream with `XRANGE` until the reader
//! has not gone past it. After a reconnect the reader continues from the
//! last entry it delivered; a gap in revisions (history trimmed meanwhile)
//! yields `Compacted` to every watch, which then ends. Gaps are measured
//! from the last data entry (`{revision}-0`) seen, so an unlock record
//! cannot hide one.
//!
//! A fence record (see `feed.rs`) ends the watches that saw revisions a
//! failover lost; a resuming watch whose start lies in such lost history
//! ends with `Compacted` as soon as its catch-up meets the fence record.
//!
//! On every (re)connect the reader finds the primary anew (Sentinel), runs
//! the failover check and checks the namespace's epoch and revision. A server that lost writes (restarted without persistence,
//! flushed, or evicting keys) has a new epoch or a revision below the
//! reader's position: it would hand out revisions again, so every watch
//! gets `Compacted` and ends, and the reader starts over at the server's
//! revision.
//!
//! Errors of the reader that would repeat (an ACL without `XREAD`, a
//! `WRONGTYPE` key, an unreadable reply) end every watch with that error
//! (`PermissionDenied` or `Backend`). Transient errors only make the reader
//! reconnect, but once it has been unable to read for the larger of three
//! `request_timeout`s and 15 s, every watch ends with `Unavailable` rather
//! than waiting in silence.
//!
//! A watch that resumes (`from_revision`) catches up from the stream
//! (`XRANGE`, in pages) before it is returned, and delivers those changes
//! ahead of its channel, like an initial state: resuming over more
//! matching changes than `buffer` does not lag. They are held in memory
//! until consumed, at most `history` of them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::backend::{event_channel, WatchTarget};
use anykv_core::{Error, ErrorKind, KvPair, Result, WatchEvent, WatchOptions, WatchStream};
use redis::Value;

use crate::config::BACKEND;
use crate::connection::Conn;
use crate::feed::{watch_event, Watcher};
use crate::reply::{as_array, as_u64, parse_records, parse_state, parse_xread, unexpected_reply};
use crate::scripts;
use crate::state::StoreState;

/// How long one `XREAD` blocks.
const READER_BLOCK: Duration = Duration::from_millis(1000);

/// The shortest outage of the watch reader after which watches end with
/// `Unavailable` (the limit is the larger of this and three request
/// timeouts).
const MIN_OUTAGE: Duration = Duration::from_secs(15);

/// Stream entries a watch's catch-up reads per page.
const CATCH_UP_PAGE: usize = 256;

/// Entries one `XREAD` returns at most.
const READ_COUNT: usize = 128;

/// How long a new watch waits before catching up again when the last
/// catch-up found nothing new although the reader is ahead of it.
const NO_PROGRESS_PAUSE: Duration = Duration::from_millis(20);

/// A copy of a reader error, for every watch it ends.
fn reader_failure(e: &Error) -> impl Fn() -> Error {
    let kind = e.kind();
    let message = format!("the watch reader cannot read the change stream: {e}");
    move || match kind {
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: BACKEND,
            message: message.clone(),
        },
        ErrorKind::Unauthenticated => Error::Unauthenticated {
            backend: BACKEND,
            message: message.clone(),
        },
        _ => Error::Backend {
            backend: BACKEND,
            message: message.clone(),
            source: None,
        },
    }
}

/// Checks, on a new reader connection, that the namespace is the one the
/// reader has been following: the same epoch, and a revision not below
/// the last one delivered. Otherwise the server lost writes (a restart
/// without persistence, a flush, eviction): revisions may be handed out
/// again and the reader's position means nothing, so every watch ends with
/// `Compacted` and the reader starts over at the server's revision.
async fn verify_namespace(state: &StoreState, c: &mut Conn) -> Result<()> {
    let candidate = format!("{}-{}", state.instance_id, state.next_id());
    let v = state
        .client
        .script_on(c, &scripts::STATE, &[candidate.as_bytes()], "watch reader")
        .await?;
    let (epoch, rev) = parse_state(v, "watch reader")?;
    let mut feed = state.feed.lock();
    let mut ours = state.epoch.lock();
    if *ours != epoch || rev < feed.last_data_revision {
        let requested = feed.last_data_revision;
        tracing::warn!(target: "anykv_redis",
            "anykv-redis: the server lost writes (epoch {} -> {epoch}, revision {requested} \
             -> {rev}); ending every watch with Compacted",
            *ours
        );
        feed.end_all(|| Error::Compacted {
            backend: BACKEND,
            requested,
            oldest: rev.saturating_add(1),
        });
        *ours = epoch;
        feed.last_data_revision = rev;
        feed.position = (rev, 0);
    }
    Ok(())
}

/// The store's watch reader: runs until the store closes.
pub(crate) async fn run_reader(state: Arc<StoreState>) {
    let mut shutdown = state.shutdown.subscribe();
    let log = state.layout.change_log();
    let outage_limit = state
        .client
        .request_timeout()
        .saturating_mul(3)
        .max(MIN_OUTAGE);
    let mut conn: Option<Conn> = None;
    // Since when the reader has not been reading (None: it is).
    let mut down_since: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let parked = {
            let mut feed = state.feed.lock();
            if feed.is_unneeded() {
                feed.parked = true;
            }
            feed.parked
        };
        if parked {
            // Nobody to deliver to: read nothing until a watch or a lock
            // waiter gives the reader a position again.
            down_since = None;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = state.wake_reader.notified() => continue,
            }
        }
        if let Some(since) = down_since {
            let down = since.elapsed();
            let mut feed = state.feed.lock();
            if down >= outage_limit && !feed.watches.is_empty() {
                feed.end_all(|| Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "the watch reader could not read the change stream for {down:?}"
                    ),
                    source: None,
                });
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let attempt = tokio::select! {
                    _ = shutdown.changed() => break,
                    r = state.client.reader_connection(READER_BLOCK) => r,
                };
                let verified = match attempt {
                    Ok(mut c) => {
                        let r = tokio::select! {
                            _ = shutdown.changed() => break,
                            r = verify_namespace(&state, &mut c) => r,
                        };
                        r.map(|()| c)
                    }
                    Err(e) => Err(e),
                };
                match verified {
                    Ok(c) => {
                        state.reader_connected.store(true, Ordering::SeqCst);
                        if down_since.is_some() {
                            crate::counters::reconnect("watch reader");
                            let watches = state.feed.lock().watches.len();
                            if watches > 0 {
                                crate::counters::watch_resume(watches);
                            }
                        }
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::debug!(target: "anykv_redis", "anykv-redis watch reader cannot connect: {e}");
                        if !e.is_retryable() {
                            state.feed.lock().end_all(reader_failure(&e));
                        }
                        down_since.get_or_insert_with(Instant::now);
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        }
                    }
                }
            }
        };
        let position = state.feed.lock().position;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READER_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&log)
            .arg(format!("{}-{}", position.0, position.1));
        let reply = tokio::select! {
            _ = shutdown.changed() => break,
            r = cmd.query_async::<Value>(c) => r,
        };
        let err = match reply {
            Ok(v) => match parse_xread(v) {
                Some(records) => {
                    down_since = None;
                    state.reader_connected.store(true, Ordering::SeqCst);
                    state.feed.lock().deliver(records, &state.layout);
                    continue;
                }
                None => unexpected_reply("XREAD"),
            },
            Err(e) => crate::errors::map_error(e, "XREAD"),
        };
        // Transient errors: reconnect and go on from the same position.
        // Others (an ACL without XREAD, a key of the wrong type, a reply
        // we cannot read) would repeat: they end every watch, loudly.
        tracing::debug!(target: "anykv_redis", "anykv-redis watch reader failed: {err}");
        conn = None;
        state.reader_connected.store(false, Ordering::SeqCst);
        down_since.get_or_insert_with(Instant::now);
        let nap = if err.is_retryable() {
            Duration::from_millis(100)
        } else {
            tracing::warn!(target: "anykv_redis", "anykv-redis: {err}; ending every watch");
            state.feed.lock().end_all(reader_failure(&err));
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(nap) => {}
        }
    }
    state.reader_connected.store(false, Ordering::SeqCst);
    state.feed.lock().watches.clear();
}

/// Unregisters a watch when its stream is dropped.
struct WatchRegistration {
    state: Arc<StoreState>,
    id: Option<u64>,
}

impl Drop for WatchRegistration {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.state.feed.lock().watches.remove(id);
        }
    }
}

/// Opens a watch of `target` (full keys). Without a start revision the
/// stream begins with the pairs `snapshot` reads and a `Synced` at the
/// revision it reads with them (one instant); with one, with what the
/// change stream holds after it.
pub(crate) async fn open_watch<F, Fut>(
    state: &Arc<StoreState>,
    target: WatchTarget,
    options: WatchOptions,
    snapshot: F,
) -> Result<WatchStream>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(u64, Vec<KvPair>)>>,
{
    let s = state.clone();
    let buffer = options.buffer.max(1);
    let (start, mut initial) = match options.from_revision {
        Some(r) => (r, Vec::new()),
        None => {
            let (rev, pairs) = snapshot().await?;
            let mut initial: Vec<WatchEvent> = pairs.into_iter().map(WatchEvent::Put).collect();
            initial.push(WatchEvent::Synced { revision: rev });
            (rev, initial)
        }
    };
    let (tx, rx) = event_channel(BACKEND, buffer);
    let id = s.next_id();
    // The last stream entry the watch has, `(revision, seq)`: all of
    // `start` to begin with (a snapshot at it, or a resume from it skips
    // all of a transaction at it).
    let mut last = (start, u64::MAX);
    // Where the next catch-up page starts: after every entry read, unlock
    // records included.
    let mut cursor = last;
    // Whether `last` is the namespace's revision as of some instant
    // since this call began (a snapshot's, or the end of a catch-up):
    // a parked reader may then start right after it.
    let mut fresh = options.from_revision.is_none();
    // The catch-up from the stream goes into `initial` (not the
    // channel), so resuming over more changes than `buffer` does not
    // lag; it is bounded by the stream's `history`.
    let stream = |registered: bool, initial: Vec<WatchEvent>| -> WatchStream {
        rx.into_stream(
            initial,
            WatchRegistration {
                state: s.clone(),
                id: registered.then_some(id),
            },
        )
    };
    let page = CATCH_UP_PAGE.to_string();
    loop {
        {
            let mut feed = s.feed.lock();
            if feed.parked && fresh {
                feed.resume_after(last.0, &s.wake_reader);
            }
            if !feed.parked && feed.position <= last {
                if s.is_closed() {
                    drop(feed);
                    drop(tx);
                    return Ok(stream(false, initial));
                }
                feed.watches
                    .insert(id, target.clone(), Watcher { events: tx, last });
                drop(feed);
                return Ok(stream(true, initial));
            }
        }
        let from = match cursor {
            (rev, u64::MAX) => format!("{}-0", rev.saturating_add(1)),
            (rev, seq) => format!("{rev}-{}", seq + 1),
        };
        let v = s
            .client
            .read_script(
                &scripts::CATCH_UP,
                &[from.as_bytes(), page.as_bytes()],
                "watch catch-up",
            )
            .await?;
        let mut parts = as_array(v)
            .ok_or_else(|| unexpected_reply("watch"))?
            .into_iter();
        let current = parts
            .next()
            .as_ref()
            .and_then(as_u64)
            .ok_or_else(|| unexpected_reply("watch"))?;
        let records = parts
            .next()
            .and_then(parse_records)
            .ok_or_else(|| unexpected_reply("watch"))?;
        let full_page = records.len() >= CATCH_UP_PAGE;
        fresh = !full_page;
        let progress_from = cursor;
        let mut compacted = None;
        for e in records {
            let at = (e.rev, e.seq);
            if at <= cursor {
                continue;
            }
            cursor = at;
            if e.seq != 0 {
                // A further change of a transaction (`{rev}-1`, ...), or
                // an unlock record, of the revision just read. Another
                // revision's means its `{rev}-0` was trimmed.
                if e.rev != last.0 {
                    if matches!(e.kind, b'p' | b'd') {
                        compacted = Some(e.rev);
                        break;
                    }
                    continue;
                }
                last = at;
                if matches!(e.kind, b'p' | b'd') && target.covers(&e.key) {
                    initial.push(watch_event(&e, &s.layout));
                }
                continue;
            }
            if e.kind == b'f' {
                // A fence record: revisions after `from` up to here were
                // lost (or never existed). Past it only if this watch's
                // history ends exactly at `from`.
                let from = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                if from != Some(last.0) {
                    compacted = Some(e.rev);
                    break;
                }
                last = at;
                continue;
            }
            if e.rev != last.0.saturating_add(1) {
                compacted = Some(e.rev);
                break;
            }
            last = at;
            if matches!(e.kind, b'p' | b'd') && target.covers(&e.key) {
                initial.push(watch_event(&e, &s.layout));
            }
        }
        if compacted.is_none() && !full_page && current > last.0 {
            compacted = Some(current);
        }
        if let Some(oldest) = compacted {
            // The channel is empty: this is delivered after `initial`.
            let _ = tx.send(Err(Error::Compacted {
                backend: BACKEND,
                requested: start,
                oldest,
            }));
            drop(tx);
            return Ok(stream(false, initial));
        }
        if cursor == progress_from {
            // The reader is past everything the server has: it read from a
            // server that has since lost writes, and has not yet found the
            // one now serving (whose failover check will write a fence
            // record past it). Do not spin meanwhile.
            tokio::time::sleep(NO_PROGRESS_PAUSE).await;
        }
    }
}
