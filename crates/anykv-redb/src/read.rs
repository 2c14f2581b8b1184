//! Reading pairs: one key, a tree or a page of it, in key order.

use std::ops::Bound;

use anykv_core::backend::WatchTarget;
use anykv_core::{Bytes, KvPair, Result};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::codec;
use crate::tables::{db_err, KV};

/// The pair under `full` (a full name), named by its full name.
pub(crate) fn get(txn: &ReadTransaction, full: &str) -> Result<Option<KvPair>> {
    let kv = txn.open_table(KV).map_err(db_err)?;
    let raw = kv.get(full).map_err(db_err)?;
    raw.map(|raw| {
        let e = codec::decode_entry(full, raw.value())?;
        Ok(KvPair::new(full, e.value, e.revision))
    })
    .transpose()
}

/// A page of the tree of `prefix` (full; `""` is everything): keys after
/// `after` (full) when given, at most `limit`, values left empty with
/// `keys_only`. Pairs are named by their full names, in key order.
pub(crate) fn tree(
    txn: &ReadTransaction,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    keys_only: bool,
) -> Result<Vec<KvPair>> {
    let kv = txn.open_table(KV).map_err(db_err)?;
    tree_of(&kv, prefix, after, limit, keys_only)
}

/// The full names of every key in the tree of `prefix`, in a write
/// transaction (for `delete_tree`).
pub(crate) fn tree_keys(txn: &WriteTransaction, prefix: &str) -> Result<Vec<String>> {
    let kv = txn.open_table(KV).map_err(db_err)?;
    let start = tree_start(prefix);
    let mut keys = Vec::new();
    let range = kv
        .range::<&str>((Bound::Included(start.as_str()), Bound::Unbounded))
        .map_err(db_err)?;
    for row in range {
        let (k, _) = row.map_err(db_err)?;
        let k = k.value();
        if !k.starts_with(start.as_str()) {
            break;
        }
        keys.push(k.to_owned());
    }
    Ok(keys)
}

/// What a watch on `target` starts from: its pairs, by full name.
pub(crate) fn snapshot(txn: &ReadTransaction, target: &WatchTarget) -> Result<Vec<KvPair>> {
    match target {
        WatchTarget::Key(k) => Ok(get(txn, k)?.into_iter().collect()),
        WatchTarget::Tree(p) => tree(txn, p, None, usize::MAX, false),
    }
}

fn tree_start(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn tree_of(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    keys_only: bool,
) -> Result<Vec<KvPair>> {
    let start = tree_start(prefix);
    let lower = match after {
        Some(a) if a >= start.as_str() => Bound::Excluded(a),
        _ => Bound::Included(start.as_str()),
    };
    let range = kv
        .range::<&str>((lower, Bound::Unbounded))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in range {
        if out.len() >= limit {
            break;
        }
        let (k, v) = row.map_err(db_err)?;
        let k = k.value();
        if !k.starts_with(start.as_str()) {
            break;
        }
        let pair = if keys_only {
            let h = codec::decode_header(k, v.value())?;
            KvPair::new(k, Bytes::new(), h.revision)
        } else {
            let e = codec::decode_entry(k, v.value())?;
            KvPair::new(k, e.value, e.revision)
        };
        out.push(pair);
    }
    Ok(out)
}
