//! A page of a listing (`list_with`): the tree walked depth first in key
//! order, reading only what the page needs.
//!
//! Key order is byte order of the whole key, which is not the order of a
//! plain depth-first walk over sorted child names: the keys under `a`
//! (`a/…`) sort after a sibling `a!` and its keys, because `!` sorts
//! before `/`. So each node's children become *entries*, a child's own key
//! (`a`) and the block of keys under it (`a/…`, ordered as `a/`), and the
//! entries are walked in that order. Entries that sort wholly at or
//! before `start_after` are dropped before anything of them is read; the
//! walk goes down only into the one block that holds `start_after`.
//!
//! The children's own keys are read in rounds, in multi-reads of a few
//! dozen children: the key node (its stat counts its children, so a leaf
//! is never listed) and the value node (`get_data`, or with `keys_only`
//! an `exists`, whose stat carries the exact revision without the value).
//! A round reads no more children than the page still has room for, so
//! the walk holds at most about a page of pairs, plus the child names of
//! the nodes on its current path.

use std::cmp::Ordering;

use anykv_core::{Bytes, KvPair, Result};
use zookeeper_client as zk;

use crate::client::{map_err, unexpected_reply, with_deadline, ZkClient};
use crate::layout::{child, unescape_segment, VALUE};

/// How many children one multi-read covers (two reads each).
const BATCH: usize = 32;

/// How many children one round reads at most, in multi-reads of
/// [`BATCH`] sent together.
const ROUND: usize = 4 * BATCH;

/// What one page asks for: the canonical prefix, the canonical key the
/// page starts after, at most how many pairs, and whether values are
/// left out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRequest<'a> {
    /// The canonical prefix (empty: the whole store).
    pub(crate) prefix: &'a str,
    /// Only keys after this canonical key.
    pub(crate) after: Option<&'a str>,
    /// At most this many pairs (at least 1).
    pub(crate) limit: usize,
    /// Keys and revisions only, every value empty.
    pub(crate) keys_only: bool,
}

/// What a round read of a child.
enum Read {
    /// Not read (its own key sorts at or before `start_after`, or the walk
    /// has not come to it yet).
    Unread,
    /// The child's node is gone.
    Gone,
    /// The child's node: its key's pair if it has a value (taken when the
    /// pair joins the page), and whether it has children besides the value.
    Node {
        /// The key's pair, `None` once taken or when the key has no value.
        pair: Option<KvPair>,
        /// The node has children besides its value node.
        deeper: bool,
    },
}

/// A user child of a node on the walk's path.
struct Child {
    /// The child's znode name.
    name: String,
    /// The child's canonical key.
    key: String,
    /// What was read of it.
    read: Read,
}

/// One entry of a node's listing: a child's own key, or the block of
/// keys under it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The child's index in [`Frame::children`].
    child: usize,
    /// The block under the child rather than its own key.
    under: bool,
}

/// A node on the walk's path, with its entries still to walk.
struct Frame {
    /// The node's znode path.
    dir: String,
    /// Its user children, sorted by key.
    children: Vec<Child>,
    /// The entries after `start_after`, in key order.
    entries: Vec<Entry>,
    /// The next entry to walk.
    next: usize,
}

/// One page of the keys under `request.prefix`, in key order (see the
/// module documentation). Nodes that vanish during the walk are skipped,
/// as `list` skips them.
pub(crate) async fn list_page(
    client: &ZkClient,
    session: &zk::Client,
    request: PageRequest<'_>,
) -> Result<Vec<KvPair>> {
    let PageRequest {
        prefix,
        after,
        limit,
        keys_only,
    } = request;
    let mut out = Vec::new();
    if limit == 0 || !block_after(prefix, after) {
        return Ok(out);
    }
    let start = client.layout().prefix_dir(prefix);
    let Some(first) = open_frame(client, session, start, prefix, after).await? else {
        return Ok(out);
    };
    let mut path = vec![first];
    // Pairs read by a round and not yet in the page.
    let mut ahead = 0usize;
    while out.len() < limit {
        let Some(frame) = path.last_mut() else {
            break;
        };
        let Some(&entry) = frame.entries.get(frame.next) else {
            path.pop();
            continue;
        };
        frame.next += 1;
        if !entry.under {
            if matches!(frame.children[entry.child].read, Read::Unread) {
                let room = limit.saturating_sub(out.len() + ahead).clamp(1, ROUND);
                ahead += read_round(client, session, frame, entry.child, room, keys_only).await?;
            }
            if let Read::Node { pair, .. } = &mut frame.children[entry.child].read {
                if let Some(pair) = pair.take() {
                    ahead = ahead.saturating_sub(1);
                    out.push(pair);
                }
            }
            continue;
        }
        let c = &frame.children[entry.child];
        let descend = match c.read {
            Read::Gone | Read::Node { deeper: false, .. } => false,
            Read::Node { deeper: true, .. } | Read::Unread => true,
        };
        if descend {
            let (dir, key) = (child(&frame.dir, &c.name), c.key.clone());
            if let Some(f) = open_frame(client, session, dir, &key, after).await? {
                path.push(f);
            }
        }
    }
    Ok(out)
}

/// The frame of node `dir` of key (or prefix) `key`: its user children
/// sorted by key and its entries after `after` in key order; `None` when
/// the node is gone.
async fn open_frame(
    client: &ZkClient,
    session: &zk::Client,
    dir: String,
    key: &str,
    after: Option<&str>,
) -> Result<Option<Frame>> {
    let names = match with_deadline(
        client.request_timeout(),
        "list",
        session.list_children(&dir),
    )
    .await?
    {
        Ok(names) => names,
        Err(zk::Error::NoNode) => return Ok(None),
        Err(e) => return Err(map_err(e, &format!("list {dir}"))),
    };
    let mut children: Vec<Child> = names
        .into_iter()
        .filter_map(|name| {
            let seg = unescape_segment(&name)?;
            let key = if key.is_empty() {
                seg.into_owned()
            } else {
                format!("{key}/{seg}")
            };
            Some(Child {
                name,
                key,
                read: Read::Unread,
            })
        })
        .collect();
    children.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut entries = Vec::new();
    for (i, c) in children.iter().enumerate() {
        if after.is_none_or(|a| c.key.as_str() > a) {
            entries.push(Entry {
                child: i,
                under: false,
            });
        }
        if block_after(&c.key, after) {
            entries.push(Entry {
                child: i,
                under: true,
            });
        }
    }
    entries.sort_unstable_by(|a, b| entry_order(&children, a, b));
    Ok(Some(Frame {
        dir,
        children,
        entries,
        next: 0,
    }))
}

/// The key order of two entries of one node: a child's own key sorts as
/// itself, the block under it as the key followed by `/`.
fn entry_order(children: &[Child], a: &Entry, b: &Entry) -> Ordering {
    let bytes = |e: &Entry| children[e.child].key.bytes().chain(e.under.then_some(b'/'));
    bytes(a).cmp(bytes(b))
}

/// Whether some key under `key` (a key `key/…`; any key for the empty
/// prefix) may sort after `after`: false when the whole block sorts
/// before it.
fn block_after(key: &str, after: Option<&str>) -> bool {
    let Some(after) = after else {
        return true;
    };
    if key.is_empty() {
        return true;
    }
    let (a, k) = (after.as_bytes(), key.as_bytes());
    match a.get(..k.len()) {
        // `after` is the key itself, inside the block, or between the key
        // and the block (a next byte below `/`).
        Some(head) if head == k => a.get(k.len()).is_none_or(|&c| c <= b'/'),
        // They differ before the key ends (or `after` is shorter): the
        // block is after `after` exactly when the key is.
        _ => a < k,
    }
}

/// Reads the children of `frame` from index `from` on (at most `room` of
/// them, all with their own key after `start_after`); returns how many
/// have a pair.
async fn read_round(
    client: &ZkClient,
    session: &zk::Client,
    frame: &mut Frame,
    from: usize,
    room: usize,
    keys_only: bool,
) -> Result<usize> {
    let end = frame.children.len().min(from.saturating_add(room));
    let Some(round) = frame.children.get_mut(from..end) else {
        return Ok(0);
    };
    let dir = frame.dir.as_str();
    let limit = client.request_timeout();
    let failed = |e: zk::Error| map_err(e, &format!("list {dir}"));
    let reads = if keys_only {
        with_deadline(limit, "list", stat_round(session, dir, round))
            .await?
            .map_err(failed)?
    } else {
        data_round(session, dir, round, limit)
            .await?
            .map_err(failed)?
    };
    let mut found = 0;
    for (c, read) in round.iter_mut().zip(reads) {
        if matches!(read, Read::Node { pair: Some(_), .. }) {
            found += 1;
        }
        c.read = read;
    }
    Ok(found)
}

/// The round's reads with values: `get_data` of each child's key node and
/// value node, in multi-reads of [`BATCH`] children sent together.
async fn data_round(
    session: &zk::Client,
    dir: &str,
    round: &[Child],
    limit: std::time::Duration,
) -> Result<std::result::Result<Vec<Read>, zk::Error>> {
    let replies = futures::future::join_all(round.chunks(BATCH).map(|chunk| {
        let mut reader = session.new_multi_reader();
        let built = chunk.iter().try_for_each(|c| {
            let node = child(dir, &c.name);
            reader.add_get_data(&node)?;
            reader.add_get_data(&child(&node, VALUE))
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
    let mut reads = Vec::with_capacity(round.len());
    for (chunk, reply) in round.chunks(BATCH).zip(replies) {
        let results = match reply? {
            Ok(results) if results.len() == 2 * chunk.len() => results,
            Ok(results) => {
                return Ok(Err(zk::Error::UnexpectedError(format!(
                    "a multi-read of {} operations answered {}",
                    2 * chunk.len(),
                    results.len()
                ))))
            }
            Err(e) => return Ok(Err(e)),
        };
        let mut results = results.into_iter();
        for c in chunk {
            let node = match results.next() {
                Some(zk::MultiReadResult::Data { stat, .. }) => Some(stat),
                Some(zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                }) => None,
                Some(zk::MultiReadResult::Error { err }) => return Ok(Err(err)),
                other => return Ok(Err(unexpected_reply(other))),
            };
            let value = match results.next() {
                Some(zk::MultiReadResult::Data { data, stat }) => Some((Bytes::from(data), stat)),
                Some(zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                }) => None,
                Some(zk::MultiReadResult::Error { err }) => return Ok(Err(err)),
                other => return Ok(Err(unexpected_reply(other))),
            };
            reads.push(child_read(&c.key, node, value));
        }
    }
    Ok(Ok(reads))
}

/// The round's reads without values: `exists` of each child's key node
/// and value node, all sent at once (a multi-read has no `exists`).
async fn stat_round(
    session: &zk::Client,
    dir: &str,
    round: &[Child],
) -> std::result::Result<Vec<Read>, zk::Error> {
    let stats = futures::future::join_all(round.iter().map(|c| {
        let node = child(dir, &c.name);
        let value = child(&node, VALUE);
        futures::future::join(session.check_stat(&node), session.check_stat(&value))
    }))
    .await;
    round
        .iter()
        .zip(stats)
        .map(|(c, (node, value))| {
            let value = value?.map(|stat| (Bytes::new(), stat));
            Ok(child_read(&c.key, node?, value))
        })
        .collect()
}

/// What was read of the child of key `key`: its key node's stat and its
/// value node's value and stat (`None`: absent). A value counts only
/// while the key node is there, as in a single read of both.
fn child_read(key: &str, node: Option<zk::Stat>, value: Option<(Bytes, zk::Stat)>) -> Read {
    let Some(node) = node else {
        return Read::Gone;
    };
    let pair = value.map(|(data, stat)| KvPair::new(key, data, stat.mzxid as u64));
    Read::Node {
        deeper: node.num_children > i32::from(pair.is_some()),
        pair,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_before_start_after_are_skipped() {
        assert!(block_after("a", None));
        assert!(block_after("", Some("zzz")));
        // Inside the block, the key itself, or between the key and its
        // block: the block (or part of it) comes after.
        assert!(block_after("a", Some("a/b")));
        assert!(block_after("a", Some("a")));
        assert!(block_after("a", Some("a!")));
        assert!(block_after("a", Some("a-x/y")));
        // Before the key: the whole block comes after.
        assert!(block_after("b", Some("a")));
        assert!(block_after("ab", Some("a")));
        assert!(block_after("b", Some("a/zzz")));
        // After the block: nothing of it comes after.
        assert!(!block_after("a", Some("a0")));
        assert!(!block_after("a", Some("ab")));
        assert!(!block_after("a", Some("b")));
        assert!(!block_after("a/b", Some("a/c")));
    }

    #[test]
    fn entries_follow_key_order() {
        let children: Vec<Child> = ["a", "a!", "a0"]
            .iter()
            .map(|k| Child {
                name: (*k).to_owned(),
                key: (*k).to_owned(),
                read: Read::Unread,
            })
            .collect();
        let mut entries: Vec<Entry> = (0..3)
            .flat_map(|child| [false, true].map(|under| Entry { child, under }))
            .collect();
        entries.sort_unstable_by(|a, b| entry_order(&children, a, b));
        let order: Vec<String> = entries
            .iter()
            .map(|e| {
                let k = &children[e.child].key;
                if e.under {
                    format!("{k}/")
                } else {
                    k.clone()
                }
            })
            .collect();
        assert_eq!(order, ["a", "a!", "a!/", "a/", "a0", "a0/"]);
    }
}
