//! Node operations every part of the store shares: creating a key's
//! parents, listing a tree in multi-reads, and deleting a value node
//! together with its key node's delete mark.

use anykv_core::{KvPair, Result};
use futures::FutureExt;
use zookeeper_client as zk;

use crate::client::{map_err, multi_err, unexpected_reply, with_deadline, ZkClient};
use crate::layout::{child, is_ancestor, unescape_segment, DELETED_FLAG, VALUE};

/// How many nodes one multi-read of a listing covers (two reads each: the
/// node's children and its value).
const LIST_BATCH: usize = 32;

/// Creates the container nodes down to `dir`. Nodes above the store's
/// root are open to anyone (as `mkdir -p` would make them), so that other
/// users can have roots beside ours; the root and everything under it
/// carry the store's ACLs.
pub(crate) async fn make_dirs(client: &ZkClient, session: &zk::Client, dir: &str) -> Result<()> {
    if dir == "/" {
        return Ok(());
    }
    let opts = zk::CreateMode::Container.with_acls(client.acls());
    let open = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
    let root = client.layout().root_path();
    let mut ends: Vec<usize> = dir
        .char_indices()
        .filter(|(i, c)| *c == '/' && *i > 0)
        .map(|(i, _)| i)
        .collect();
    ends.push(dir.len());
    // Try the deepest first: usually only it is missing.
    let mut start = ends.len() - 1;
    loop {
        let path = &dir[..ends[start]];
        let r = with_deadline(
            client.request_timeout(),
            "creating parents",
            session.create(
                path,
                b"",
                if path.len() < root.len() && is_ancestor(path, root) {
                    &open
                } else {
                    &opts
                },
            ),
        )
        .await?;
        match r {
            Ok(_) | Err(zk::Error::NodeExists) => {
                if start + 1 == ends.len() {
                    return Ok(());
                }
                start += 1;
            }
            Err(zk::Error::NoNode) if start > 0 => start -= 1,
            Err(e) => return Err(map_err(e, &format!("creating {path}"))),
        }
    }
}

/// Every key under `prefix` (the prefix key itself excluded), read level
/// by level: the children of the prefix's node, then, for each level of
/// nodes, their children and their values together, in multi-read
/// requests of at most [`LIST_BATCH`] nodes each.
pub(crate) async fn list_under(
    client: &ZkClient,
    session: &zk::Client,
    prefix: &str,
) -> Result<Vec<KvPair>> {
    let start = client.layout().prefix_dir(prefix);
    let limit = client.request_timeout();
    let failed = |e: zk::Error| map_err(e, &format!("list {prefix:?}"));
    let mut level = Vec::new();
    match with_deadline(limit, "list", session.list_children(&start)).await? {
        Ok(names) => sub_nodes(&start, prefix, names, &mut level),
        Err(zk::Error::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    }
    let mut out = Vec::new();
    while !level.is_empty() {
        let replies = futures::future::join_all(level.chunks(LIST_BATCH).map(|nodes| {
            let mut reader = session.new_multi_reader();
            let built = nodes.iter().try_for_each(|(path, _)| {
                reader.add_get_children(path)?;
                reader.add_get_data(&child(path, VALUE))
            });
            let commit = built.map(|()| reader.commit());
            async move {
                match commit {
                    Ok(commit) => with_deadline(limit, "list", commit).await,
                    Err(e) => Ok(Err(e)),
                }
            }
        }))
        .await;
        let mut next = Vec::new();
        for (nodes, reply) in level.chunks(LIST_BATCH).zip(replies) {
            let results = reply?.map_err(failed)?;
            if results.len() != 2 * nodes.len() {
                return Err(failed(zk::Error::UnexpectedError(format!(
                    "a multi-read of {} operations answered {}",
                    2 * nodes.len(),
                    results.len()
                ))));
            }
            let mut results = results.into_iter();
            for (path, key) in nodes {
                let (Some(children), Some(value)) = (results.next(), results.next()) else {
                    break;
                };
                match children {
                    zk::MultiReadResult::Children { children } => {
                        sub_nodes(path, key, children, &mut next)
                    }
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => {}
                    zk::MultiReadResult::Error { err } => return Err(failed(err)),
                    other => return Err(failed(unexpected_reply(Some(other)))),
                }
                match value {
                    zk::MultiReadResult::Data { data, stat } => {
                        out.push(KvPair::new(key.clone(), data, stat.mzxid as u64))
                    }
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => {}
                    zk::MultiReadResult::Error { err } => return Err(failed(err)),
                    other => return Err(failed(unexpected_reply(Some(other)))),
                }
            }
        }
        level = next;
    }
    out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    Ok(out)
}

/// Appends to `out` the user key nodes among `names`, the children of the
/// node `path` of key (or prefix) `key`, with their keys.
fn sub_nodes(path: &str, key: &str, names: Vec<String>, out: &mut Vec<(String, String)>) {
    for name in names {
        let Some(seg) = unescape_segment(&name) else {
            continue;
        };
        let sub = if key.is_empty() {
            seg.into_owned()
        } else {
            format!("{key}/{seg}")
        };
        out.push((child(path, &name), sub));
    }
}

/// Deletes a value node (at `version`, if given) in one multi-op that
/// marks its key node `dir` as deleted: the key node's `mzxid` is then the
/// zxid of the delete, which the watch reports as its revision. The
/// server's refusal is left to the caller (`NoNode`: nothing to delete).
pub(crate) async fn delete_value(
    client: &ZkClient,
    session: &zk::Client,
    dir: &str,
    path: &str,
    version: Option<i32>,
    what: &str,
) -> Result<std::result::Result<(), zk::Error>> {
    let mut multi = session.new_multi_writer();
    let built = multi
        .add_set_data(dir, DELETED_FLAG, None)
        .and_then(|()| multi.add_delete(path, version));
    match built {
        Err(e) => Ok(Err(e)),
        Ok(()) => {
            with_deadline(
                client.request_timeout(),
                what,
                multi.commit().map(|r| r.map(|_| ()).map_err(multi_err)),
            )
            .await
        }
    }
}
