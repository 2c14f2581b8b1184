//! One write: a redb write transaction, the revisions it grants, and what
//! the process learns of it once it is committed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anykv_core::{Bytes, LeaseId, Result};
use redb::{ReadableTable, WriteTransaction};

use crate::codec::{self, Change, Entry, Header};
use crate::tables::{
    db_err, mark_format_txn, trim_history, Counters, DEADLINES, HISTORY, KV, LEASED,
};

/// The wall clock, in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The deadline of a TTL written now.
pub(crate) fn deadline_after(ttl: Duration) -> u64 {
    wall_now().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}

/// What a committed write tells the process: the changes for the log and
/// the watches, the deadlines to schedule and cancel, the lease bindings
/// to drop.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) changes: Vec<(u64, Change)>,
    /// `(deadline, key)` to schedule.
    pub(crate) scheduled: Vec<(u64, String)>,
    /// `(deadline, key)` no longer due.
    pub(crate) cancelled: Vec<(u64, String)>,
    /// Keys no longer bound to a lease.
    pub(crate) unbound: Vec<(LeaseId, String)>,
}

/// One write of a transaction: a put of a value with its deadline (ns) and
/// lease, or a delete (`put: None`).
pub(crate) struct Write<'a> {
    pub(crate) full: &'a str,
    pub(crate) put: Option<(&'a Bytes, Option<u64>, Option<LeaseId>)>,
}

fn change(full: &str, value: Option<&Bytes>) -> Change {
    Change {
        key: full.to_owned(),
        value: value.cloned(),
    }
}

/// A write transaction and the counters it moves; [`Batch::finish`]
/// commits it.
pub(crate) struct Batch {
    txn: WriteTransaction,
    pub(crate) counters: Counters,
    pub(crate) effects: Effects,
    max_history: u64,
    max_history_bytes: u64,
}

impl Batch {
    pub(crate) fn new(
        txn: WriteTransaction,
        counters: Counters,
        max_history: usize,
        max_history_bytes: usize,
    ) -> Self {
        Batch {
            txn,
            counters,
            effects: Effects::default(),
            max_history: max_history as u64,
            max_history_bytes: max_history_bytes as u64,
        }
    }

    pub(crate) fn txn(&self) -> &WriteTransaction {
        &self.txn
    }

    /// The header of `full`'s pair, if present.
    pub(crate) fn header(&self, full: &str) -> Result<Option<Header>> {
        let kv = self.txn.open_table(KV).map_err(db_err)?;
        let raw = kv.get(full).map_err(db_err)?;
        raw.map(|raw| codec::decode_header(full, raw.value()))
            .transpose()
    }

    /// The pair under `full`, if present.
    pub(crate) fn entry(&self, full: &str) -> Result<Option<Entry>> {
        let kv = self.txn.open_table(KV).map_err(db_err)?;
        let raw = kv.get(full).map_err(db_err)?;
        raw.map(|raw| codec::decode_entry(full, raw.value()))
            .transpose()
    }

    /// Writes `full` at a new revision, with its deadline (ns) or lease;
    /// returns the revision.
    pub(crate) fn put(
        &mut self,
        full: &str,
        value: &Bytes,
        deadline: Option<u64>,
        lease: Option<LeaseId>,
    ) -> Result<u64> {
        let revision = self.next_revision();
        self.put_at(revision, full, value, deadline, lease)?;
        self.record(revision, vec![change(full, Some(value))])?;
        Ok(revision)
    }

    /// Deletes `full` at a new revision if present; its revision.
    pub(crate) fn delete(&mut self, full: &str) -> Result<Option<u64>> {
        if !self.remove(full)? {
            return Ok(None);
        }
        let revision = self.next_revision();
        self.record(revision, vec![change(full, None)])?;
        Ok(Some(revision))
    }

    /// Writes a transaction's puts and deletes (`None`) at one new
    /// revision, with one history record for all of them, in their order;
    /// whether each delete found its key, and the revision, `None` when
    /// nothing was written (no put, and no delete found its key).
    pub(crate) fn write_all(&mut self, writes: &[Write<'_>]) -> Result<(Vec<bool>, Option<u64>)> {
        let mut writes_any = false;
        for w in writes {
            if w.put.is_some() || self.present(w.full)? {
                writes_any = true;
                break;
            }
        }
        if !writes_any {
            return Ok((vec![false; writes.len()], None));
        }
        let revision = self.next_revision();
        let mut done = Vec::with_capacity(writes.len());
        let mut changes = Vec::with_capacity(writes.len());
        for w in writes {
            match w.put {
                Some((value, deadline, lease)) => {
                    self.put_at(revision, w.full, value, deadline, lease)?;
                    changes.push(change(w.full, Some(value)));
                    done.push(true);
                }
                None => {
                    let existed = self.remove(w.full)?;
                    if existed {
                        changes.push(change(w.full, None));
                    }
                    done.push(existed);
                }
            }
        }
        self.record(revision, changes)?;
        Ok((done, Some(revision)))
    }

    /// Whether `full` has a pair, well-formed or not.
    fn present(&self, full: &str) -> Result<bool> {
        let kv = self.txn.open_table(KV).map_err(db_err)?;
        let raw = kv.get(full).map_err(db_err)?;
        Ok(raw.is_some())
    }

    /// Writes the pair `full` at `revision`, and its index records; the
    /// caller records the change.
    fn put_at(
        &mut self,
        revision: u64,
        full: &str,
        value: &Bytes,
        deadline: Option<u64>,
        lease: Option<LeaseId>,
    ) -> Result<()> {
        let old = {
            let mut kv = self.txn.open_table(KV).map_err(db_err)?;
            let raw = codec::encode_entry(revision, deadline, lease, value);
            let old = kv.insert(full, &raw[..]).map_err(db_err)?;
            // A malformed old record is replaced: `Some(None)`.
            old.map(|old| codec::decode_header(full, old.value()).ok())
        };
        if let Some(old) = old {
            self.forget(full, old.as_ref(), lease)?;
        }
        if let Some(d) = deadline {
            let mut deadlines = self.txn.open_table(DEADLINES).map_err(db_err)?;
            deadlines
                .insert(&codec::encode_deadline(d, full)[..], ())
                .map_err(db_err)?;
            self.effects.scheduled.push((d, full.to_owned()));
        }
        if let Some(l) = lease {
            let mut leased = self.txn.open_table(LEASED).map_err(db_err)?;
            leased.insert(full, l.0).map_err(db_err)?;
        }
        Ok(())
    }

    /// Removes the pair `full` and its index records, if present; the
    /// caller records the change.
    fn remove(&mut self, full: &str) -> Result<bool> {
        let old = {
            let mut kv = self.txn.open_table(KV).map_err(db_err)?;
            let old = kv.remove(full).map_err(db_err)?;
            old.map(|old| codec::decode_header(full, old.value()).ok())
        };
        let Some(old) = old else {
            return Ok(false);
        };
        self.forget(full, old.as_ref(), None)?;
        Ok(true)
    }

    /// Drops the index records of the pair `full` had (its deadline; its
    /// lease unless it keeps `keep`); `None` for a malformed record, whose
    /// deadline record, if any, is left for the expiry to discard.
    fn forget(&mut self, full: &str, old: Option<&Header>, keep: Option<LeaseId>) -> Result<()> {
        let Some(old) = old else {
            // What a malformed record may have left in the lease index.
            if keep.is_none() {
                let mut leased = self.txn.open_table(LEASED).map_err(db_err)?;
                leased.remove(full).map_err(db_err)?;
            }
            return Ok(());
        };
        if let Some(d) = old.deadline {
            let mut deadlines = self.txn.open_table(DEADLINES).map_err(db_err)?;
            deadlines
                .remove(&codec::encode_deadline(d, full)[..])
                .map_err(db_err)?;
            self.effects.cancelled.push((d, full.to_owned()));
        }
        if let Some(l) = old.lease.filter(|l| Some(*l) != keep) {
            let mut leased = self.txn.open_table(LEASED).map_err(db_err)?;
            leased.remove(full).map_err(db_err)?;
            self.effects.unbound.push((l, full.to_owned()));
        }
        Ok(())
    }

    fn next_revision(&mut self) -> u64 {
        self.counters.revision += 1;
        self.counters.revision
    }

    /// Appends the changes of `revision` to the history, as one record,
    /// trimmed as the change log trims.
    fn record(&mut self, revision: u64, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if changes.len() > 1 {
            mark_format_txn(&self.txn)?;
        }
        {
            let mut history = self.txn.open_table(HISTORY).map_err(db_err)?;
            let raw = codec::encode_changes(&changes);
            history.insert(revision, &raw[..]).map_err(db_err)?;
        }
        self.counters.history_count += changes.len() as u64;
        self.counters.history_bytes += changes.iter().map(Change::size).sum::<u64>();
        trim_history(
            &self.txn,
            &mut self.counters,
            self.max_history,
            self.max_history_bytes,
        )?;
        self.effects
            .changes
            .extend(changes.into_iter().map(|c| (revision, c)));
        Ok(())
    }

    /// Deletes every key whose deadline is at or before `now` (ns) and
    /// still its own, each at its revision; the deadline records go.
    pub(crate) fn expire_due(&mut self, now: u64) -> Result<usize> {
        let due: Vec<(u64, String)> = {
            let deadlines = self.txn.open_table(DEADLINES).map_err(db_err)?;
            let end = codec::encode_deadline(now.saturating_add(1), "");
            let range = deadlines.range::<&[u8]>(..&end[..]).map_err(db_err)?;
            let mut due = Vec::new();
            for row in range {
                let (k, _) = row.map_err(db_err)?;
                due.push(codec::decode_deadline(k.value())?);
            }
            due
        };
        let mut expired = 0;
        for (deadline, full) in due {
            // A malformed pair is not judged: its deadline record goes, the
            // pair stays for a put or delete to replace.
            let header = self.header(&full).ok().flatten();
            if header.and_then(|h| h.deadline) == Some(deadline) {
                self.delete(&full)?;
                expired += 1;
            } else {
                let mut deadlines = self.txn.open_table(DEADLINES).map_err(db_err)?;
                deadlines
                    .remove(&codec::encode_deadline(deadline, &full)[..])
                    .map_err(db_err)?;
            }
        }
        Ok(expired)
    }

    /// Deletes every key bound to a lease: a lease lives in the process
    /// that granted it, so at the first open of a file none is alive.
    pub(crate) fn drop_leased(&mut self) -> Result<usize> {
        let keys: Vec<String> = {
            let leased = self.txn.open_table(LEASED).map_err(db_err)?;
            let mut keys = Vec::new();
            for row in leased.iter().map_err(db_err)? {
                let (k, _) = row.map_err(db_err)?;
                keys.push(k.value().to_owned());
            }
            keys
        };
        let mut dropped = 0;
        for full in keys {
            let header = self.header(&full).ok().flatten();
            if header.is_some_and(|h| h.lease.is_some()) {
                self.delete(&full)?;
                dropped += 1;
            } else {
                let mut leased = self.txn.open_table(LEASED).map_err(db_err)?;
                leased.remove(&*full).map_err(db_err)?;
            }
        }
        Ok(dropped)
    }

    /// Discards the history up to and including `revision` (at most the
    /// last revision).
    pub(crate) fn compact(&mut self, revision: u64) -> Result<()> {
        let revision = revision.min(self.counters.revision);
        let mut history = self.txn.open_table(HISTORY).map_err(db_err)?;
        loop {
            let first = history.first().map_err(db_err)?.map(|(k, _)| k.value());
            if first.is_none_or(|r| r > revision) {
                break;
            }
            if let Some((_, raw)) = history.pop_first().map_err(db_err)? {
                let (count, size) = codec::record_size(raw.value());
                self.counters.history_count = self.counters.history_count.saturating_sub(count);
                self.counters.history_bytes = self.counters.history_bytes.saturating_sub(size);
            }
        }
        self.counters.compacted = self.counters.compacted.max(revision);
        Ok(())
    }

    /// Commits with `durability`, the counters included; what the process
    /// must now learn.
    pub(crate) fn finish(mut self, durability: redb::Durability) -> Result<(Counters, Effects)> {
        self.counters.store(&self.txn)?;
        self.txn.set_durability(durability).map_err(db_err)?;
        self.txn.commit().map_err(db_err)?;
        Ok((self.counters, self.effects))
    }

    /// Whether the batch changed anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.effects.changes.is_empty()
    }
}
