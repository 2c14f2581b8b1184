//! Cases: `list` and `delete_tree`: recursion, sorting, segment
//! boundaries, missing and empty prefixes, and counts.

use std::sync::Arc;

use anykv_core::{Bytes, KvPair, ListOptions, PutOptions, Store};

use crate::{bytes, check, check_eq, check_err, CaseResult, Ctx};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_list {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args list: [
            list_sorted_recursive,
            list_segment_boundaries,
            list_missing_prefix_is_empty,
            list_empty_prefix_is_whole_root,
            list_delete_tree_counts,
            list_delete_tree_missing_is_zero,
            list_delete_tree_empty_prefix_empties_root,
            list_page_limit,
            list_pages_cover_the_listing,
            list_page_start_after_absent_key,
            list_page_keys_only,
            list_page_bad_options_rejected,
        ] }
    };
}

/// Puts each key with its own name as value; returns the pairs, sorted by
/// key.
async fn put_all(s: &Arc<dyn Store>, keys: &[&str]) -> Result<Vec<KvPair>, crate::Failure> {
    let mut pairs = Vec::new();
    for k in keys {
        let rev = s.put(k, bytes(k.to_string()), PutOptions::new()).await?;
        pairs.push(KvPair::new(*k, k.to_string(), rev));
    }
    pairs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pairs)
}

/// The pairs under `prefix/`, in order.
fn under(pairs: &[KvPair], prefix: &str) -> Vec<KvPair> {
    pairs
        .iter()
        .filter(|kv| anykv_core::key::is_in_tree(prefix, &kv.key))
        .cloned()
        .collect()
}

/// `list(prefix)` returns every key under `prefix/` at any depth, with its
/// current value and revision, sorted by key bytes (`d/a-b` before `d/a/b`,
/// not depth first), the prefix key itself excluded; it reflects updates and
/// deletes.
pub async fn list_sorted_recursive(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut pairs = put_all(
        &s,
        &[
            "d/x",
            "d/a/b/c/d",
            "d",
            "d/a",
            "d/a/b",
            "d/b",
            "e",
            "d/a/c",
            "d/a-b",
            "c/d",
            "d/a/b/c",
            "d/A",
            "d/~",
            "d/0",
            "d/a0",
        ],
    )
    .await?;
    let want = under(&pairs, "d");
    check_eq!(want.len(), 12);
    check_eq!(s.list("d").await?, want);
    check_eq!(s.list("d/a").await?, under(&pairs, "d/a"));
    check_eq!(under(&pairs, "d/a").len(), 4);
    check_eq!(s.list("d/a/b/c").await?, under(&pairs, "d/a/b/c"));

    // An update shows its new value and revision; a delete removes the key.
    let rev = s.put("d/a/b", bytes("updated"), PutOptions::new()).await?;
    for kv in pairs.iter_mut() {
        if kv.key == "d/a/b" {
            *kv = KvPair::new("d/a/b", "updated", rev);
        }
    }
    check!(s.delete("d/a/c").await?, "delete(\"d/a/c\") returned false");
    pairs.retain(|kv| kv.key != "d/a/c");
    check_eq!(s.list("d").await?, under(&pairs, "d"));
    check_eq!(s.list("").await?, pairs);
    Ok(())
}

/// Prefix operations respect segment boundaries: with keys `a`, `a/x`,
/// `ab`, `ab/c`, `a0`, `a.b` and `a-b`, `list("a")` is exactly `[a/x]` and
/// `list("ab")` exactly `[ab/c]`.
pub async fn list_segment_boundaries(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let pairs = put_all(&s, &["a", "a/x", "ab", "ab/c", "a0", "a.b", "a-b"]).await?;
    let ax = pairs.iter().find(|kv| kv.key == "a/x").cloned();
    let abc = pairs.iter().find(|kv| kv.key == "ab/c").cloned();
    check_eq!(s.list("a").await?, ax.into_iter().collect::<Vec<_>>());
    check_eq!(s.list("ab").await?, abc.into_iter().collect::<Vec<_>>());
    check_eq!(s.list("a/x").await?, Vec::<KvPair>::new());
    check_eq!(s.list("a.b").await?, Vec::<KvPair>::new());
    check_eq!(s.list("").await?, pairs);
    Ok(())
}

/// A prefix with nothing under it gives an empty list, not an error: a
/// missing prefix, a key without children, and a prefix below a key.
pub async fn list_missing_prefix_is_empty(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r = s.put("x/y", bytes("v"), PutOptions::new()).await?;
    check_eq!(s.list("missing").await?, Vec::<KvPair>::new());
    check_eq!(s.list("x/missing/deep").await?, Vec::<KvPair>::new());
    check_eq!(s.list("x/y").await?, Vec::<KvPair>::new());
    check_eq!(s.list("x/y/z").await?, Vec::<KvPair>::new());
    check_eq!(s.list("x").await?, vec![KvPair::new("x/y", "v", r)]);
    Ok(())
}

/// `list("")` and `list("/")` give every key of the store's root, at every
/// depth, sorted by key.
pub async fn list_empty_prefix_is_whole_root(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    let pairs = put_all(&s, &["z", "a/b/c", "a", "m/n", "a/b", "0", "Z"]).await?;
    check_eq!(s.list("").await?, pairs);
    check_eq!(s.list("/").await?, pairs);
    Ok(())
}

/// `delete_tree(prefix)` deletes the prefix key and every key under
/// `prefix/`, returns how many it deleted, and respects segment boundaries
/// (`ab`, `ab/x` and `a0` survive `delete_tree("a")`); with the prefix key
/// absent it still deletes the children, and a childless key counts 1.
pub async fn list_delete_tree_counts(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let pairs = put_all(
        &s,
        &[
            "a", "a/x", "a/y/z", "a/y/w", "ab", "ab/x", "a0", "b", "r/1", "r/2/3", "s",
        ],
    )
    .await?;
    check_eq!(s.delete_tree("a").await?, 4, "delete_tree(\"a\")");
    let left: Vec<KvPair> = pairs
        .iter()
        .filter(|kv| kv.key != "a" && !kv.key.starts_with("a/"))
        .cloned()
        .collect();
    check_eq!(s.list("").await?, left);
    check_eq!(s.get("a").await?, None);

    // The prefix key is absent: only the children go.
    check_eq!(s.delete_tree("r").await?, 2, "delete_tree(\"r\")");
    // A key without children.
    check_eq!(s.delete_tree("s").await?, 1, "delete_tree(\"s\")");
    let left: Vec<KvPair> = left
        .into_iter()
        .filter(|kv| !kv.key.starts_with("r/") && kv.key != "s")
        .collect();
    check_eq!(left.len(), 4);
    check_eq!(s.list("").await?, left);
    // A second delete_tree finds nothing.
    check_eq!(s.delete_tree("a").await?, 0, "second delete_tree(\"a\")");
    Ok(())
}

/// `delete_tree` of a prefix with nothing at or under it returns 0 and
/// deletes nothing.
pub async fn list_delete_tree_missing_is_zero(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    check_eq!(
        s.delete_tree("missing").await?,
        0,
        "delete_tree(\"missing\")"
    );
    check_eq!(s.delete_tree("k/sub").await?, 0, "delete_tree(\"k/sub\")");
    check_eq!(s.delete_tree("k0").await?, 0, "delete_tree(\"k0\")");
    check_eq!(s.list("").await?, vec![KvPair::new("k", "v", r)]);
    check_eq!(s.delete_tree("k").await?, 1, "delete_tree(\"k\")");
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// `delete_tree("")` (and `delete_tree("/")`) empties the store's root,
/// returning the number of keys; the store keeps working afterwards.
pub async fn list_delete_tree_empty_prefix_empties_root(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let keys = ["a", "a/b", "a/b/c", "x", "y/z"];
    put_all(&s, &keys).await?;
    check_eq!(s.delete_tree("").await?, 5, "delete_tree(\"\")");
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    for k in keys {
        check_eq!(s.get(k).await?, None, "get({k:?}) after delete_tree(\"\")");
    }
    let pairs = put_all(&s, &["p", "q/r"]).await?;
    check_eq!(s.list("").await?, pairs);
    check_eq!(s.delete_tree("/").await?, 2, "delete_tree(\"/\")");
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    check_eq!(
        s.delete_tree("").await?,
        0,
        "delete_tree(\"\") of an empty root"
    );
    Ok(())
}

/// Writes `n` keys `t/k000`.. plus neighbours outside the tree (`t`
/// itself, `s/x`, `tz`), returning the tree's listing.
async fn paged_tree(s: &Arc<dyn Store>, n: usize) -> Result<Vec<KvPair>, crate::Failure> {
    for i in 0..n {
        s.put(
            &format!("t/k{i:03}"),
            bytes(format!("v{i}")),
            PutOptions::new(),
        )
        .await?;
    }
    for k in ["t", "s/x", "tz", "t0"] {
        s.put(k, bytes("outside"), PutOptions::new()).await?;
    }
    let all = s.list("t").await?;
    check_eq!(all.len(), n);
    Ok(all)
}

/// `list_with` and a limit gives the first `limit` pairs of the listing,
/// values and revisions as `list` gives them; a limit past the end gives
/// the whole listing.
pub async fn list_page_limit(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let all = paged_tree(&s, 12).await?;
    let page = s.list_with("t", ListOptions::new().with_limit(5)).await?;
    check_eq!(page, all[..5].to_vec());
    let page = s.list_with("t", ListOptions::new().with_limit(100)).await?;
    check_eq!(page, all);
    check_eq!(s.list_with("t", ListOptions::new()).await?, all);
    check_eq!(
        s.list_with("nothing", ListOptions::new().with_limit(3))
            .await?,
        vec![]
    );
    Ok(())
}

/// Paging from the last key of each full page, in pages of 7, gives
/// exactly the listing: every key once, in order, no neighbour outside the
/// tree; every page but the last is full.
pub async fn list_pages_cover_the_listing(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let all = paged_tree(&s, 40).await?;
    let mut seen: Vec<KvPair> = Vec::new();
    let mut options = ListOptions::new().with_limit(7);
    for round in 0..10 {
        let page = s.list_with("t", options.clone()).await?;
        let full = page.len() == 7;
        check!(
            full || round == 5,
            "page {round} has {} pairs of 7 before the end",
            page.len()
        );
        let last = page.last().map(|p| p.key.clone());
        seen.extend(page);
        match last {
            Some(k) if full => options = options.start_after(k),
            _ => break,
        }
    }
    check_eq!(seen, all);
    // The whole root pages the same way.
    let whole = s.list("").await?;
    let mut seen = Vec::new();
    let mut options = ListOptions::new().with_limit(9);
    loop {
        let page = s.list_with("", options.clone()).await?;
        let last = page.last().map(|p| p.key.clone());
        let full = page.len() == 9;
        seen.extend(page);
        match last {
            Some(k) if full => options = options.start_after(k),
            _ => break,
        }
    }
    check_eq!(seen, whole);
    Ok(())
}

/// `start_after` need not be a key that exists, nor one inside the tree:
/// a key sorting before the tree starts at its first key, one after it
/// gives an empty page.
pub async fn list_page_start_after_absent_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let all = paged_tree(&s, 10).await?;
    let page = s
        .list_with("t", ListOptions::new().with_limit(3).start_after("t/k004x"))
        .await?;
    check_eq!(page, all[5..8].to_vec());
    let page = s
        .list_with("t", ListOptions::new().with_limit(3).start_after("a"))
        .await?;
    check_eq!(page, all[..3].to_vec());
    let page = s
        .list_with("t", ListOptions::new().with_limit(3).start_after("zzz"))
        .await?;
    check_eq!(page, vec![]);
    let page = s
        .list_with("t", ListOptions::new().start_after("t/k007"))
        .await?;
    check_eq!(page, all[8..].to_vec());
    Ok(())
}

/// `keys_only` gives the same keys and revisions with every value empty.
pub async fn list_page_keys_only(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let all = paged_tree(&s, 6).await?;
    let expected: Vec<KvPair> = all
        .iter()
        .map(|p| KvPair::new(p.key.clone(), Bytes::new(), p.revision))
        .collect();
    check_eq!(
        s.list_with("t", ListOptions::new().keys_only()).await?,
        expected
    );
    check_eq!(
        s.list_with(
            "t",
            ListOptions::new()
                .keys_only()
                .with_limit(4)
                .start_after("t/k000")
        )
        .await?,
        expected[1..5].to_vec()
    );
    Ok(())
}

/// A limit of 0 is `InvalidArgument`, a `start_after` that is no valid key
/// `InvalidKey`, and a bad prefix `InvalidKey`: before anything is read.
pub async fn list_page_bad_options_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    paged_tree(&s, 2).await?;
    check_err!(
        s.list_with("t", ListOptions::new().with_limit(0)).await,
        InvalidArgument
    );
    check_err!(
        s.list_with("t", ListOptions::new().start_after("a//b"))
            .await,
        InvalidKey
    );
    check_err!(s.list_with("a//b", ListOptions::new()).await, InvalidKey);
    Ok(())
}
