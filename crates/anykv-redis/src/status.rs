//! `Store::status`: what the servers behind a store say about themselves.
//!
//! The data server that serves the namespace (the one server, the primary
//! the Sentinels name, or the Cluster node that holds the namespace's
//! slot) is asked `INFO server`, `INFO replication` and the namespace's
//! revision counter (`GET {ns}:rev`, nothing is written) in one round
//! trip, within the request timeout; a Cluster node also `CLUSTER KEYSLOT`
//! and `CLUSTER SLOTS`, for the slot and the node's address. Sentinels are
//! asked `INFO server` at the same time, each within the same bound.
//!
//! A data server that does not answer fails the call (`Timeout` for one
//! that does not answer in time, `Unavailable` for one that cannot be
//! reached) unless Sentinels answered: then it is listed with its error.
//! A server whose ACL forbids `INFO` is listed without version and role.

use anykv_core::{Error, Result, ServerStatus, StoreStats, StoreStatus};
use redis::Value;

use crate::config::{Topology, BACKEND};
use crate::connection::LinkStatus;
use crate::errors::map_error;
use crate::reply::{as_array, as_bytes, as_u64};
use crate::state::StoreState;

/// The text of an `INFO` reply (a bulk or verbatim string).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::VerbatimString { text, .. } => Some(text.clone()),
        other => as_bytes(other).map(|b| String::from_utf8_lossy(&b).into_owned()),
    }
}

/// Field `name` of an `INFO` text (`name:value` lines).
fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k == name).then(|| v.to_owned())
    })
}

/// A reply of a pipeline sent with `ignore_errors`: the value, or the
/// server's error as anykv's.
fn reply(replies: &[Value], i: usize) -> Result<Value> {
    replies
        .get(i)
        .cloned()
        .unwrap_or(Value::Nil)
        .extract_error()
        .map_err(|e| map_error(e, "status"))
}

/// The role a server's `INFO replication` gives, in anykv's words.
fn role(replication: &str) -> Option<String> {
    field(replication, "role").map(|r| match r.as_str() {
        "master" => "primary".to_owned(),
        "slave" => "replica".to_owned(),
        _ => r,
    })
}

/// The address of the node that serves `slot`, from a `CLUSTER SLOTS`
/// reply (`[start, end, [host, port, id], replicas...]` per range).
fn slot_owner(slots: Value, slot: u64) -> Option<String> {
    as_array(slots)?.into_iter().find_map(|range| {
        let mut it = as_array(range)?.into_iter();
        let (start, end) = (as_u64(&it.next()?)?, as_u64(&it.next()?)?);
        if !(start..=end).contains(&slot) {
            return None;
        }
        let node = as_array(it.next()?)?;
        let host = as_bytes(node.first()?)?;
        let port = as_u64(node.get(1)?)?;
        Some(format!("{}:{port}", String::from_utf8_lossy(&host)))
    })
}

/// The store's status: see the module documentation.
pub(crate) async fn status(
    state: &StoreState,
    stats: impl Fn() -> StoreStats,
) -> Result<StoreStatus> {
    state.ensure_open()?;
    let config = &state.config;
    let LinkStatus {
        address,
        primary,
        sentinels,
        named_by,
    } = state.client.status().await;
    state.ensure_open()?;
    let mode = match &config.topology {
        Topology::Single => "standalone",
        Topology::Sentinel { .. } => "sentinel",
        Topology::Cluster { .. } => "cluster",
    };
    let mut details: Vec<(String, String)> = vec![
        ("mode".into(), mode.into()),
        ("db".into(), config.db.to_string()),
        ("namespace".into(), config.namespace.clone()),
    ];
    if !state.layout.root().is_empty() {
        details.push(("prefix".into(), state.layout.root().to_owned()));
    }
    let mut servers = Vec::new();
    let mut revision = None;
    match primary {
        Ok(replies) => {
            let mut version = None;
            let mut server_role = None;
            match reply(&replies, 0) {
                Ok(v) => {
                    let info = text(&v).unwrap_or_default();
                    version = field(&info, "redis_version");
                    if let Some(m) = field(&info, "redis_mode") {
                        details.push(("redis_mode".into(), m));
                    }
                }
                Err(e) => details.push(("info".into(), e.to_string())),
            }
            if let Ok(v) = reply(&replies, 1) {
                let info = text(&v).unwrap_or_default();
                server_role = role(&info);
                if let Some(n) = field(&info, "connected_slaves") {
                    details.push(("connected_replicas".into(), n));
                }
                if let Some(id) = field(&info, "master_replid") {
                    details.push(("master_replid".into(), id));
                }
            }
            revision = match reply(&replies, 2) {
                Ok(Value::Nil) => Some(0),
                Ok(v) => as_u64(&v),
                Err(_) => None,
            };
            let mut address = address;
            if let Topology::Cluster { .. } = config.topology {
                let slot = reply(&replies, 3).ok().and_then(|v| as_u64(&v));
                if let Some(slot) = slot {
                    details.push(("slot".into(), slot.to_string()));
                    address = reply(&replies, 4)
                        .ok()
                        .and_then(|v| slot_owner(v, slot))
                        .or(address);
                }
            }
            let address = address.unwrap_or_else(|| "unknown".to_owned());
            servers.push(ServerStatus::new(address, version, server_role));
        }
        Err(e) => {
            // Only Sentinels that answered make a status without the
            // data server worth returning.
            let any_sentinel = sentinels.iter().any(|(_, r)| r.is_ok());
            if !any_sentinel {
                return Err(e);
            }
            let address = match (&config.topology, address) {
                (_, Some(a)) => a,
                (Topology::Sentinel { master_name, .. }, None) => {
                    format!("{master_name} (primary)")
                }
                (_, None) => "unknown".to_owned(),
            };
            servers.push(ServerStatus::unreachable(address, e.to_string()));
        }
    }
    if let Some(sentinel) = named_by {
        details.push(("sentinel".into(), sentinel));
    }
    for (address, r) in sentinels {
        servers.push(match r {
            Ok(v) => {
                let info = text(&v).unwrap_or_default();
                ServerStatus::new(
                    address,
                    field(&info, "redis_version"),
                    Some("sentinel".to_owned()),
                )
            }
            Err(e) => ServerStatus::unreachable(address, e.to_string()),
        });
    }
    if servers.iter().all(|s| s.error.is_some()) {
        return Err(Error::Unavailable {
            backend: BACKEND,
            message: "status: no server answered".to_owned(),
            source: None,
        });
    }
    let mut status = StoreStatus::new(BACKEND, revision, stats());
    status.servers = servers;
    status.details = details;
    Ok(status)
}
