//! Transactions: one ZooKeeper `multi`, so every write of a transaction
//! has the multi's zxid as its revision.
//!
//! A `multi` can neither read nor test that a node is absent, so a
//! transaction runs in two steps. First it reads every key it compares and
//! every key of the branches (each key's node and value node, in multi-read
//! requests), evaluates the compares locally (a key's revision is its value
//! node's `mzxid`) and picks the branch. Then it sends one `multi` that
//! starts with *proofs* that those reads still hold, followed by the
//! branch's writes:
//!
//! - a node read present: a `check` of its version (the key's node, whose
//!   version counts every re-creation of the value node, and the value
//!   node, whose version counts its in-place updates);
//! - a key whose node exists but whose value node does not: the `check` of
//!   the key node's version (every write that creates a value node sets
//!   the key node's data, so its version moves);
//! - a key whose node is absent: the create and delete of the first
//!   missing node on its path, which fails if that node exists (or if the
//!   deepest node read present is gone); skipped when the branch's own
//!   writes create that node anyway, which proves the same.
//!
//! If a proof (or a write's own version) fails, nothing was applied: the
//! transaction reads again, behind a `sync`, and retries, within the
//! request timeout (then `Timeout`). The writes are made as `put` and
//! `delete` make them: missing parents created as containers (open above
//! the root, the store's ACLs at and under it), the key node's data set
//! with every re-creation of the value node (`t` for a TTL node, `d` for a
//! delete, so its `mzxid` is the delete's zxid), a plain value updated in
//! place. Every write has a `set_data`, whose reply carries the multi's
//! zxid: the transaction's revision. A branch that writes nothing still
//! sends its proofs (a multi of checks), so its gets and compares are one
//! consistent read at one point of the store's history.
//!
//! Leased puts are ephemeral nodes of the lease's session, so the `multi`
//! is sent on that session; the leases of one transaction must therefore
//! share a session (leases of one granted TTL do), else the transaction is
//! `Unsupported`. A lease that is gone fails the transaction with
//! `LeaseLost` before anything is sent.
//!
//! A `multi` is one request, bounded by the server's `jute.maxbuffer` (1 MiB
//! by default, the connection is dropped beyond it): a branch whose values
//! total more than [`MAX_MULTI_BYTES`], or whose `multi` (values, paths,
//! proofs and parents) would, is refused with `InvalidArgument` before it
//! is sent.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anykv_core::txn::first_failed_compare;
use anykv_core::{Bytes, Error, KvPair, Result, Txn, TxnOp, TxnOpResult, TxnResponse};
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::client::{map_err, random_token, unexpected_reply};
use crate::config::BACKEND;
use crate::layout::{child, is_ancestor, DELETED_FLAG, TTL_FLAG, VALUE};
use crate::lease::delete_leased;
use crate::state::{LeaseEntry, Mode, StoreState, PRESENT_KEYS};

/// The largest `multi` a transaction sends, as estimated from its
/// operations (values, paths, ACLs and framing): under ZooKeeper's default
/// `jute.maxbuffer` of 1,048,575 bytes, with room for what the estimate
/// leaves out. A branch whose values alone total more is refused before
/// anything is read.
pub const MAX_MULTI_BYTES: usize = 1_040_000;

/// How many nodes one multi-read covers.
const READ_BATCH: usize = 64;

/// What one operation of a `multi` adds to the request beyond its path and
/// data, generously: its header, lengths, version, flags, TTL and one ACL.
const OP_OVERHEAD: usize = 160;

/// The request's own framing (length, header, the closing multi header).
const MULTI_OVERHEAD: usize = 64;

/// What the transaction read of one key.
struct KeyState {
    /// The key's node.
    dir: String,
    /// The key's value node.
    vpath: String,
    /// The key's node: its data and stat.
    node: Option<(Vec<u8>, zk::Stat)>,
    /// The value node: the value and its stat; `None` when it is absent
    /// (or the key's node is).
    value: Option<(Bytes, zk::Stat)>,
    /// When the key's node is absent: the missing nodes down to it,
    /// top-down, the key's node last; the parent of the first was read
    /// present.
    missing: Vec<String>,
}

impl KeyState {
    /// The key's value and revision, `None` when absent.
    fn current(&self) -> Option<(&[u8], u64)> {
        self.value
            .as_ref()
            .map(|(v, st)| (v.as_ref(), st.mzxid as u64))
    }
}

/// How a transaction's put makes a value node.
#[derive(Clone, Copy)]
enum ValueKind {
    Persistent,
    Ttl(Duration),
    Ephemeral,
}

/// One operation of the `multi`.
enum NodeOp {
    /// The node is at this version.
    Check { path: String, version: i32 },
    /// Creates a container node with no data; `open`: above the root.
    Dir { path: String, open: bool },
    /// Creates a value node.
    Value {
        path: String,
        value: Bytes,
        kind: ValueKind,
    },
    /// Sets a node's data (at a version, if given).
    SetData {
        path: String,
        data: Bytes,
        version: Option<i32>,
    },
    /// Deletes a node (at a version, if given).
    Delete { path: String, version: Option<i32> },
}

impl NodeOp {
    /// A generous estimate of the operation's size in the request.
    fn size(&self) -> usize {
        OP_OVERHEAD
            + match self {
                NodeOp::Check { path, .. }
                | NodeOp::Dir { path, .. }
                | NodeOp::Delete { path, .. } => path.len(),
                NodeOp::Value { path, value, .. } => path.len() + value.len(),
                NodeOp::SetData { path, data, .. } => path.len() + data.len(),
            }
    }
}

/// What an operation of the branch gives, once the `multi` succeeded.
enum Pending {
    Put,
    Delete { existed: bool },
    Get(Option<KvPair>),
}

/// The `multi` of one attempt: proofs, then the branch's writes.
struct Plan {
    ops: Vec<NodeOp>,
    /// How many of `ops` are proofs; the rest are the writes.
    proofs: usize,
    results: Vec<Pending>,
    /// Leased puts: the lease, the value node, the key node and the index
    /// (in `ops`) of the `set_data` of the key node.
    leased: Vec<(Arc<LeaseEntry>, String, String, usize)>,
    /// Keys written: put (true) or deleted (false).
    written: Vec<(String, bool)>,
}

/// Runs a transaction (already validated, keys canonical).
pub(crate) async fn run(
    state: &StoreState,
    txn: Txn,
    modes: impl Fn(&str, &Bytes, &anykv_core::PutOptions) -> Result<Mode>,
) -> Result<TxnResponse> {
    for (name, branch) in [("success", &txn.success), ("failure", &txn.failure)] {
        let total: usize = branch
            .iter()
            .map(|op| match op {
                TxnOp::Put { value, .. } => value.len(),
                _ => 0,
            })
            .sum();
        if total > MAX_MULTI_BYTES {
            return Err(too_large(name, total));
        }
    }
    let client = &state.client;
    let limit = client.request_timeout();
    let deadline = Instant::now() + limit;
    let mut keys: BTreeSet<String> = txn.compares.iter().map(|c| c.key().to_owned()).collect();
    keys.extend(txn.success.iter().map(|op| op.key().to_owned()));
    if !txn.compares.is_empty() {
        keys.extend(txn.failure.iter().map(|op| op.key().to_owned()));
    }
    let keys: Vec<String> = keys.into_iter().collect();
    let mut attempt: u32 = 0;
    loop {
        if attempt > 0 {
            // Someone wrote in between: back off a little (more under
            // contention), then read again behind a sync.
            let cap = 1u64 << attempt.min(5);
            let pause = Duration::from_millis(random_token() % cap);
            if Instant::now() + pause >= deadline {
                return Err(timed_out(limit));
            }
            tokio::time::sleep(pause).await;
        }
        let synced = attempt > 0;
        attempt = attempt.saturating_add(1);
        let keys = &keys;
        let reads = if synced {
            timed(
                deadline,
                limit,
                client.after_sync(|s| async move { read_keys(state, &s, keys, deadline).await }),
            )
            .await?
        } else {
            let session = client.session().await?;
            read_keys(state, &session, keys, deadline).await?
        };
        let failed =
            first_failed_compare(&txn.compares, |k| reads.get(k).and_then(|r| r.current()));
        let branch = if failed.is_none() {
            &txn.success
        } else {
            &txn.failure
        };
        let branch_name = if failed.is_none() {
            "success"
        } else {
            "failure"
        };
        // The modes first: a lease that is gone fails the transaction
        // before anything is sent.
        let mut op_modes = Vec::with_capacity(branch.len());
        for op in branch {
            op_modes.push(match op {
                TxnOp::Put {
                    key,
                    value,
                    options,
                } => Some(modes(key, value, options)?),
                _ => None,
            });
        }
        let plan = plan(state, &txn, branch, &op_modes, &reads)?;
        let bytes = MULTI_OVERHEAD + plan.ops.iter().map(NodeOp::size).sum::<usize>();
        if bytes > MAX_MULTI_BYTES {
            return Err(too_large(branch_name, bytes));
        }
        // The session that sends the multi: the leases' (their value nodes
        // are its ephemeral nodes), or the store's.
        let mut lease: Option<&Arc<LeaseEntry>> = None;
        for m in op_modes.iter().flatten() {
            if let Mode::Lease(l) = m {
                match lease {
                    Some(first) if !Arc::ptr_eq(&first.session, &l.session) => {
                        return Err(Error::unsupported(
                            BACKEND,
                            "txn with leases of different TTLs",
                            "a ZooKeeper transaction is one multi on one session, and a \
                             lease's keys are ephemeral nodes of its own session: the \
                             leased puts of one transaction must use leases that share a \
                             session (leases granted the same TTL do)",
                        ));
                    }
                    Some(_) => {}
                    None => lease = Some(l),
                }
            }
        }
        let writer = match lease {
            Some(l) => l.session.session().ok_or(Error::LeaseLost {
                backend: BACKEND,
                lease: l.id,
            })?,
            None => client.session().await?,
        };
        match commit(state, &writer, &plan, deadline).await? {
            Ok(results) => {
                return finish(state, plan, results, failed, lease.map(|l| l.id)).await;
            }
            Err((index, e)) => match e {
                // A proof or a write's version no longer holds: nothing
                // was applied; read again.
                zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists => {}
                e => return Err(commit_err(e, index.and_then(|i| plan.ops.get(i)), lease)),
            },
        }
    }
}

/// The error of a `multi` the server refused for good.
fn commit_err(e: zk::Error, op: Option<&NodeOp>, lease: Option<&Arc<LeaseEntry>>) -> Error {
    match (e, op, lease) {
        (zk::Error::SessionExpired | zk::Error::ClientClosed, _, Some(l)) => Error::LeaseLost {
            backend: BACKEND,
            lease: l.id,
        },
        (
            e @ zk::Error::Unimplemented,
            Some(NodeOp::Value {
                kind: ValueKind::Ttl(_),
                path,
                ..
            }),
            _,
        ) => map_err(e, &format!("put with a TTL ({path}) in a txn")),
        (e, _, _) => map_err(e, "txn"),
    }
}

/// Sends the plan's `multi`: its results, or the index of the operation
/// that failed (if the server said) and why.
#[allow(clippy::type_complexity)]
async fn commit(
    state: &StoreState,
    writer: &zk::Client,
    plan: &Plan,
    deadline: Instant,
) -> Result<std::result::Result<Vec<zk::MultiWriteResult>, (Option<usize>, zk::Error)>> {
    let store_acls = state.client.acls();
    let mut multi = writer.new_multi_writer();
    for (i, op) in plan.ops.iter().enumerate() {
        let added = match op {
            NodeOp::Check { path, version } => multi.add_check_version(path, *version),
            NodeOp::Dir { path, open } => {
                let acls = if *open {
                    zk::Acls::anyone_all()
                } else {
                    store_acls
                };
                multi.add_create(path, b"", &zk::CreateMode::Container.with_acls(acls))
            }
            NodeOp::Value { path, value, kind } => {
                let opts = match kind {
                    ValueKind::Persistent => zk::CreateMode::Persistent.with_acls(store_acls),
                    ValueKind::Ttl(ttl) => zk::CreateMode::Persistent
                        .with_acls(store_acls)
                        .with_ttl(*ttl),
                    ValueKind::Ephemeral => zk::CreateMode::Ephemeral.with_acls(store_acls),
                };
                multi.add_create(path, value, &opts)
            }
            NodeOp::SetData {
                path,
                data,
                version,
            } => multi.add_set_data(path, data, *version),
            NodeOp::Delete { path, version } => multi.add_delete(path, *version),
        };
        if let Err(e) = added {
            return Ok(Err((Some(i), e)));
        }
    }
    let limit = state.client.request_timeout();
    let reply = timed(deadline, limit, async { Ok(multi.commit().await) }).await?;
    Ok(match reply {
        Ok(results) => Ok(results),
        Err(zk::MultiWriteError::OperationFailed { index, source }) => Err((Some(index), source)),
        Err(zk::MultiWriteError::RequestFailed { source }) => Err((None, source)),
    })
}

/// The response of a `multi` that succeeded; notes leased value nodes on
/// their lease and keys written in the store's hints.
async fn finish(
    state: &StoreState,
    plan: Plan,
    results: Vec<zk::MultiWriteResult>,
    failed: Option<usize>,
    lease_id: Option<u64>,
) -> Result<TxnResponse> {
    if results.len() != plan.ops.len() {
        return Err(map_err(
            zk::Error::UnexpectedError(format!(
                "a multi of {} operations answered {} results",
                plan.ops.len(),
                results.len()
            )),
            "txn",
        ));
    }
    let stat_at = |i: usize| match results.get(i) {
        Some(zk::MultiWriteResult::SetData { stat }) => Some(*stat),
        _ => None,
    };
    let revision = if plan.ops.len() > plan.proofs {
        let rev = (plan.proofs..plan.ops.len()).find_map(stat_at);
        match rev {
            Some(st) => Some(st.mzxid as u64),
            None => {
                return Err(map_err(
                    zk::Error::UnexpectedError("a multi without its set_data result".into()),
                    "txn",
                ))
            }
        }
    } else {
        None
    };
    {
        let mut present = state.present_keys.lock();
        for (k, put) in &plan.written {
            if !*put {
                present.remove(k);
            } else if !present.contains(k) {
                if present.len() >= PRESENT_KEYS {
                    present.clear();
                }
                present.insert(k.clone());
            }
        }
    }
    // A lease revoked while the multi was on its way missed these nodes:
    // delete them again and report the lease lost.
    let mut lost = false;
    for (l, vpath, dir, i) in &plan.leased {
        let version = stat_at(*i).map_or(-1, |st| st.version);
        lost |= !l.record(vpath, dir, version);
    }
    if lost {
        let limit = state.client.request_timeout();
        for (l, vpath, dir, i) in &plan.leased {
            if let (Some(session), Some(st)) = (l.session.session(), stat_at(*i)) {
                delete_leased(&session, limit, vpath, dir, st.version).await;
            }
        }
        let mut present = state.present_keys.lock();
        for (k, _) in &plan.written {
            present.remove(k);
        }
        return Err(Error::LeaseLost {
            backend: BACKEND,
            lease: lease_id.unwrap_or_default(),
        });
    }
    let results = plan
        .results
        .into_iter()
        .map(|p| match p {
            Pending::Put => TxnOpResult::Put {
                revision: revision.unwrap_or_default(),
            },
            Pending::Delete { existed } => TxnOpResult::Delete { existed },
            Pending::Get(pair) => TxnOpResult::Get(pair),
        })
        .collect();
    Ok(TxnResponse::new(
        failed.is_none(),
        failed,
        results,
        revision,
    ))
}

/// The `multi` for `branch` given what was read: the proofs of every read
/// the outcome depends on (the compared keys and the branch's), then the
/// branch's writes.
fn plan(
    state: &StoreState,
    txn: &Txn,
    branch: &[TxnOp],
    modes: &[Option<Mode>],
    reads: &HashMap<String, KeyState>,
) -> Result<Plan> {
    let root = state.client.layout().root_path();
    let missing_read = |k: &str| {
        map_err(
            zk::Error::UnexpectedError(format!("the key {k:?} was not read")),
            "txn",
        )
    };
    let mut writes = Vec::new();
    let mut created: HashSet<String> = HashSet::new();
    let mut results = Vec::with_capacity(branch.len());
    let mut leased = Vec::new();
    let mut written = Vec::new();
    for (op, mode) in branch.iter().zip(modes) {
        let r = reads.get(op.key()).ok_or_else(|| missing_read(op.key()))?;
        match (op, mode) {
            (TxnOp::Get { key }, _) => {
                results.push(Pending::Get(
                    r.value
                        .as_ref()
                        .map(|(v, st)| KvPair::new(key.clone(), v.clone(), st.mzxid as u64)),
                ));
            }
            (TxnOp::Delete { key }, _) => {
                let existed = match (&r.node, &r.value) {
                    (Some((_, dst)), Some((_, vst))) => {
                        writes.push(NodeOp::SetData {
                            path: r.dir.clone(),
                            data: Bytes::from_static(DELETED_FLAG),
                            version: Some(dst.version),
                        });
                        writes.push(NodeOp::Delete {
                            path: r.vpath.clone(),
                            version: Some(vst.version),
                        });
                        written.push((key.clone(), false));
                        true
                    }
                    _ => false,
                };
                results.push(Pending::Delete { existed });
            }
            (TxnOp::Put { key, value, .. }, Some(mode)) => {
                let (kind, flag): (ValueKind, &'static [u8]) = match mode {
                    Mode::Plain => (ValueKind::Persistent, b""),
                    Mode::Ttl(ttl) => (ValueKind::Ttl(*ttl), TTL_FLAG),
                    Mode::Lease(_) => (ValueKind::Ephemeral, b""),
                };
                let set_at;
                match &r.node {
                    Some((data, dst)) => {
                        let in_place = matches!(mode, Mode::Plain)
                            && data.is_empty()
                            && r.value
                                .as_ref()
                                .is_some_and(|(_, st)| st.ephemeral_owner == 0);
                        match &r.value {
                            Some((_, vst)) if in_place => {
                                set_at = writes.len();
                                writes.push(NodeOp::SetData {
                                    path: r.vpath.clone(),
                                    data: value.clone(),
                                    version: Some(vst.version),
                                });
                            }
                            current => {
                                set_at = writes.len();
                                writes.push(NodeOp::SetData {
                                    path: r.dir.clone(),
                                    data: Bytes::from_static(flag),
                                    version: Some(dst.version),
                                });
                                if let Some((_, vst)) = current {
                                    writes.push(NodeOp::Delete {
                                        path: r.vpath.clone(),
                                        version: Some(vst.version),
                                    });
                                }
                                writes.push(NodeOp::Value {
                                    path: r.vpath.clone(),
                                    value: value.clone(),
                                    kind,
                                });
                            }
                        }
                    }
                    None => {
                        for n in &r.missing {
                            if created.insert(n.clone()) {
                                writes.push(NodeOp::Dir {
                                    path: n.clone(),
                                    open: n.len() < root.len() && is_ancestor(n, root),
                                });
                            }
                        }
                        set_at = writes.len();
                        writes.push(NodeOp::SetData {
                            path: r.dir.clone(),
                            data: Bytes::from_static(flag),
                            version: None,
                        });
                        writes.push(NodeOp::Value {
                            path: r.vpath.clone(),
                            value: value.clone(),
                            kind,
                        });
                    }
                }
                if let Mode::Lease(l) = mode {
                    leased.push((l.clone(), r.vpath.clone(), r.dir.clone(), set_at));
                }
                written.push((key.clone(), true));
                results.push(Pending::Put);
            }
            (TxnOp::Put { key, .. }, None) => return Err(missing_read(key)),
        }
    }
    // The proofs: of every key the compares name and of the branch's.
    let mut ops = Vec::new();
    let mut proved: HashSet<String> = HashSet::new();
    let compared = txn.compares.iter().map(|c| c.key());
    for k in compared.chain(branch.iter().map(|op| op.key())) {
        let r = reads.get(k).ok_or_else(|| missing_read(k))?;
        match &r.node {
            Some((_, dst)) => {
                if proved.insert(r.dir.clone()) {
                    ops.push(NodeOp::Check {
                        path: r.dir.clone(),
                        version: dst.version,
                    });
                }
                if let Some((_, vst)) = &r.value {
                    if proved.insert(r.vpath.clone()) {
                        ops.push(NodeOp::Check {
                            path: r.vpath.clone(),
                            version: vst.version,
                        });
                    }
                }
            }
            None => {
                let Some(first) = r.missing.first() else {
                    return Err(missing_read(k));
                };
                if !created.contains(first) && proved.insert(first.clone()) {
                    ops.push(NodeOp::Dir {
                        path: first.clone(),
                        open: first.len() < root.len() && is_ancestor(first, root),
                    });
                    ops.push(NodeOp::Delete {
                        path: first.clone(),
                        version: None,
                    });
                }
            }
        }
    }
    let proofs = ops.len();
    ops.extend(writes);
    // Offsets of the leased `set_data`s, now that the proofs come first.
    for l in &mut leased {
        l.3 += proofs;
    }
    Ok(Plan {
        ops,
        proofs,
        results,
        leased,
        written,
    })
}

/// Reads every key's node and value node, then, for keys whose node is
/// absent, the nodes above it, to know which are missing.
async fn read_keys(
    state: &StoreState,
    session: &zk::Client,
    keys: &[String],
    deadline: Instant,
) -> Result<HashMap<String, KeyState>> {
    let layout = state.client.layout();
    let mut paths = Vec::with_capacity(2 * keys.len());
    for k in keys {
        let dir = layout.key_dir(k);
        paths.push(child(&dir, VALUE));
        paths.push(dir);
    }
    let nodes = read_paths(state, session, &paths, deadline).await?;
    let mut out = HashMap::with_capacity(keys.len());
    let mut nodes = nodes.into_iter();
    let mut paths = paths.into_iter();
    let mut above: BTreeSet<String> = BTreeSet::new();
    for k in keys {
        let (Some(vpath), Some(dir), Some(value), Some(node)) =
            (paths.next(), paths.next(), nodes.next(), nodes.next())
        else {
            return Err(map_err(unexpected_reply(None), "txn: reading the keys"));
        };
        // The value node counts as absent when the key's node is.
        let value = match (&node, value) {
            (Some(_), Some((data, st))) => Some((Bytes::from(data), st)),
            _ => None,
        };
        if node.is_none() {
            above.extend(ancestors(&dir).map(str::to_owned));
        }
        out.insert(
            k.clone(),
            KeyState {
                dir,
                vpath,
                node,
                value,
                missing: Vec::new(),
            },
        );
    }
    if above.is_empty() {
        return Ok(out);
    }
    let above: Vec<String> = above.into_iter().collect();
    let present: HashSet<&str> = above
        .iter()
        .zip(read_paths(state, session, &above, deadline).await?)
        .filter(|(_, n)| n.is_some())
        .map(|(p, _)| p.as_str())
        .collect();
    for r in out.values_mut() {
        if r.node.is_some() {
            continue;
        }
        let chain: Vec<&str> = ancestors(&r.dir).chain([r.dir.as_str()]).collect();
        // Below the deepest node read present (`/` always is).
        let start = chain
            .iter()
            .rposition(|p| present.contains(p))
            .map_or(0, |i| i + 1);
        r.missing = chain[start..].iter().map(|p| (*p).to_owned()).collect();
    }
    Ok(out)
}

/// The strict ancestors of a znode path, top-down, `/` left out.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .filter(|(i, c)| *c == '/' && *i > 0)
        .map(move |(i, _)| &path[..i])
}

/// Reads nodes (data and stat, `None` when absent) in multi-read
/// requests sent together.
async fn read_paths(
    state: &StoreState,
    session: &zk::Client,
    paths: &[String],
    deadline: Instant,
) -> Result<Vec<Option<(Vec<u8>, zk::Stat)>>> {
    let what = "txn: reading the keys";
    let failed = |e: zk::Error| map_err(e, what);
    let replies = futures::future::join_all(paths.chunks(READ_BATCH).map(|chunk| {
        let mut reader = session.new_multi_reader();
        let built = chunk.iter().try_for_each(|p| reader.add_get_data(p));
        let commit = built.map(|()| reader.commit());
        async move {
            match commit {
                Ok(commit) => commit.await,
                Err(e) => Err(e),
            }
        }
    }));
    let limit = state.client.request_timeout();
    let replies = timed(deadline, limit, async { Ok(replies.await) }).await?;
    let mut out = Vec::with_capacity(paths.len());
    for (chunk, reply) in paths.chunks(READ_BATCH).zip(replies) {
        let results = reply.map_err(failed)?;
        if results.len() != chunk.len() {
            return Err(failed(zk::Error::UnexpectedError(format!(
                "a multi-read of {} operations answered {}",
                chunk.len(),
                results.len()
            ))));
        }
        for r in results {
            out.push(match r {
                zk::MultiReadResult::Data { data, stat } => Some((data, stat)),
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => None,
                zk::MultiReadResult::Error { err } => return Err(failed(err)),
                other => return Err(failed(unexpected_reply(Some(other)))),
            });
        }
    }
    Ok(out)
}

/// Runs `fut` until `deadline`; running out is `Timeout` (naming the
/// request timeout, the transaction's whole budget).
async fn timed<T>(
    deadline: Instant,
    limit: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(limit)),
    }
}

/// A transaction that ran out of its request timeout: if its `multi` was
/// sent, it may have been applied (wholly or not at all).
fn timed_out(limit: Duration) -> Error {
    Error::Timeout {
        backend: BACKEND,
        operation: "txn".into(),
        after: limit,
    }
}

/// A branch too large for one `multi`.
fn too_large(branch: &str, bytes: usize) -> Error {
    Error::InvalidArgument(format!(
        "the transaction's {branch} branch needs a ZooKeeper multi of about {bytes} bytes, \
         over the {MAX_MULTI_BYTES} bytes one request can hold (the server's jute.maxbuffer); \
         split it, or store smaller values"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_top_down() {
        assert_eq!(ancestors("/r/a/b").collect::<Vec<_>>(), ["/r", "/r/a"]);
        assert_eq!(ancestors("/r").count(), 0);
    }
}
