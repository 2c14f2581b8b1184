//! Cases: roots: nothing outside a store's root can be read, written or
//! watched through it, and clients on one root share it.

use std::time::Duration;

use anykv_core::{KvPair, PutOptions, WatchEvent, WatchOptions};

use crate::cases::keys::{context, describe};
use crate::{
    bytes, check, check_eq, check_err, expect_silence, next_event, read_initial, CaseResult, Ctx,
    EVENT_TIMEOUT,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_isolation {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args isolation: [
            isolation_roots_are_isolated,
            isolation_roots_are_isolated_for_watches,
            isolation_root_boundary_is_a_segment,
            isolation_dotdot_cannot_escape_root,
            isolation_two_clients_share_a_root,
        ] }
    };
}

/// How long a watch must stay quiet when nothing it covers changes.
const QUIET: Duration = Duration::from_millis(500);

/// Two stores on sibling roots (`R` and `R-other`) never see each other:
/// the same key holds different values, `get`, `exists`, `list("")`,
/// `delete`, `atomic_put`, `atomic_delete` and `delete_tree("")` of one
/// leave the other untouched.
pub async fn isolation_roots_are_isolated(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    let b = ctx.store_with_root_suffix("-other").await?;
    let ra = a.put("k", bytes("a"), PutOptions::new()).await?;
    let rb = b.put("k", bytes("b"), PutOptions::new()).await?;
    let rax = a.put("only-a/x", bytes("ax"), PutOptions::new()).await?;
    let rby = b.put("only-b/y", bytes("by"), PutOptions::new()).await?;

    check_eq!(a.get("k").await?, Some(KvPair::new("k", "a", ra)));
    check_eq!(b.get("k").await?, Some(KvPair::new("k", "b", rb)));
    check_eq!(a.get("only-b/y").await?, None);
    check!(!a.exists("only-b/y").await?, "a sees b's key");
    check!(!b.exists("only-a/x").await?, "b sees a's key");
    let want_a = vec![
        KvPair::new("k", "a", ra),
        KvPair::new("only-a/x", "ax", rax),
    ];
    let want_b = vec![
        KvPair::new("k", "b", rb),
        KvPair::new("only-b/y", "by", rby),
    ];
    check_eq!(a.list("").await?, want_a);
    check_eq!(b.list("").await?, want_b);

    // Writes through a never reach b.
    check!(!a.delete("only-b/y").await?, "a deleted b's key");
    check_err!(
        a.atomic_put("only-b/y", bytes("x"), Some(rby), PutOptions::new())
            .await,
        KeyNotFound
    );
    check_err!(a.atomic_delete("only-b/y", rby).await, KeyNotFound);
    let ra2 = a
        .atomic_put("k", bytes("a2"), Some(ra), PutOptions::new())
        .await?;
    check_eq!(
        a.delete_tree("only-b").await?,
        0,
        "a.delete_tree(\"only-b\")"
    );
    check_eq!(b.list("").await?, want_b);
    check_eq!(a.delete_tree("").await?, 2, "a.delete_tree(\"\")");
    check_eq!(a.list("").await?, Vec::<KvPair>::new());
    check_eq!(b.list("").await?, want_b);
    check_eq!(b.get("k").await?, Some(KvPair::new("k", "b", rb)));
    check!(ra2 > ra, "revision {ra2} is not above {ra}");

    // And the other way round.
    let ra3 = a.put("k", bytes("a3"), PutOptions::new()).await?;
    check_eq!(b.delete_tree("").await?, 2, "b.delete_tree(\"\")");
    check_eq!(a.list("").await?, vec![KvPair::new("k", "a3", ra3)]);
    Ok(())
}

/// `watch` and `watch_tree("")` of a store see nothing of sibling roots
/// (`R-other`, and `Rb`, whose name extends `R`): not their keys in the
/// initial state, not their puts, deletes or `delete_tree`s afterwards.
pub async fn isolation_roots_are_isolated_for_watches(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    ctx.require(a.capabilities().watch, "watch")?;
    let other = ctx.store_with_root_suffix("-other").await?;
    let ext = ctx.store_with_root_suffix("b").await?;
    let ra = a.put("k", bytes("a"), PutOptions::new()).await?;
    for s in [&other, &ext] {
        s.put("k", bytes("foreign"), PutOptions::new()).await?;
        s.put("t/x", bytes("foreign"), PutOptions::new()).await?;
    }

    let mut wt = a.watch_tree("", WatchOptions::new()).await?;
    let mut wk = a.watch("k", WatchOptions::new()).await?;
    let (init, _) = read_initial(&mut wt, EVENT_TIMEOUT).await?;
    check_eq!(
        init,
        vec![KvPair::new("k", "a", ra)],
        "watch_tree initial state"
    );
    let (init, _) = read_initial(&mut wk, EVENT_TIMEOUT).await?;
    check_eq!(init, vec![KvPair::new("k", "a", ra)], "watch initial state");
    let mut wo = other.watch_tree("", WatchOptions::new()).await?;
    read_initial(&mut wo, EVENT_TIMEOUT).await?;

    for s in [&other, &ext] {
        s.put("k", bytes("foreign2"), PutOptions::new()).await?;
        s.put("new", bytes("foreign"), PutOptions::new()).await?;
        check!(
            s.delete("t/x").await?,
            "delete in a sibling root returned false"
        );
    }
    check_eq!(
        ext.delete_tree("").await?,
        2,
        "delete_tree(\"\") of root Rb"
    );

    // The next events a's watches deliver are a's own writes.
    let rm = a.put("marker", bytes("m"), PutOptions::new()).await?;
    check_eq!(
        next_event(&mut wt, EVENT_TIMEOUT).await?,
        WatchEvent::Put(KvPair::new("marker", "m", rm))
    );
    let rk = a.put("k", bytes("a2"), PutOptions::new()).await?;
    let want = WatchEvent::Put(KvPair::new("k", "a2", rk));
    check_eq!(next_event(&mut wk, EVENT_TIMEOUT).await?, want.clone());
    check_eq!(next_event(&mut wt, EVENT_TIMEOUT).await?, want);
    expect_silence(&mut wt, QUIET).await?;
    expect_silence(&mut wk, QUIET).await?;

    // other's watch saw only other's writes, in order, none of a's.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut wo, EVENT_TIMEOUT).await?;
        seen.push(ev.key().map(str::to_owned));
    }
    check_eq!(
        seen,
        vec![
            Some("k".to_owned()),
            Some("new".to_owned()),
            Some("t/x".to_owned())
        ],
        "keys of the events of the watch on R-other"
    );
    check_eq!(
        other.delete_tree("").await?,
        2,
        "delete_tree(\"\") of R-other"
    );
    for _ in 0..2 {
        match next_event(&mut wo, EVENT_TIMEOUT).await? {
            WatchEvent::Delete { .. } => {}
            ev => {
                return Err(crate::Failure::failed(format!(
                    "expected a Delete, got {ev:?}"
                )))
            }
        }
    }
    expect_silence(&mut wo, QUIET).await?;
    check_eq!(
        a.list("").await?,
        vec![KvPair::new("k", "a2", rk), KvPair::new("marker", "m", rm)],
        "a's keys after the siblings emptied"
    );
    Ok(())
}

/// Roots are bounded by a segment: a store on root `R` never sees the keys
/// of a store on root `Rb` (whose name merely extends `R`) through `get`,
/// `list("")` or `delete_tree("")`, and the other way round.
pub async fn isolation_root_boundary_is_a_segment(ctx: &Ctx) -> CaseResult {
    let a = ctx.store().await?;
    let b = ctx.store_with_root_suffix("b").await?;
    let rb1 = b.put("k", bytes("b"), PutOptions::new()).await?;
    let rb2 = b.put("x/y", bytes("b"), PutOptions::new()).await?;
    let ra = a.put("k2", bytes("a"), PutOptions::new()).await?;
    let want_b = vec![KvPair::new("k", "b", rb1), KvPair::new("x/y", "b", rb2)];

    check_eq!(a.list("").await?, vec![KvPair::new("k2", "a", ra)]);
    check_eq!(b.list("").await?, want_b);
    check_eq!(a.get("k").await?, None);
    check_eq!(b.get("k2").await?, None);
    check_eq!(a.list("x").await?, Vec::<KvPair>::new());
    check_eq!(a.delete_tree("").await?, 1, "delete_tree(\"\") of R");
    check_eq!(b.list("").await?, want_b);
    let ra2 = a.put("k", bytes("a"), PutOptions::new()).await?;
    check_eq!(b.delete_tree("").await?, 2, "delete_tree(\"\") of Rb");
    check_eq!(a.list("").await?, vec![KvPair::new("k", "a", ra2)]);
    Ok(())
}

/// Keys and prefixes that would climb out of the root (`../x`,
/// `a/../../x`, `../<sibling root>/x`) are `InvalidKey` for every call, and
/// nothing is written in the store's root, its parent root or a sibling
/// root.
pub async fn isolation_dotdot_cannot_escape_root(ctx: &Ctx) -> CaseResult {
    let outer = ctx.store().await?;
    let inner = ctx.open_root(&format!("{}/inner", ctx.root())).await?;
    let sibling = ctx.store_with_root_suffix("-other").await?;
    let last = ctx.root().rsplit('/').next().unwrap_or_default().to_owned();

    let ro = outer
        .put("outer-sentinel", bytes("o"), PutOptions::new())
        .await?;
    let ri = inner
        .put("inner-sentinel", bytes("i"), PutOptions::new())
        .await?;
    let rs = sibling.put("x", bytes("s"), PutOptions::new()).await?;

    let escapes = [
        "../x".to_owned(),
        "a/../../x".to_owned(),
        "../inner/../x".to_owned(),
        "../../x".to_owned(),
        "..".to_owned(),
        "../..".to_owned(),
        "a/..".to_owned(),
        "/../x/".to_owned(),
        format!("../../{last}-other/x"),
        format!("../{last}-other/x"),
    ];
    for store in [&inner, &outer] {
        for key in &escapes {
            escape_refused(store, key, ri)
                .await
                .map_err(|f| context(f, &describe(key)))?;
        }
    }

    check_eq!(
        inner.list("").await?,
        vec![KvPair::new("inner-sentinel", "i", ri)]
    );
    check_eq!(sibling.list("").await?, vec![KvPair::new("x", "s", rs)]);
    check_eq!(outer.get("x").await?, None);
    check_eq!(
        outer.get("outer-sentinel").await?,
        Some(KvPair::new("outer-sentinel", "o", ro))
    );
    // Depending on the backend, R/inner may or may not nest inside R; either
    // way nothing else may appear in R.
    for kv in outer.list("").await? {
        check!(
            kv.key == "outer-sentinel" || kv.key.starts_with("inner/"),
            "root R holds an unexpected key {:?}",
            kv.key
        );
    }
    Ok(())
}

/// Checks that every call refuses an escaping key or prefix.
async fn escape_refused(
    s: &std::sync::Arc<dyn anykv_core::Store>,
    key: &str,
    rev: u64,
) -> CaseResult {
    check_err!(s.get(key).await, InvalidKey);
    check_err!(
        s.put(key, bytes("escaped"), PutOptions::new()).await,
        InvalidKey
    );
    check_err!(s.exists(key).await, InvalidKey);
    check_err!(s.delete(key).await, InvalidKey);
    check_err!(
        s.atomic_put(key, bytes("escaped"), None, PutOptions::new())
            .await,
        InvalidKey
    );
    check_err!(s.atomic_delete(key, rev).await, InvalidKey);
    check_err!(s.list(key).await, InvalidKey);
    check_err!(s.delete_tree(key).await, InvalidKey);
    if s.capabilities().watch {
        check_err!(s.watch(key, WatchOptions::new()).await, InvalidKey);
        check_err!(s.watch_tree(key, WatchOptions::new()).await, InvalidKey);
    }
    Ok(())
}

/// Two independent clients on one root share it: each sees the other's
/// puts (value and revision), deletes, `delete_tree`s and swaps at once,
/// and a write that starts after the other client's write completed gets a
/// larger revision.
pub async fn isolation_two_clients_share_a_root(ctx: &Ctx) -> CaseResult {
    let s1 = ctx.store().await?;
    let s2 = ctx.store().await?;
    let r1 = s1.put("k", bytes("v1"), PutOptions::new()).await?;
    check_eq!(s2.get("k").await?, Some(KvPair::new("k", "v1", r1)));
    let r2 = s2.put("k", bytes("v2"), PutOptions::new()).await?;
    check!(
        r2 > r1,
        "the other client's write: revision {r2} is not above {r1}"
    );
    check_eq!(s1.get("k").await?, Some(KvPair::new("k", "v2", r2)));
    check!(s2.delete("k").await?, "delete returned false");
    check_eq!(s1.get("k").await?, None);
    check!(
        !s1.exists("k").await?,
        "the other client's delete is not seen"
    );

    let rx = s1.put("a/x", bytes("x"), PutOptions::new()).await?;
    let ry = s2.put("a/y", bytes("y"), PutOptions::new()).await?;
    check!(
        ry > rx,
        "the other client's write: revision {ry} is not above {rx}"
    );
    let want = vec![KvPair::new("a/x", "x", rx), KvPair::new("a/y", "y", ry)];
    check_eq!(s1.list("a").await?, want);
    check_eq!(s2.list("a").await?, want);
    check_eq!(s2.delete_tree("a").await?, 2, "delete_tree(\"a\")");
    check_eq!(s1.list("").await?, Vec::<KvPair>::new());

    let r3 = s1
        .atomic_put("c", bytes("1"), None, PutOptions::new())
        .await?;
    check!(r3 > ry, "revision {r3} is not above {ry}");
    check_err!(
        s2.atomic_put("c", bytes("x"), None, PutOptions::new())
            .await,
        KeyExists
    );
    let r4 = s2
        .atomic_put("c", bytes("2"), Some(r3), PutOptions::new())
        .await?;
    check_err!(
        s1.atomic_put("c", bytes("x"), Some(r3), PutOptions::new())
            .await,
        KeyModified
    );
    check_eq!(s1.get("c").await?, Some(KvPair::new("c", "2", r4)));
    s1.atomic_delete("c", r4).await?;
    check_eq!(s2.get("c").await?, None);
    check_eq!(s2.list("").await?, Vec::<KvPair>::new());
    Ok(())
}
