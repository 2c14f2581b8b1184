//! Transactions: one etcd `Txn` per [`anykv_core::Txn`].
//!
//! - Keys map through the root as for single writes; compares become etcd
//!   compares: `Revision` is `mod_revision == rev` (an absent key compares
//!   as 0, and revisions start at 1, so this also proves the key exists),
//!   `Absent` is `create_revision == 0`, `Present` is `create_revision >
//!   0`, `Value` is `value == bytes` (etcd fails a value compare on an
//!   absent key, as the contract wants).
//! - etcd does not say which compare failed: the failure branch first
//!   reads every distinct compared key (atomically with the rest of the
//!   branch, before its writes) and the first compare that does not hold
//!   on those reads is the one reported. Those reads are not in the
//!   results.
//! - TTL puts get a lease each, granted before the transaction (for both
//!   branches, as the outcome is not known yet), with the TTL marker key
//!   written in the same branch as the put (see [`crate::layout`]); the
//!   leases of the branch that did not run are revoked afterwards. A
//!   branch too long to carry its markers has them written just before
//!   the transaction instead. A put replacing (or a delete removing) a TTL
//!   key retires that key's lease, as single writes do.
//! - Puts bound to a lease that is gone: etcd refuses the whole
//!   transaction (`requested lease not found`), which is `LeaseLost` for
//!   the lease of the branch that is gone.
//! - etcd counts `--max-txn-ops` (128 by default) per branch, so
//!   `Capabilities::max_txn_ops` is half of it
//!   ([`crate::EtcdConfig::max_txn_ops`], 64 by default): a failure
//!   branch's own operations plus its reads of the compared keys stay
//!   within the server's limit.
//! - A transaction without puts or deletes is a read: hedged and retried
//!   like `get`. Any other is sent once unless it certainly was not
//!   applied (see [`crate::client`]).

use anykv_core::{Bytes, Compare, Error, KvPair, Result, Txn, TxnOp, TxnOpResult, TxnResponse};
use etcd_client::{
    Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions as EtcdPutOptions,
    Txn as EtcdTxn, TxnOp as EtcdTxnOp, TxnOpResponse,
};

use crate::client::{header_revision, op_responses, revision, BACKEND};
use crate::lease::{self, grant_for_ttl_put, retire_ttl_lease};
use crate::state::StoreState;

/// The largest etcd transaction sent, by an estimate of its encoded size:
/// etcd's default `--max-request-bytes` (1.5 MiB) less a margin for the
/// request's framing.
const MAX_TXN_BYTES: usize = 1_572_864 - 8_192;

/// What one operation of the encoding costs besides its key and value.
const OP_OVERHEAD: usize = 32;

/// One user operation as sent.
struct Planned {
    /// The key relative to the root.
    canonical: String,
    /// The etcd key.
    full: String,
    kind: Kind,
}

enum Kind {
    Put {
        value: Bytes,
        /// The etcd lease (0: none); a user's lease id that etcd cannot
        /// hold (0, or above `i64::MAX`) is sent as -1, which etcd has no
        /// lease for.
        lease: i64,
        /// The user's lease id, for `LeaseLost`.
        user_lease: Option<u64>,
        /// Whether `lease` was granted for this put's TTL.
        ttl: bool,
    },
    Delete,
    Get,
}

/// One branch as sent: its user operations and the TTL markers to write
/// with them.
struct Branch {
    ops: Vec<Planned>,
    markers: Vec<EtcdTxnOp>,
}

impl Branch {
    /// The TTL leases granted for this branch's puts.
    fn ttl_leases(&self) -> impl Iterator<Item = i64> + '_ {
        self.ops.iter().filter_map(|p| match p.kind {
            Kind::Put {
                lease, ttl: true, ..
            } => Some(lease),
            _ => None,
        })
    }

    fn writes(&self) -> bool {
        self.ops
            .iter()
            .any(|p| matches!(p.kind, Kind::Put { .. } | Kind::Delete))
    }

    fn etcd_ops(&self) -> Vec<EtcdTxnOp> {
        self.ops.iter().map(etcd_op).collect()
    }
}

fn etcd_op(p: &Planned) -> EtcdTxnOp {
    match &p.kind {
        Kind::Put { value, lease, .. } => {
            let o = EtcdPutOptions::new().with_prev_key();
            let o = if *lease != 0 { o.with_lease(*lease) } else { o };
            EtcdTxnOp::put(p.full.clone(), value.to_vec(), Some(o))
        }
        Kind::Delete => {
            EtcdTxnOp::delete(p.full.clone(), Some(DeleteOptions::new().with_prev_key()))
        }
        Kind::Get => EtcdTxnOp::get(p.full.clone(), None),
    }
}

/// Runs a transaction on the store of `state`.
pub(crate) async fn run(state: &StoreState, txn: Txn) -> Result<TxnResponse> {
    state.closed.ensure_open()?;
    let txn = txn.validate(&state.capabilities)?;
    let layout = &state.layout;
    let client = &state.client;

    // The compares, and the distinct compared keys the failure branch
    // reads (in order of first appearance).
    let mut compares = Vec::with_capacity(txn.compares.len());
    // Each read key, and whether a compare needs its value (else only
    // its revision is read).
    let mut read_keys: Vec<(String, bool)> = Vec::new();
    let mut key_index: Vec<usize> = Vec::with_capacity(txn.compares.len());
    let mut size = 0;
    for c in &txn.compares {
        let full = layout.key(c.key())?.full;
        size += full.len() + OP_OVERHEAD;
        match c {
            Compare::Revision { revision, .. } => {
                compares.extend(compare_at_revision(&full, *revision))
            }
            Compare::Absent { .. } => {
                compares.push(EtcdCompare::create_revision(
                    full.clone(),
                    CompareOp::Equal,
                    0,
                ));
            }
            Compare::Present { .. } => {
                compares.push(EtcdCompare::create_revision(
                    full.clone(),
                    CompareOp::Greater,
                    0,
                ));
            }
            Compare::Value { value, .. } => {
                size += value.len();
                compares.push(EtcdCompare::value(
                    full.clone(),
                    CompareOp::Equal,
                    value.to_vec(),
                ));
            }
        }
        let needs_value = matches!(c, Compare::Value { .. });
        let i = match read_keys.iter().position(|(k, _)| *k == full) {
            Some(i) => i,
            None => {
                size += full.len() + OP_OVERHEAD;
                read_keys.push((full, false));
                read_keys.len() - 1
            }
        };
        if let Some(k) = read_keys.get_mut(i) {
            k.1 |= needs_value;
        }
        key_index.push(i);
    }

    let mut branches = Vec::with_capacity(2);
    for ops in [&txn.success, &txn.failure] {
        let mut planned = Vec::with_capacity(ops.len());
        for op in ops {
            let names = layout.key(op.key())?;
            size += names.full.len() + OP_OVERHEAD;
            let kind = match op {
                TxnOp::Put { value, options, .. } => {
                    size += value.len() + OP_OVERHEAD;
                    let user_lease = options.lease.map(|l| l.0);
                    Kind::Put {
                        value: value.clone(),
                        lease: user_lease.map_or(0, etcd_lease),
                        user_lease,
                        ttl: options.lease.is_none() && options.ttl.is_some(),
                    }
                }
                TxnOp::Delete { .. } => Kind::Delete,
                TxnOp::Get { .. } => Kind::Get,
            };
            planned.push(Planned {
                canonical: names.canonical,
                full: names.full,
                kind,
            });
        }
        branches.push(Branch {
            ops: planned,
            markers: Vec::new(),
        });
    }
    if size > MAX_TXN_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the transaction is about {size} bytes, over etcd's request limit of 1.5 MiB"
        )));
    }

    // A lease per TTL put, in both branches, before anything is sent.
    grant_ttl_leases(state, &txn, &mut branches).await?;
    let granted: Vec<i64> = branches.iter().flat_map(Branch::ttl_leases).collect();

    let [success, failure] = <[Branch; 2]>::try_from(branches)
        .map_err(|_| internal("a transaction has two branches"))?;
    let mut success_ops = success.etcd_ops();
    success_ops.extend(success.markers.iter().cloned());
    let mut failure_ops: Vec<EtcdTxnOp> = read_keys
        .iter()
        .map(|(k, needs_value)| {
            let o = (!needs_value).then(|| GetOptions::new().with_keys_only());
            EtcdTxnOp::get(k.clone(), o)
        })
        .collect();
    failure_ops.extend(failure.etcd_ops());
    // The server's limit per branch, as the configuration assumes it.
    let server_max_ops = state.config.max_txn_ops.saturating_mul(2);
    if failure_ops.len() + failure.markers.len() <= server_max_ops {
        failure_ops.extend(failure.markers.iter().cloned());
    } else if let Err(e) = write_markers(state, failure.markers.clone()).await {
        revoke_all(state, &granted, &e);
        return Err(e);
    }
    let etcd_txn = EtcdTxn::new()
        .when(compares)
        .and_then(success_ops)
        .or_else(failure_ops);

    let sent = if success.writes() || failure.writes() {
        client
            .send("txn", |c| {
                let (mut kv, t) = (c.kv(), etcd_txn.clone());
                async move { kv.txn(t).await }
            })
            .await
    } else {
        client
            .read("txn", |c| {
                let (mut kv, t) = (c.kv(), etcd_txn.clone());
                async move { kv.txn(t).await }
            })
            .await
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let e = match e {
                Error::LeaseLost { .. } => Error::LeaseLost {
                    backend: BACKEND,
                    lease: lost_lease(state, [&success, &failure]).await,
                },
                e => e,
            };
            revoke_all(state, &granted, &e);
            return Err(e);
        }
    };

    let succeeded = resp.succeeded();
    let (ran, other) = if succeeded {
        (&success, &failure)
    } else {
        (&failure, &success)
    };
    // The leases granted for the branch that did not run bind nothing.
    for id in other.ttl_leases() {
        lease::revoke_in_background(client, id, false);
    }
    let mut replies = op_responses(&resp)?.into_iter();
    let failed_compare = if succeeded {
        None
    } else {
        let mut current: Vec<Option<(Vec<u8>, u64)>> = Vec::with_capacity(read_keys.len());
        for _ in &read_keys {
            match replies.next() {
                Some(TxnOpResponse::Get(mut g)) => {
                    current.push(g.take_kvs().into_iter().next().map(|kv| {
                        let r = revision(kv.mod_revision());
                        (kv.into_key_value().1, r)
                    }))
                }
                _ => return Err(unexpected_reply()),
            }
        }
        let failed = txn.compares.iter().zip(&key_index).position(|(c, i)| {
            let state = current.get(*i).and_then(|s| s.as_ref());
            !c.holds(state.map(|(v, r)| (v.as_slice(), *r)))
        });
        // The server found a compare that failed; its own reads agree
        // (never seen otherwise): report the first one.
        Some(failed.unwrap_or(0))
    };
    let rev = || header_revision(resp.header()).map(revision);
    let mut results = Vec::with_capacity(ran.ops.len());
    let mut wrote = false;
    for planned in &ran.ops {
        let result = match (&planned.kind, replies.next()) {
            (Kind::Put { lease, .. }, Some(TxnOpResponse::Put(p))) => {
                wrote = true;
                if let Some(prev) = p.prev_key() {
                    retire_ttl_lease(client, prev.lease(), *lease);
                }
                TxnOpResult::Put { revision: rev()? }
            }
            (Kind::Delete, Some(TxnOpResponse::Delete(d))) => {
                for prev in d.prev_kvs() {
                    retire_ttl_lease(client, prev.lease(), 0);
                }
                let existed = d.deleted() > 0;
                wrote |= existed;
                TxnOpResult::Delete { existed }
            }
            (Kind::Get, Some(TxnOpResponse::Get(mut g))) => {
                TxnOpResult::Get(g.take_kvs().into_iter().next().map(|kv| {
                    let revision = revision(kv.mod_revision());
                    KvPair::new(planned.canonical.clone(), kv.into_key_value().1, revision)
                }))
            }
            _ => return Err(unexpected_reply()),
        };
        results.push(result);
    }
    let revision = if wrote { Some(rev()?) } else { None };
    Ok(TxnResponse::new(
        succeeded,
        failed_compare,
        results,
        revision,
    ))
}

/// Grants the lease of every TTL put of both branches (at once) and
/// prepares its marker; on an error, revokes the leases granted.
async fn grant_ttl_leases(state: &StoreState, txn: &Txn, branches: &mut [Branch]) -> Result<()> {
    let mut wanted = Vec::new();
    for (b, ops) in [&txn.success, &txn.failure].into_iter().enumerate() {
        for (i, op) in ops.iter().enumerate() {
            if let TxnOp::Put {
                options:
                    anykv_core::PutOptions {
                        ttl: Some(ttl),
                        lease: None,
                        ..
                    },
                ..
            } = op
            {
                wanted.push((b, i, *ttl));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let grants = futures::future::join_all(
        wanted
            .iter()
            .map(|(_, _, ttl)| grant_for_ttl_put(&state.client, *ttl)),
    )
    .await;
    let mut first_error = None;
    let mut granted = Vec::new();
    for ((b, i, _), g) in wanted.into_iter().zip(grants) {
        match g {
            Ok((id, marker)) => {
                granted.push(id);
                let branch = branches
                    .get_mut(b)
                    .ok_or_else(|| internal("a transaction has two branches"))?;
                if let Some(Planned {
                    kind: Kind::Put { lease, .. },
                    ..
                }) = branch.ops.get_mut(i)
                {
                    *lease = id;
                }
                branch.markers.push(marker);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => {
            for id in granted {
                lease::revoke_in_background(&state.client, id, false);
            }
            Err(e)
        }
    }
}

/// Writes TTL markers ahead of the transaction, in one etcd transaction.
async fn write_markers(state: &StoreState, markers: Vec<EtcdTxnOp>) -> Result<()> {
    if markers.is_empty() {
        return Ok(());
    }
    let t = EtcdTxn::new().and_then(markers);
    state
        .client
        .send("txn", |c| {
            let (mut kv, t) = (c.kv(), t.clone());
            async move { kv.txn(t).await }
        })
        .await
        .map(|_| ())
}

/// After a transaction failed with `e`: revokes the TTL leases granted for
/// it when it certainly was not applied. When its outcome is unknown they
/// stay (their keys may have been written) and expire with their TTL.
fn revoke_all(state: &StoreState, granted: &[i64], e: &Error) {
    if matches!(e, Error::Timeout { .. } | Error::Unavailable { .. }) {
        return;
    }
    for id in granted {
        lease::revoke_in_background(&state.client, *id, false);
    }
}

/// The user's lease that etcd no longer has, of those the branches'
/// puts name (etcd does not say which); the first one named when none is
/// found gone.
async fn lost_lease(state: &StoreState, branches: [&Branch; 2]) -> u64 {
    let mut leases: Vec<(i64, u64)> = Vec::new();
    for b in branches {
        for p in &b.ops {
            if let Kind::Put {
                lease,
                user_lease: Some(user),
                ..
            } = p.kind
            {
                if !leases.iter().any(|(_, u)| *u == user) {
                    leases.push((lease, user));
                }
            }
        }
    }
    if let [(_, only)] = leases.as_slice() {
        return *only;
    }
    for (id, user) in &leases {
        if *id < 0 {
            return *user;
        }
        let id = *id;
        let ttl = state
            .client
            .read("txn", |c| {
                let mut leases = c.leases();
                async move { leases.time_to_live(id, None).await }
            })
            .await;
        match ttl {
            Ok(r) if r.ttl() >= 0 => {}
            Ok(_) | Err(Error::LeaseLost { .. }) => return *user,
            Err(_) => {}
        }
    }
    leases.first().map_or(0, |(_, user)| *user)
}

/// The etcd lease id of a user's lease: -1 (which etcd never has) for an
/// id etcd cannot have granted.
pub(crate) fn etcd_lease(id: u64) -> i64 {
    match i64::try_from(id) {
        Ok(l) if l > 0 => l,
        _ => -1,
    }
}

fn unexpected_reply() -> Error {
    Error::Backend {
        backend: BACKEND,
        message: "txn: the server's reply does not match the transaction's operations".into(),
        source: None,
    }
}

fn internal(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("txn: {what}"),
        source: None,
    }
}

/// The comparisons of a write that expects `key` at revision `rev`. An
/// absent key compares as mod revision 0, so for a revision above 0 the
/// one comparison also proves the key exists (etcd reads the key once per
/// comparison); revision 0 also needs the key to exist.
pub(crate) fn compare_at_revision(key: &str, rev: u64) -> Vec<etcd_client::Compare> {
    match i64::try_from(rev) {
        Ok(r) if r > 0 => vec![etcd_client::Compare::mod_revision(
            key,
            etcd_client::CompareOp::Equal,
            r,
        )],
        _ => vec![
            etcd_client::Compare::create_revision(key, etcd_client::CompareOp::Greater, 0),
            etcd_client::Compare::mod_revision(
                key,
                etcd_client::CompareOp::Equal,
                i64::try_from(rev).unwrap_or(i64::MAX),
            ),
        ],
    }
}
