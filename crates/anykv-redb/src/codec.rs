//! How pairs and changes are laid out in the file's tables, and reading
//! them back without trusting the file: a malformed record is a `Backend`
//! error naming what was malformed, never a panic.

use anykv_core::{Bytes, Error, LeaseId, Result};

use crate::config::BACKEND;

/// The layout version of a pair, its first byte.
const ENTRY_VERSION: u8 = 1;
const ENTRY_HEADER: usize = 1 + 8 + 8 + 8;

const CHANGE_PUT: u8 = 1;
const CHANGE_DELETE: u8 = 2;
/// The changes of one transaction that wrote several keys, at its one
/// revision (layout [`crate::tables::FORMAT_TXN`]).
const CHANGE_MANY: u8 = 3;

/// A stored pair: the value, its revision, and what may remove it besides
/// a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) revision: u64,
    /// The wall-clock deadline, in nanoseconds since the Unix epoch.
    pub(crate) deadline: Option<u64>,
    pub(crate) lease: Option<LeaseId>,
    pub(crate) value: Bytes,
}

/// An entry's header, without copying its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) revision: u64,
    pub(crate) deadline: Option<u64>,
    pub(crate) lease: Option<LeaseId>,
}

/// `[version][revision][deadline ns, 0: none][lease, 0: none][value]`,
/// integers little-endian.
pub(crate) fn encode_entry(
    revision: u64,
    deadline: Option<u64>,
    lease: Option<LeaseId>,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER + value.len());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&deadline.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// The header of a stored pair under `full`.
pub(crate) fn decode_header(full: &str, raw: &[u8]) -> Result<Header> {
    let bad = |why: &str| corrupt(&format!("the pair of key {full:?}"), why);
    if raw.len() < ENTRY_HEADER {
        return Err(bad(&format!(
            "{} bytes, shorter than its header",
            raw.len()
        )));
    }
    if raw[0] != ENTRY_VERSION {
        return Err(bad(&format!("unknown layout version {}", raw[0])));
    }
    let revision = u64_at(raw, 1);
    if revision == 0 {
        return Err(bad("revision 0"));
    }
    let deadline = Some(u64_at(raw, 9)).filter(|d| *d != 0);
    let lease = Some(u64_at(raw, 17)).filter(|l| *l != 0).map(LeaseId);
    Ok(Header {
        revision,
        deadline,
        lease,
    })
}

/// A whole stored pair under `full`.
pub(crate) fn decode_entry(full: &str, raw: &[u8]) -> Result<Entry> {
    let h = decode_header(full, raw)?;
    Ok(Entry {
        revision: h.revision,
        deadline: h.deadline,
        lease: h.lease,
        value: Bytes::copy_from_slice(&raw[ENTRY_HEADER..]),
    })
}

/// One change of the history: a put of `value`, or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) key: String,
    pub(crate) value: Option<Bytes>,
}

impl Change {
    /// What it costs the history's byte limit: what the kit's change log
    /// counts, so the file and the log keep the same changes.
    pub(crate) fn size(&self) -> u64 {
        (self.key.len() + self.value.as_ref().map_or(0, |v| v.len())) as u64
    }
}

/// `[kind][key length u32][key][value]`, the length little-endian.
pub(crate) fn encode_change(key: &str, value: Option<&[u8]>) -> Vec<u8> {
    let extra = value.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(5 + key.len() + extra);
    out.push(if value.is_some() {
        CHANGE_PUT
    } else {
        CHANGE_DELETE
    });
    // Keys are at most a few KiB (the key rules); the length fits.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
    out
}

/// The changes of one revision: a single change as [`encode_change`]
/// lays it out; several (a transaction's) as `[3][count u32]`, then each
/// change as `[length u32][encode_change]`, lengths little-endian.
pub(crate) fn encode_changes(changes: &[Change]) -> Vec<u8> {
    if let [one] = changes {
        return encode_change(&one.key, one.value.as_deref());
    }
    let mut out = vec![CHANGE_MANY];
    // A transaction has at most `max_txn_ops` changes, each of at most a
    // few KiB of key and the value limit (under 3 GiB): the lengths fit.
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for c in changes {
        let raw = encode_change(&c.key, c.value.as_deref());
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(&raw);
    }
    out
}

/// Whether a record of the history holds several changes.
pub(crate) fn is_many(raw: &[u8]) -> bool {
    raw.first() == Some(&CHANGE_MANY)
}

/// The changes recorded at `revision`, in the order they were written.
pub(crate) fn decode_changes(revision: u64, raw: &[u8]) -> Result<Vec<Change>> {
    if !is_many(raw) {
        return Ok(vec![decode_change(revision, raw)?]);
    }
    let parts = split_many(raw)
        .map_err(|why| corrupt(&format!("the changes at revision {revision}"), why))?;
    parts
        .into_iter()
        .map(|one| decode_change(revision, one))
        .collect()
}

/// The changes of a record of several, each as [`encode_change`] laid it
/// out; why not, for a malformed one.
fn split_many(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = raw.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(1).ok_or("shorter than its header")?;
    if count < 2 {
        return Err("fewer than two changes in a record of several");
    }
    let mut parts = Vec::new();
    let mut at = 5;
    for _ in 0..count {
        let len = u32_at(at).ok_or("a change's length runs past its end")?;
        let start = at + 4;
        let one = start
            .checked_add(len)
            .and_then(|end| raw.get(start..end))
            .ok_or("a change runs past its end")?;
        if is_many(one) {
            return Err("a record of several inside another");
        }
        parts.push(one);
        at = start + len;
    }
    if at != raw.len() {
        return Err("bytes after its last change");
    }
    Ok(parts)
}

/// How many changes a record of the history holds and what they cost the
/// history's byte limit ([`Change::size`]), without copying values; a
/// malformed record counts as one change of its length.
pub(crate) fn record_size(raw: &[u8]) -> (u64, u64) {
    let one = (1, (raw.len() as u64).saturating_sub(5));
    if !is_many(raw) {
        return one;
    }
    match split_many(raw) {
        // Each change is its key and value after a 5-byte header.
        Ok(parts) => (
            parts.len() as u64,
            parts
                .iter()
                .map(|p| (p.len() as u64).saturating_sub(5))
                .sum(),
        ),
        Err(_) => one,
    }
}

/// The change recorded at `revision`, alone.
fn decode_change(revision: u64, raw: &[u8]) -> Result<Change> {
    let bad = |why: &str| corrupt(&format!("the change at revision {revision}"), why);
    if raw.len() < 5 {
        return Err(bad("shorter than its header"));
    }
    let len = u32::from_le_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    let key_end = 5usize
        .checked_add(len)
        .filter(|end| *end <= raw.len())
        .ok_or_else(|| bad("its key runs past its end"))?;
    let key = std::str::from_utf8(&raw[5..key_end])
        .map_err(|_| bad("its key is not UTF-8"))?
        .to_owned();
    let rest = &raw[key_end..];
    let value = match raw[0] {
        CHANGE_PUT => Some(Bytes::copy_from_slice(rest)),
        CHANGE_DELETE if rest.is_empty() => None,
        CHANGE_DELETE => return Err(bad("a delete with a value")),
        other => return Err(bad(&format!("unknown kind {other}"))),
    };
    Ok(Change { key, value })
}

/// The key of the deadline index: the deadline big-endian, so the index
/// sorts by deadline, then the key.
pub(crate) fn encode_deadline(deadline: u64, full: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + full.len());
    out.extend_from_slice(&deadline.to_be_bytes());
    out.extend_from_slice(full.as_bytes());
    out
}

/// A deadline index key back as its deadline and key.
pub(crate) fn decode_deadline(raw: &[u8]) -> Result<(u64, String)> {
    if raw.len() < 8 {
        return Err(corrupt("a deadline record", "shorter than 8 bytes"));
    }
    let mut d = [0u8; 8];
    d.copy_from_slice(&raw[..8]);
    let key = std::str::from_utf8(&raw[8..])
        .map_err(|_| corrupt("a deadline record", "its key is not UTF-8"))?;
    Ok((u64::from_be_bytes(d), key.to_owned()))
}

fn u64_at(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A `Backend` error for a malformed record of the file.
pub(crate) fn corrupt(what: &str, why: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("the file is corrupt: {what} is malformed ({why})"),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anykv_core::ErrorKind;

    #[test]
    fn entries_round_trip_and_malformed_ones_are_errors() {
        let raw = encode_entry(7, Some(99), Some(LeaseId(3)), b"v");
        let e = decode_entry("k", &raw).unwrap();
        assert_eq!(
            e,
            Entry {
                revision: 7,
                deadline: Some(99),
                lease: Some(LeaseId(3)),
                value: Bytes::from_static(b"v"),
            }
        );
        let plain = decode_entry("k", &encode_entry(1, None, None, b"")).unwrap();
        assert_eq!(
            (plain.deadline, plain.lease, plain.value.len()),
            (None, None, 0)
        );
        for bad in [
            &raw[..3],
            &[9u8; 30][..],
            &encode_entry(0, None, None, b"")[..],
        ] {
            let e = decode_entry("k", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Backend);
            assert!(e.to_string().contains("\"k\""), "{e}");
        }
    }

    #[test]
    fn changes_round_trip_and_malformed_ones_are_errors() {
        let put = decode_change(1, &encode_change("a/b", Some(b"xy"))).unwrap();
        assert_eq!(put.value.as_deref(), Some(&b"xy"[..]));
        assert_eq!((put.key.as_str(), put.size()), ("a/b", 5));
        let del = decode_change(2, &encode_change("a", None)).unwrap();
        assert_eq!(
            del,
            Change {
                key: "a".into(),
                value: None
            }
        );
        let mut long = encode_change("a", None);
        long[1] = 200;
        let mut kind = encode_change("a", None);
        kind[0] = 9;
        let mut valued_delete = encode_change("a", None);
        valued_delete.push(1);
        for bad in [vec![], vec![1, 0], long, kind, valued_delete] {
            let e = decode_change(5, &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Backend);
            assert!(e.to_string().contains("revision 5"), "{e}");
        }
    }

    #[test]
    fn a_transaction_s_changes_round_trip_as_one_record() {
        let changes = vec![
            Change {
                key: "a".into(),
                value: Some(Bytes::from_static(b"xy")),
            },
            Change {
                key: "b/c".into(),
                value: None,
            },
            Change {
                key: "d".into(),
                value: Some(Bytes::new()),
            },
        ];
        let raw = encode_changes(&changes);
        assert!(is_many(&raw));
        assert_eq!(decode_changes(4, &raw).unwrap(), changes);
        assert_eq!(record_size(&raw), (3, 2 + 3 + 1 + 1));
        // One change is laid out as before transactions.
        let one = encode_changes(&changes[..1]);
        assert_eq!(one, encode_change("a", Some(b"xy")));
        assert_eq!(decode_changes(4, &one).unwrap(), changes[..1]);
        assert_eq!(record_size(&one), (1, 3));

        let mut short = raw.clone();
        short.pop();
        let mut long = raw.clone();
        long.push(0);
        let mut count = raw.clone();
        count[1] = 9;
        let mut single = raw.clone();
        single[1] = 1;
        let nested = {
            let inner = encode_changes(&changes[..2]);
            let mut out = vec![CHANGE_MANY, 2, 0, 0, 0];
            for part in [&inner, &encode_change("z", None)] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
            out
        };
        for bad in [vec![CHANGE_MANY, 2], short, long, count, single, nested] {
            let e = decode_changes(7, &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Backend);
            assert!(e.to_string().contains("revision 7"), "{e}");
            assert_eq!(record_size(&bad).0, 1);
        }
    }

    #[test]
    fn deadlines_sort_by_time() {
        let a = encode_deadline(2, "z");
        let b = encode_deadline(256, "a");
        assert!(a < b);
        assert_eq!(decode_deadline(&b).unwrap(), (256, "a".to_owned()));
        assert_eq!(
            decode_deadline(&[1]).unwrap_err().kind(),
            ErrorKind::Backend
        );
    }
}
