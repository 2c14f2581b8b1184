//! A transaction: its compares, its branch, and every write of the branch
//! at one revision, all in one redb write transaction.

use anykv_core::backend::{LeaseTable, Root};
use anykv_core::{Compare, LeaseId, PutOptions, Result, Txn, TxnOp, TxnOpResult, TxnResponse};

use crate::batch::{deadline_after, Batch, Write};
use crate::codec::Entry;
use crate::config::MIN_TTL;

/// Runs a checked transaction (`txn` validated: keys canonical, relative
/// to `root`) in the write transaction of `b`: the compares in order, then
/// the branch they pick. The keys of leased puts are bound to their
/// leases in `leases` before anything is written — a lease that is gone
/// fails the whole transaction with `LeaseLost` — and each binding that is
/// new goes into `bound`, for the caller to undo if the transaction fails
/// or does not commit.
pub(crate) fn run(
    b: &mut Batch,
    leases: &LeaseTable,
    root: &Root,
    txn: &Txn,
    bound: &mut Vec<(LeaseId, String)>,
) -> Result<TxnResponse> {
    let failed = first_failed(b, root, &txn.compares)?;
    let branch = if failed.is_none() {
        &txn.success
    } else {
        &txn.failure
    };
    let fulls: Vec<String> = branch
        .iter()
        .map(|op| root.under(op.key()).into_owned())
        .collect();
    for (op, full) in branch.iter().zip(&fulls) {
        if let TxnOp::Put {
            options: PutOptions { lease: Some(l), .. },
            ..
        } = op
        {
            let already = b.header(full).ok().flatten().and_then(|h| h.lease) == Some(*l);
            leases.bind(*l, full)?;
            if !already {
                bound.push((*l, full.clone()));
            }
        }
    }
    // Keys are distinct within a branch: the gets read what was there
    // before the transaction, read first all the same.
    let mut gets = Vec::new();
    for (op, full) in branch.iter().zip(&fulls) {
        if let TxnOp::Get { .. } = op {
            let pair = b.entry(full)?.map(|e| root.pair(full, e.value, e.revision));
            gets.push(pair);
        }
    }
    let deadlines: Vec<Option<u64>> = branch
        .iter()
        .map(|op| match op {
            TxnOp::Put { options, .. } => options.ttl.map(|t| deadline_after(t.max(MIN_TTL))),
            _ => None,
        })
        .collect();
    let mut writes = Vec::new();
    for ((op, full), deadline) in branch.iter().zip(&fulls).zip(&deadlines) {
        match op {
            TxnOp::Put { value, options, .. } => writes.push(Write {
                full,
                put: Some((value, *deadline, options.lease)),
            }),
            TxnOp::Delete { .. } => writes.push(Write { full, put: None }),
            TxnOp::Get { .. } => {}
        }
    }
    let (done, revision) = b.write_all(&writes)?;
    let (mut gets, mut done) = (gets.into_iter(), done.into_iter());
    let results = branch
        .iter()
        .map(|op| match op {
            TxnOp::Get { .. } => TxnOpResult::Get(gets.next().flatten()),
            TxnOp::Put { .. } => {
                done.next();
                TxnOpResult::Put {
                    revision: revision.unwrap_or_default(),
                }
            }
            TxnOp::Delete { .. } => TxnOpResult::Delete {
                existed: done.next().unwrap_or(false),
            },
        })
        .collect();
    Ok(TxnResponse::new(
        failed.is_none(),
        failed,
        results,
        revision,
    ))
}

/// The index of the first compare that does not hold, in their order.
fn first_failed(b: &Batch, root: &Root, compares: &[Compare]) -> Result<Option<usize>> {
    for (i, c) in compares.iter().enumerate() {
        let current: Option<Entry> = b.entry(&root.under(c.key()))?;
        let current = current.as_ref().map(|e| (e.value.as_ref(), e.revision));
        if !c.holds(current) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}
