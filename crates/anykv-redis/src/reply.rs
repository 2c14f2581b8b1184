//! Decoding the server's replies: scalars, arrays, the scripts' `{code,
//! n}` and state replies, and change-stream records. Nothing here panics
//! on any reply: what does not decode is `None`, or a `Backend` error
//! saying the reply was unexpected.

use anykv_core::{Bytes, Error, Result};
use redis::Value;

use crate::config::BACKEND;

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
    Ok((epoch, rev))
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
