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
//! one `exists` each, sent together with the multi-reads: its stat carries
//! the exact revision without the value).
//! A round reads no more children than the page still has room for, so
//! the walk holds at most about a page of pairs, plus, for each node on
//! its current path, the child names as the server sent them and a few
//! bytes per child.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::iter::once;

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

/// What a round saw of a child: whether the walk goes into its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not read: its own key sorts at or before `start_after`, or the
    /// walk has not come to it yet. Its block is listed when walked.
    Unread,
    /// The child's node is gone.
    Gone,
    /// The node has no children besides its value node.
    Leaf,
    /// The node has other children.
    Deeper,
}

/// The next entry of a node's listing in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// The own key of the child at this index.
    Key(usize),
    /// The block of keys under the child at this index.
    Block(usize),
}

/// A node on the walk's path, with what is left of its listing.
struct Frame {
    /// The node's znode path.
    dir: String,
    /// The node's key (empty for the whole store).
    key: String,
    /// Its user children's znode names (the server's list, the others
    /// removed), sorted by key.
    names: Vec<String>,
    /// What the rounds saw of each child, by index in `names`.
    seen: Vec<Seen>,
    /// The children's indices in the order of their blocks (`key/`),
    /// which is not the order of their keys (`a!/` sorts before `a/`).
    blocks: Vec<usize>,
    /// The child whose own key comes next.
    next_key: usize,
    /// The position in `blocks` of the block that comes next.
    next_block: usize,
    /// The pairs the last round read, of the children from `round_from`
    /// on (`None`: no value, or already in the page).
    round: Vec<Option<KvPair>>,
    /// The index of the first child of `round`.
    round_from: usize,
}

impl Frame {
    /// The frame of node `dir` of key (or prefix) `key` whose children
    /// are `names`, its listing starting after `after`.
    fn new(dir: String, key: String, mut names: Vec<String>, after: Option<&str>) -> Frame {
        names.retain(|n| unescape_segment(n).is_some());
        names.sort_unstable_by(|a, b| segment(a).cmp(&segment(b)));
        let mut blocks: Vec<usize> = (0..names.len()).collect();
        blocks.sort_unstable_by(|&a, &b| {
            let (a, b) = (segment(&names[a]), segment(&names[b]));
            a.bytes().chain(once(b'/')).cmp(b.bytes().chain(once(b'/')))
        });
        let mut frame = Frame {
            dir,
            key,
            seen: vec![Seen::Unread; names.len()],
            names,
            blocks,
            next_key: 0,
            next_block: 0,
            round: Vec::new(),
            round_from: 0,
        };
        if let Some(after) = after {
            // Keys and blocks are sorted, so those wholly at or before
            // `after` come first.
            let names = &frame.names;
            frame.next_key = names.partition_point(|n| frame.child_key(n).as_str() <= after);
            frame.next_block = frame
                .blocks
                .partition_point(|&i| !block_after(&frame.child_key(&names[i]), Some(after)));
        }
        frame
    }

    /// The next entry in key order, consumed.
    fn next_entry(&mut self) -> Option<Entry> {
        let key = self.names.get(self.next_key).map(|n| segment(n));
        let block = self.blocks.get(self.next_block).copied();
        let key_first = match (&key, block) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(k), Some(b)) => {
                let b = segment(&self.names[b]);
                k.bytes().cmp(b.bytes().chain(once(b'/'))) == Ordering::Less
            }
        };
        if key_first {
            self.next_key += 1;
            Some(Entry::Key(self.next_key - 1))
        } else {
            self.next_block += 1;
            block.map(Entry::Block)
        }
    }

    /// The canonical key of the child named `name`.
    fn child_key(&self, name: &str) -> String {
        let seg = segment(name);
        if self.key.is_empty() {
            seg.into_owned()
        } else {
            format!("{}/{seg}", self.key)
        }
    }

    /// Takes the pair the last round read of child `i`, if any.
    fn take_pair(&mut self, i: usize) -> Option<KvPair> {
        let at = i.checked_sub(self.round_from)?;
        self.round.get_mut(at)?.take()
    }
}

/// The user segment of a child's znode name (only user names are kept in
/// a frame; any other name stands for itself).
fn segment(name: &str) -> Cow<'_, str> {
    unescape_segment(name).unwrap_or(Cow::Borrowed(name))
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
    let Some(first) = open_frame(client, session, start, prefix.to_owned(), after).await? else {
        return Ok(out);
    };
    let mut path = vec![first];
    // Pairs read by a round and not yet in the page.
    let mut ahead = 0usize;
    while out.len() < limit {
        let Some(frame) = path.last_mut() else {
            break;
        };
        match frame.next_entry() {
            None => {
                path.pop();
            }
            Some(Entry::Key(i)) => {
                if frame.seen.get(i) == Some(&Seen::Unread) {
                    let room = limit.saturating_sub(out.len() + ahead).clamp(1, ROUND);
                    ahead += read_round(client, session, frame, i, room, keys_only).await?;
                }
                if let Some(pair) = frame.take_pair(i) {
                    ahead = ahead.saturating_sub(1);
                    out.push(pair);
                }
            }
            Some(Entry::Block(i)) => {
                if matches!(frame.seen.get(i), Some(Seen::Unread | Seen::Deeper)) {
                    let name = &frame.names[i];
                    let (dir, key) = (child(&frame.dir, name), frame.child_key(name));
                    if let Some(f) = open_frame(client, session, dir, key, after).await? {
                        path.push(f);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The frame of node `dir` of key (or prefix) `key`, its listing starting
/// after `after`; `None` when the node is gone.
async fn open_frame(
    client: &ZkClient,
    session: &zk::Client,
    dir: String,
    key: String,
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
    Ok(Some(Frame::new(dir, key, names, after)))
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
/// them, all with their own key after `start_after`), keeping their pairs
/// as the frame's round; returns how many have a pair.
async fn read_round(
    client: &ZkClient,
    session: &zk::Client,
    frame: &mut Frame,
    from: usize,
    room: usize,
    keys_only: bool,
) -> Result<usize> {
    let end = frame.names.len().min(from.saturating_add(room));
    let Some(names) = frame.names.get(from..end) else {
        return Ok(0);
    };
    let dir = frame.dir.as_str();
    let failed = |e: zk::Error| map_err(e, &format!("list {dir}"));
    let reads = with_deadline(
        client.request_timeout(),
        "list",
        round_reads(session, dir, names, keys_only),
    )
    .await?
    .map_err(failed)?;
    let mut round = Vec::with_capacity(names.len());
    for (i, (node, value)) in (from..end).zip(reads) {
        let (seen, pair) = match node {
            None => (Seen::Gone, None),
            Some(node) => {
                let key = frame.child_key(&frame.names[i]);
                let pair = value.map(|(data, stat)| KvPair::new(key, data, stat.mzxid as u64));
                let deeper = node.num_children > i32::from(pair.is_some());
                (if deeper { Seen::Deeper } else { Seen::Leaf }, pair)
            }
        };
        if let Some(s) = frame.seen.get_mut(i) {
            *s = seen;
        }
        round.push(pair);
    }
    let found = round.iter().filter(|p| p.is_some()).count();
    frame.round = round;
    frame.round_from = from;
    Ok(found)
}

/// What a round read of one child: its key node's stat and its value
/// node's value and stat (empty with `keys_only`); `None`: absent. A
/// value counts only while the key node is there, as in a single read of
/// both.
type ChildRead = (Option<zk::Stat>, Option<(Bytes, zk::Stat)>);

/// The reads of a round, all sent at once: `get_data` of each child's key
/// node (its stat counts its children) in multi-reads of [`BATCH`]
/// children, and of each value node, in the same multi-reads or, with
/// `keys_only`, as one `exists` each (a multi-read has no `exists`, and a
/// `get_data` would fetch the value).
async fn round_reads(
    session: &zk::Client,
    dir: &str,
    round: &[String],
    keys_only: bool,
) -> std::result::Result<Vec<ChildRead>, zk::Error> {
    let per = if keys_only { 1 } else { 2 };
    let multis = futures::future::try_join_all(round.chunks(BATCH).map(|chunk| {
        let mut reader = session.new_multi_reader();
        let built = chunk.iter().try_for_each(|name| {
            let node = child(dir, name);
            reader.add_get_data(&node)?;
            if keys_only {
                return Ok(());
            }
            reader.add_get_data(&child(&node, VALUE))
        });
        let commit = built.map(|()| reader.commit());
        async move { commit?.await }
    }));
    let stats = futures::future::try_join_all(round.iter().filter(|_| keys_only).map(|name| {
        let value = child(&child(dir, name), VALUE);
        session.check_stat(&value)
    }));
    let (multis, stats) = futures::future::try_join(multis, stats).await?;
    let mut stats = stats.into_iter();
    let mut reads = Vec::with_capacity(round.len());
    for (chunk, results) in round.chunks(BATCH).zip(multis) {
        if results.len() != per * chunk.len() {
            return Err(zk::Error::UnexpectedError(format!(
                "a multi-read of {} operations answered {}",
                per * chunk.len(),
                results.len()
            )));
        }
        let mut results = results.into_iter();
        for _ in chunk {
            let node = data_reply(results.next())?.map(|(_, stat)| stat);
            let value = if keys_only {
                stats.next().flatten().map(|stat| (Bytes::new(), stat))
            } else {
                data_reply(results.next())?
            };
            reads.push(if node.is_some() {
                (node, value)
            } else {
                (None, None)
            });
        }
    }
    Ok(reads)
}

/// The data and stat of one `get_data` of a multi-read; `None` when the
/// node does not exist.
fn data_reply(
    reply: Option<zk::MultiReadResult>,
) -> std::result::Result<Option<(Bytes, zk::Stat)>, zk::Error> {
    match reply {
        Some(zk::MultiReadResult::Data { data, stat }) => Ok(Some((Bytes::from(data), stat))),
        Some(zk::MultiReadResult::Error {
            err: zk::Error::NoNode,
        }) => Ok(None),
        Some(zk::MultiReadResult::Error { err }) => Err(err),
        other => Err(unexpected_reply(other)),
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

    /// The entries of a frame of `names` under key `key`, from
    /// `after` on, as `key` or `key/`.
    fn entries(key: &str, names: &[&str], after: Option<&str>) -> Vec<String> {
        let names = names.iter().map(|n| (*n).to_owned()).collect();
        let mut frame = Frame::new("/".to_owned(), key.to_owned(), names, after);
        let mut out = Vec::new();
        while let Some(e) = frame.next_entry() {
            out.push(match e {
                Entry::Key(i) => frame.child_key(&frame.names[i]),
                Entry::Block(i) => format!("{}/", frame.child_key(&frame.names[i])),
            });
        }
        out
    }

    #[test]
    fn entries_follow_key_order() {
        let names = ["a0", "a", "@v", "a!", "@@x", "@locks"];
        assert_eq!(
            entries("", &names, None),
            ["@x", "@x/", "a", "a!", "a!/", "a/", "a0", "a0/"]
        );
        assert_eq!(
            entries("k", &names, None),
            ["k/@x", "k/@x/", "k/a", "k/a!", "k/a!/", "k/a/", "k/a0", "k/a0/"]
        );
        // A key is left out at or before `after`, a block when all of it
        // is: "a/" holds keys after "a/b", "a!/" none.
        assert_eq!(entries("", &names, Some("a/b")), ["a/", "a0", "a0/"]);
        assert_eq!(
            entries("", &names, Some("a")),
            ["a!", "a!/", "a/", "a0", "a0/"]
        );
        assert_eq!(
            entries("", &names, Some("a!/z")),
            ["a!/", "a/", "a0", "a0/"]
        );
        assert_eq!(entries("", &names, Some("b")), Vec::<String>::new());
    }
}
