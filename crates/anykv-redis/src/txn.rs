//! `Store::txn`: a transaction as one run of the `TXN` script (see
//! `scripts.rs`), which evaluates the compares, picks the branch, checks
//! the leases of leased puts, and applies the branch's writes at one
//! revision with one change record per written key, all before replying.
//! Both branches are sent, since the branch is picked on the server.
//!
//! Every key the script touches carries the namespace's hash tag, so a
//! Cluster runs it on the one node serving the namespace's slot.

use anykv_core::{
    Bytes, Capabilities, Compare, Error, KvPair, Result, Txn, TxnOp, TxnOpResult, TxnResponse,
};
use redis::Value;

use crate::client::{Durability, Written};
use crate::config::{BACKEND, MAX_TTL, MIN_TTL};
use crate::reply::{as_array, as_i64, as_u64, into_bytes, unexpected_reply};
use crate::scripts;
use crate::state::StoreState;

/// The most bytes of keys and values one transaction may send (both
/// branches and the compares together): far below the server's limits on
/// one request (`proto-max-bulk-len`, `client-query-buffer-limit`), which
/// would otherwise drop the connection and leave the outcome unknown.
pub const MAX_TXN_BYTES: usize = 256 << 20;

/// The script's arguments after the prefix and the history bound.
fn encode(s: &StoreState, txn: &Txn) -> Result<Vec<Vec<u8>>> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(
        3 + 3 * txn.compares.len() + 5 * (txn.success.len() + txn.failure.len()),
    );
    let mut bytes = 0usize;
    args.push(txn.compares.len().to_string().into_bytes());
    for c in &txn.compares {
        let full = s.layout.key(c.key())?.full;
        let (kind, arg): (&[u8], Vec<u8>) = match c {
            Compare::Revision { revision, .. } => (b"r", revision.to_string().into_bytes()),
            Compare::Absent { .. } => (b"a", Vec::new()),
            Compare::Present { .. } => (b"p", Vec::new()),
            Compare::Value { value, .. } => (b"v", value.to_vec()),
        };
        bytes = bytes.saturating_add(full.len() + arg.len());
        args.push(kind.to_vec());
        args.push(full.into_bytes());
        args.push(arg);
    }
    for branch in [&txn.success, &txn.failure] {
        args.push(branch.len().to_string().into_bytes());
        for op in branch {
            let full = s.layout.key(op.key())?.full;
            let (kind, value, ttl, lease): (&[u8], &[u8], u128, u64) = match op {
                TxnOp::Put { value, options, .. } => (
                    b"p",
                    value.as_ref(),
                    options
                        .ttl
                        .map(|t| t.clamp(MIN_TTL, MAX_TTL).as_millis())
                        .unwrap_or(0),
                    options.lease.map(|l| l.0).unwrap_or(0),
                ),
                TxnOp::Delete { .. } => (b"d", b"", 0, 0),
                TxnOp::Get { .. } => (b"g", b"", 0, 0),
            };
            bytes = bytes.saturating_add(full.len() + value.len());
            args.push(kind.to_vec());
            args.push(full.into_bytes());
            args.push(value.to_vec());
            args.push(ttl.to_string().into_bytes());
            args.push(lease.to_string().into_bytes());
        }
    }
    if bytes > MAX_TXN_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a transaction of {bytes} bytes of keys and values is over the redis backend's \
             limit of {MAX_TXN_BYTES}"
        )));
    }
    Ok(args)
}

/// What the script replied.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The transaction ran.
    Done(TxnResponse),
    /// A leased put's lease is gone: nothing was written.
    LeaseLost(u64),
}

/// Decodes the script's reply for the branch that ran (`success` or
/// `failure` of `txn`, by the reply's flag). Anything that does not fit
/// is a `Backend` error.
fn decode(v: Value, txn: &Txn) -> Result<Outcome> {
    let bad = || unexpected_reply("txn");
    let mut it = as_array(v).ok_or_else(bad)?.into_iter();
    let code = it.next().as_ref().and_then(as_i64).ok_or_else(bad)?;
    if code == 4 {
        let lease = it.next().as_ref().and_then(as_u64).ok_or_else(bad)?;
        return Ok(Outcome::LeaseLost(lease));
    }
    if code != 0 {
        return Err(bad());
    }
    let (Some(succeeded), Some(failed), Some(revision), Some(results), None) = (
        it.next().as_ref().and_then(as_i64),
        it.next().as_ref().and_then(as_i64),
        it.next().as_ref().and_then(as_u64),
        it.next().and_then(as_array),
        it.next(),
    ) else {
        return Err(bad());
    };
    let (succeeded, failed_compare, branch) = match (succeeded, usize::try_from(failed)) {
        (1, Err(_)) if failed == -1 => (true, None, &txn.success),
        (0, Ok(i)) if i < txn.compares.len() => (false, Some(i), &txn.failure),
        _ => return Err(bad()),
    };
    if results.len() != branch.len() {
        return Err(bad());
    }
    let revision = (revision > 0).then_some(revision);
    let mut out = Vec::with_capacity(branch.len());
    for (op, r) in branch.iter().zip(results) {
        out.push(match op {
            TxnOp::Put { .. } => match (as_i64(&r), revision) {
                (Some(1), Some(revision)) => TxnOpResult::Put { revision },
                _ => return Err(bad()),
            },
            TxnOp::Delete { .. } => match as_i64(&r) {
                Some(1) if revision.is_some() => TxnOpResult::Delete { existed: true },
                Some(0) => TxnOpResult::Delete { existed: false },
                _ => return Err(bad()),
            },
            TxnOp::Get { key } => match r {
                Value::Nil => TxnOpResult::Get(None),
                other => {
                    let mut pair = as_array(other).ok_or_else(bad)?.into_iter();
                    let (Some(value), Some(rev), None) = (pair.next(), pair.next(), pair.next())
                    else {
                        return Err(bad());
                    };
                    TxnOpResult::Get(Some(KvPair {
                        key: key.clone(),
                        value: Bytes::from(into_bytes(value).ok_or_else(bad)?),
                        revision: as_u64(&rev).ok_or_else(bad)?,
                    }))
                }
            },
        });
    }
    Ok(Outcome::Done(TxnResponse::new(
        succeeded,
        failed_compare,
        out,
        revision,
    )))
}

/// Runs a transaction: validates it against `caps`, sends it as one
/// script, and waits for replicas (when configured) if it wrote.
pub(crate) async fn run(s: &StoreState, caps: &Capabilities, txn: Txn) -> Result<TxnResponse> {
    s.ensure_open()?;
    let txn = txn.validate(caps)?;
    let args = encode(s, &txn)?;
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let Written { value, replicas } = s
        .client
        .write_script(&scripts::TXN, &args, "txn", Durability::Replicated)
        .await?;
    match decode(value, &txn)? {
        Outcome::Done(response) => {
            if response.revision.is_some() {
                replicas.check("txn")?;
            }
            Ok(response)
        }
        Outcome::LeaseLost(lease) => Err(Error::LeaseLost {
            backend: BACKEND,
            lease,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    fn sample() -> Txn {
        Txn::new()
            .when(Compare::present("a"))
            .when(Compare::absent("b"))
            .then(TxnOp::put("a", "x"))
            .then(TxnOp::delete("b"))
            .then(TxnOp::get("c"))
            .or_else(TxnOp::get("a"))
    }

    #[test]
    fn decodes_both_branches() {
        let t = sample();
        let ok = Value::Array(vec![
            int(0),
            int(1),
            int(-1),
            int(9),
            Value::Array(vec![
                int(1),
                int(0),
                Value::Array(vec![Value::BulkString(b"v".to_vec()), int(4)]),
            ]),
        ]);
        assert_eq!(
            decode(ok, &t).unwrap(),
            Outcome::Done(TxnResponse::new(
                true,
                None,
                vec![
                    TxnOpResult::Put { revision: 9 },
                    TxnOpResult::Delete { existed: false },
                    TxnOpResult::Get(Some(KvPair {
                        key: "c".into(),
                        value: Bytes::from_static(b"v"),
                        revision: 4
                    })),
                ],
                Some(9)
            ))
        );
        let failed = Value::Array(vec![
            int(0),
            int(0),
            int(1),
            int(0),
            Value::Array(vec![Value::Nil]),
        ]);
        assert_eq!(
            decode(failed, &t).unwrap(),
            Outcome::Done(TxnResponse::new(
                false,
                Some(1),
                vec![TxnOpResult::Get(None)],
                None
            ))
        );
        let lost = Value::Array(vec![int(4), Value::BulkString(b"17".to_vec())]);
        assert_eq!(decode(lost, &t).unwrap(), Outcome::LeaseLost(17));
    }

    #[test]
    fn malformed_replies_are_backend_errors() {
        let t = sample();
        let replies = [
            Value::Nil,
            int(0),
            Value::Array(vec![int(7)]),
            Value::Array(vec![int(4)]),
            Value::Array(vec![int(0), int(1), int(-1), int(9)]),
            // The wrong number of results.
            Value::Array(vec![int(0), int(1), int(-1), int(9), Value::Array(vec![])]),
            // A failed compare out of range.
            Value::Array(vec![int(0), int(0), int(5), int(0), Value::Array(vec![])]),
            // Succeeded with a failed compare.
            Value::Array(vec![int(0), int(1), int(0), int(0), Value::Array(vec![])]),
            // A put without a revision.
            Value::Array(vec![
                int(0),
                int(1),
                int(-1),
                int(0),
                Value::Array(vec![int(1), int(0), Value::Nil]),
            ]),
            // A get that is not a pair.
            Value::Array(vec![
                int(0),
                int(1),
                int(-1),
                int(3),
                Value::Array(vec![int(1), int(1), Value::Array(vec![int(1)])]),
            ]),
            // Trailing elements.
            Value::Array(vec![
                int(0),
                int(0),
                int(0),
                int(0),
                Value::Array(vec![Value::Nil]),
                int(1),
            ]),
        ];
        for r in replies {
            let shown = format!("{r:?}");
            assert!(
                matches!(decode(r, &t), Err(Error::Backend { .. })),
                "{shown}"
            );
        }
    }
}
