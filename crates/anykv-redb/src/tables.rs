//! The file's tables and the small records beside them, and how redb's
//! errors become anykv's.

use std::path::Path;

use anykv_core::{Error, Result};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{corrupt, record_size};
use crate::config::BACKEND;

/// The pairs, by full key name.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("anykv_kv");
/// The bounded history, by revision.
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("anykv_history");
/// The store's counters (one record, [`STATE`]) and the layout version.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("anykv_meta");
/// The TTL deadlines: `deadline (big-endian ns) ++ key` → nothing.
pub(crate) const DEADLINES: TableDefinition<&[u8], ()> = TableDefinition::new("anykv_deadlines");
/// The keys bound to a lease, and the lease's id.
pub(crate) const LEASED: TableDefinition<&str, u64> = TableDefinition::new("anykv_leased");

/// The [`META`] record holding [`Counters`].
pub(crate) const STATE: &str = "state";
/// The [`META`] record holding the layout version.
pub(crate) const FORMAT: &str = "format";
/// The layout a new file starts with.
pub(crate) const FORMAT_VERSION: u64 = 1;
/// The layout of a file whose history has held a record of several
/// changes at one revision (a transaction's): layout 1 and those records.
/// A file moves to it with its first such record, so older versions, which
/// read layout 1 only, refuse it by name rather than as corrupt.
pub(crate) const FORMAT_TXN: u64 = 2;

/// Whether this version reads a file of layout `raw` (the [`FORMAT`]
/// record).
pub(crate) fn format_known(raw: &[u8]) -> bool {
    raw == FORMAT_VERSION.to_le_bytes() || raw == FORMAT_TXN.to_le_bytes()
}

/// Moves the file to [`FORMAT_TXN`] in `txn`, unless it is there already.
pub(crate) fn mark_format_txn(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let marked = meta
        .get(FORMAT)
        .map_err(db_err)?
        .is_some_and(|v| v.value() == FORMAT_TXN.to_le_bytes());
    if !marked {
        meta.insert(FORMAT, &FORMAT_TXN.to_le_bytes()[..])
            .map_err(db_err)?;
    }
    Ok(())
}

/// What every write keeps up to date, in one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// The last revision granted.
    pub(crate) revision: u64,
    /// Every change after this revision is in the history.
    pub(crate) compacted: u64,
    /// Changes in the history.
    pub(crate) history_count: u64,
    /// Bytes of keys and values in the history.
    pub(crate) history_bytes: u64,
    /// Every revision up to this one may have been handed out (with
    /// `Durability::Eventual`, writes not yet flushed included). Equal to
    /// `revision` after a clean close.
    pub(crate) reserved: u64,
}

impl Counters {
    pub(crate) fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        let fields = [
            self.revision,
            self.compacted,
            self.history_count,
            self.history_bytes,
            self.reserved,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<Self> {
        if raw.len() != 40 {
            return Err(corrupt(
                "the store's counters",
                &format!("{} bytes, not 40", raw.len()),
            ));
        }
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let c = Counters {
            revision: f(0),
            compacted: f(1),
            history_count: f(2),
            history_bytes: f(3),
            reserved: f(4),
        };
        if c.compacted > c.revision.max(c.reserved) {
            return Err(corrupt(
                "the store's counters",
                "compacted past the last revision",
            ));
        }
        Ok(c)
    }

    /// Writes the counters in `txn`.
    pub(crate) fn store(&self, txn: &WriteTransaction) -> Result<()> {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(STATE, &self.encode()[..]).map_err(db_err)?;
        Ok(())
    }

    /// The counters in `txn`, or zeros in a new file.
    pub(crate) fn load(txn: &WriteTransaction) -> Result<Self> {
        let meta = txn.open_table(META).map_err(db_err)?;
        let raw = meta.get(STATE).map_err(db_err)?;
        match raw {
            Some(raw) => Counters::decode(raw.value()),
            None => Ok(Counters::default()),
        }
    }
}

/// A redb failure as a `Backend` error.
pub(crate) fn db_err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    Error::Backend {
        backend: BACKEND,
        message: format!("redb: {e}"),
        source: Some(Box::new(e)),
    }
}

/// A failure to open `path` as an anykv error naming the file: another
/// process holding it is `Unavailable` (retry once it exits); a missing
/// directory or no permission is `Config`; anything else — a corrupt file
/// among them — is `Backend`.
pub(crate) fn open_err(path: &Path, e: redb::DatabaseError) -> Error {
    let shown = path.display();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the file {shown} is open in another process (redb: DatabaseAlreadyOpen); \
                 a redb file is served by one process at a time"
            ),
            source: Some(Box::new(e)),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            Error::Config(format!("cannot open the redb file {shown}: {io}"))
        }
        e => Error::Backend {
            backend: BACKEND,
            message: format!("cannot open the redb file {shown}: {e}"),
            source: Some(Box::new(e)),
        },
    }
}

/// Pops the oldest records of the history while it holds more than
/// `max_count` changes or `max_bytes` bytes (never the newest record), as
/// the kit's change log does; a transaction's changes, one record, go
/// together.
pub(crate) fn trim_history(
    txn: &WriteTransaction,
    c: &mut Counters,
    max_count: u64,
    max_bytes: u64,
) -> Result<()> {
    if c.history_count <= max_count && c.history_bytes <= max_bytes {
        return Ok(());
    }
    let mut history = txn.open_table(HISTORY).map_err(db_err)?;
    let newest = history.last().map_err(db_err)?.map(|(k, _)| k.value());
    while c.history_count > 1 && (c.history_count > max_count || c.history_bytes > max_bytes) {
        let first = history.first().map_err(db_err)?.map(|(k, _)| k.value());
        if first.is_none() || first == newest {
            break;
        }
        let Some((rev, raw)) = history.pop_first().map_err(db_err)? else {
            break;
        };
        let (count, size) = record_size(raw.value());
        c.history_count = c.history_count.saturating_sub(count);
        c.history_bytes = c.history_bytes.saturating_sub(size);
        c.compacted = c.compacted.max(rev.value());
    }
    Ok(())
}
