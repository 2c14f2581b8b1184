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

/// The change recorded at `revision`.
pub(crate) fn decode_change(revision: u64, raw: &[u8]) -> Result<Change> {
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
