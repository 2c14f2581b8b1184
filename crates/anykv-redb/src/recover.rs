//! Opening a file: checking its layout, catching up on what happened while
//! no process had it open, and reading back the history and deadlines.

use std::path::Path;

use anykv_core::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::batch::{wall_now, Batch, Effects};
use crate::codec::{self, Change};
use crate::config::RedbConfig;
use crate::tables::{
    db_err, format_known, open_err, trim_history, Counters, DEADLINES, FORMAT, FORMAT_TXN,
    FORMAT_VERSION, HISTORY, KV, LEASED, META,
};

/// Opens (or creates) the redb file at `path`.
pub(crate) fn open_database(path: &Path) -> Result<Database> {
    Database::builder()
        .create(path)
        .map_err(|e| open_err(path, e))
}

/// Brings a freshly opened file up to date, in one durable transaction:
///
/// - a file left by a crash with revisions reserved beyond the last
///   written one ([`crate::Durability::Eventual`]) starts above them, its
///   history compacted, so no revision is handed out twice and a watch
///   resuming from before the crash re-reads;
/// - at the first open in this process (`first_open`), every key still
///   bound to a lease goes: leases live in the process that granted them,
///   and that process is gone;
/// - every key whose deadline passed while the file was closed goes;
/// - the history is trimmed to this open's limits.
///
/// Each deletion gets its revision and its history entry, so a watch
/// resuming from before sees its `Delete`.
pub(crate) fn recover(
    database: &Database,
    config: &RedbConfig,
    first_open: bool,
) -> Result<(Counters, Effects)> {
    let txn = database.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let format = meta
            .get(FORMAT)
            .map_err(db_err)?
            .map(|v| v.value().to_vec());
        match format {
            None => {
                meta.insert(FORMAT, &FORMAT_VERSION.to_le_bytes()[..])
                    .map_err(db_err)?;
            }
            Some(v) if format_known(&v) => {}
            Some(v) => {
                return Err(Error::Backend {
                    backend: crate::config::BACKEND,
                    message: format!(
                        "the file has anykv layout {v:?}; this version reads layout \
                         {FORMAT_VERSION} or {FORMAT_TXN}"
                    ),
                    source: None,
                })
            }
        }
        txn.open_table(KV).map_err(db_err)?;
        txn.open_table(HISTORY).map_err(db_err)?;
        txn.open_table(DEADLINES).map_err(db_err)?;
        txn.open_table(LEASED).map_err(db_err)?;
    }
    let mut counters = Counters::load(&txn)?;
    let crashed = counters.reserved > counters.revision;
    let mut batch = Batch::new(txn, counters, config.history, config.history_bytes);
    if crashed {
        batch.counters.revision = counters.reserved;
        batch.compact(counters.reserved)?;
    }
    if first_open {
        batch.drop_leased()?;
    }
    batch.expire_due(wall_now())?;
    counters = batch.counters;
    trim_history(
        batch.txn(),
        &mut counters,
        config.history as u64,
        config.history_bytes as u64,
    )?;
    batch.counters = counters;
    batch.counters.reserved = batch.counters.revision;
    batch.finish(redb::Durability::Immediate)
}

/// What a file holds for the process beside its pairs.
pub(crate) struct Loaded {
    /// The history, oldest first.
    pub(crate) history: Vec<(u64, Change)>,
    /// Every `(deadline, key)` to schedule.
    pub(crate) deadlines: Vec<(u64, String)>,
}

/// Reads the history and the deadlines.
pub(crate) fn load(database: &Database) -> Result<Loaded> {
    let txn = database.begin_read().map_err(db_err)?;
    let mut history = Vec::new();
    let table = txn.open_table(HISTORY).map_err(db_err)?;
    for row in table.iter().map_err(db_err)? {
        let (rev, raw) = row.map_err(db_err)?;
        for change in codec::decode_changes(rev.value(), raw.value())? {
            history.push((rev.value(), change));
        }
    }
    let mut deadlines = Vec::new();
    let table = txn.open_table(DEADLINES).map_err(db_err)?;
    for row in table.iter().map_err(db_err)? {
        let (k, _) = row.map_err(db_err)?;
        deadlines.push(codec::decode_deadline(k.value())?);
    }
    Ok(Loaded { history, deadlines })
}
