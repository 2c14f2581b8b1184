//! Decoding the server's replies: scalars, arrays, the scripts' `{code,
//! n}` and state replies, and change-stream records. Nothing here panics
//! on any reply: what does not decode is `None`, or a `Backend` error
//! saying the reply was unexpected.

use anykv_core::{Bytes, Error, Result};
use redis::Value;

use crate::config::BACKEND;
use crate::scripts::LAYOUT;

/// `Backend`: the server's reply to `what` is not what the backend sent
/// for.
pub(crate) fn unexpected_reply(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}: unexpected reply from the server"),
        source: None,
    }
}

/// A reply's bytes (strings, numbers, `OK`), copied.
pub(crate) fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// Like [`as_bytes`], taking the bytes out of the reply without a copy.
pub(crate) fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        other => as_bytes(&other),
    }
}

/// A reply as an unsigned number (an integer, or a string of one).
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// A reply as a signed number (an integer, or a string of one).
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// A reply's elements (an array or a set; nil is empty).
pub(crate) fn as_array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// A script's `{code, n}` reply.
pub(crate) fn code_pair(v: Value, what: &str) -> Result<(i64, i64)> {
    let a = as_array(v).ok_or_else(|| unexpected_reply(what))?;
    match (a.first().and_then(as_i64), a.get(1).and_then(as_i64)) {
        (Some(c), Some(n)) => Ok((c, n)),
        _ => Err(unexpected_reply(what)),
    }
}

/// The `STATE` script's `{epoch, revision}`.
pub(crate) fn parse_state(v: Value, what: &str) -> Result<(String, u64)> {
    let a = as_array(v).ok_or_else(|| unexpected_reply(what))?;
    let epoch = a
        .first()
        .and_then(as_bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unexpected_reply(what))?;
    let rev = a
        .get(1)
        .and_then(as_u64)
        .ok_or_else(|| unexpected_reply(what))?;
    let layout = a
        .get(2)
        .and_then(as_bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unexpected_reply(what))?;
    if layout != LAYOUT {
        return Err(Error::Config(format!(
            "redis: {what}: the namespace holds records in anykv's layout {layout:?}, \
             written by an earlier version; this version reads layout {LAYOUT:?}. \
             Use a new namespace (`?namespace=`) and copy the keys over with the earlier version"
        )));
    }
    Ok((epoch, rev))
}

/// A key's record (layout 2, see `layout.rs`): `<rev> <deadline> <lease>\n`
/// then the value; deadline and lease are empty when the key has none.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The key's revision.
    pub(crate) revision: u64,
    /// Whether the key has a deadline (its liveness then needs the
    /// server's clock).
    pub(crate) has_deadline: bool,
    /// Where the value starts in the record.
    pub(crate) value_at: usize,
}

/// Reads a record's header; `None` for anything that is not one.
pub(crate) fn parse_record(record: &[u8]) -> Option<Record> {
    // The header is at most 64 bytes (the scripts read it with GETRANGE 0 63).
    let end = record.iter().take(64).position(|&b| b == b'\n')?;
    let mut fields = record[..end].split(|&b| b == b' ');
    let (r, e, l) = (fields.next()?, fields.next()?, fields.next()?);
    let digits = |f: &[u8]| f.iter().all(u8::is_ascii_digit);
    if fields.next().is_some() || r.is_empty() || !digits(r) || !digits(e) || !digits(l) {
        return None;
    }
    let revision = std::str::from_utf8(r).ok()?.parse().ok()?;
    Some(Record {
        revision,
        has_deadline: !e.is_empty(),
        value_at: end + 1,
    })
}

/// A record's revision and its value (the record's own bytes past the
/// header: nothing is copied); `None` for anything that is not a record.
pub(crate) fn record_value(record: Vec<u8>) -> Option<(Record, Bytes)> {
    let header = parse_record(&record)?;
    let mut value = Bytes::from(record);
    bytes::Buf::advance(&mut value, header.value_at);
    Some((header, value))
}

/// One change record of the stream, `{rev}-{seq}`.
#[derive(Debug)]
pub(crate) struct ChangeRecord {
    /// The revision (the entry ID's first part).
    pub(crate) rev: u64,
    /// 0 for the revision's data record; 1 and up for the further
    /// changes of a transaction, then for unlock records.
    pub(crate) seq: u64,
    /// The full key (or lock name).
    pub(crate) key: String,
    /// `p`ut, `d`elete, `u`nlock; 0 for an entry that is not ours.
    pub(crate) kind: u8,
    /// The value of a put.
    pub(crate) value: Bytes,
}

fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(id).ok()?;
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses `[id, [field, value, ...]]` entries. An entry whose fields are
/// not ours (kind 0) is kept, so the reader moves past it.
pub(crate) fn parse_records(v: Value) -> Option<Vec<ChangeRecord>> {
    let mut out = Vec::new();
    for item in as_array(v)? {
        let mut parts = as_array(item)?.into_iter();
        let Some((rev, seq)) = parts
            .next()
            .as_ref()
            .and_then(as_bytes)
            .and_then(|id| parse_id(&id))
        else {
            continue;
        };
        let mut e = ChangeRecord {
            rev,
            seq,
            key: String::new(),
            kind: 0,
            value: Bytes::new(),
        };
        let fields = parts.next().and_then(as_array).unwrap_or_default();
        let mut it = fields.into_iter();
        let mut key = None;
        let mut kind = 0;
        while let (Some(f), Some(val)) = (it.next(), it.next()) {
            let (Some(f), Some(val)) = (as_bytes(&f), into_bytes(val)) else {
                continue;
            };
            match f.as_slice() {
                b"k" => key = String::from_utf8(val).ok(),
                b"t" => kind = val.first().copied().unwrap_or(0),
                b"v" => e.value = Bytes::from(val),
                _ => {}
            }
        }
        if let Some(k) = key {
            e.key = k;
            e.kind = kind;
        }
        out.push(e);
    }
    Some(out)
}

/// Parses an `XREAD` reply: `[[stream, entries]]` (RESP2) or a map (RESP3).
pub(crate) fn parse_xread(v: Value) -> Option<Vec<ChangeRecord>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Map(m) => {
            let mut out = Vec::new();
            for (_, entries) in m {
                out.extend(parse_records(entries)?);
            }
            Some(out)
        }
        other => {
            let mut out = Vec::new();
            for stream in as_array(other)? {
                let mut parts = as_array(stream)?.into_iter();
                let _name = parts.next()?;
                out.extend(parse_records(parts.next()?)?);
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let r = parse_record(b"42  \nvalue").unwrap();
        assert_eq!(
            r,
            Record {
                revision: 42,
                has_deadline: false,
                value_at: 5
            }
        );
        assert_eq!(&b"42  \nvalue"[r.value_at..], b"value");
        let r = parse_record(b"7 1700000000000 3\n").unwrap();
        assert_eq!((r.revision, r.has_deadline, r.value_at), (7, true, 18));
        // A value may hold anything, newlines and spaces included.
        let r = parse_record(b"1  9\na b\nc").unwrap();
        assert_eq!((r.revision, r.has_deadline), (1, false));
        for bad in [
            &b""[..],
            b"no header",
            b"\n",
            b" 1 2\n",
            b"1 2\n",
            b"1 2 3 4\n",
            b"x  \n",
            b"1 -5 \n",
            b"99999999999999999999999  \n",
        ] {
            assert_eq!(
                parse_record(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = vec![b'1'; 70];
        long.extend_from_slice(b"  \n");
        assert_eq!(parse_record(&long), None);
    }
}
