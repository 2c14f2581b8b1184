//! Cases: the key rules: canonical forms, validation of keys and prefixes,
//! the length limit, and the independence of a key and its children.

use std::sync::Arc;

use anykv_core::{KvPair, LockOptions, PutOptions, Store, WatchOptions};

use crate::{
    bytes, check, check_eq, check_err, read_initial, CaseResult, Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_keys {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args keys: [
            keys_canonical_forms,
            keys_invalid_rejected,
            keys_invalid_rejected_by_watch,
            keys_invalid_rejected_by_lock,
            keys_invalid_prefixes_rejected,
            keys_invalid_prefixes_rejected_by_watch_tree,
            keys_length_limit,
            keys_key_and_child_independent,
        ] }
    };
}

/// Single keys that every backend rejects with `InvalidKey`: empty, empty
/// segments, `.` and `..` segments, control characters, private-use and
/// U+FFF0..U+FFFF characters, and a canonical form over 4096 bytes.
pub(crate) fn invalid_keys() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "/",
        "//",
        "///",
        "a//b",
        "//a",
        "a//",
        "/a//",
        ".",
        "..",
        "/./",
        "a/./b",
        "a/../b",
        "./a",
        "../a",
        "a/.",
        "a/..",
        "a\u{0}b",
        "\u{0}",
        "a\u{1}",
        "a\nb",
        "a\tb",
        "a\rb",
        "a\u{1b}b",
        "a\u{1f}b",
        "a\u{7f}b",
        "a\u{80}b",
        "a\u{85}b",
        "a\u{9f}b",
        "a\u{e000}b",
        "a\u{f8ff}b",
        "\u{e123}",
        "a\u{fff0}b",
        "a\u{fffd}b\u{ffff}",
        "a\u{ffff}b",
        "ok/\u{0}/ok",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(4097));
    v.push(format!("/{}/", "y".repeat(4097)));
    v.push(format!("{}/{}", "a".repeat(2048), "b".repeat(2048)));
    v
}

/// Prefixes that every backend rejects with `InvalidKey` (the empty prefix
/// and `/` are valid: the whole root; so is `//`, which is `/` plus the one
/// trailing `/` the canonical form strips).
pub(crate) fn invalid_prefixes() -> Vec<String> {
    let mut v: Vec<String> = [
        "///",
        "a//b",
        "//a",
        "a//",
        ".",
        "..",
        "a/./b",
        "a/../b",
        "../a",
        "a/..",
        "a\u{0}",
        "\u{0}",
        "a\u{1f}",
        "a\u{7f}",
        "a\u{85}",
        "a\u{9f}",
        "\u{e000}",
        "a\u{f8ff}",
        "\u{fff0}",
        "a\u{ffff}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(4097));
    v
}

/// A short, printable description of a key for failure messages.
pub(crate) fn describe(key: &str) -> String {
    if key.len() > 40 {
        format!("a key of {} bytes", key.len())
    } else {
        format!("{key:?}")
    }
}

/// Fails unless `result` is an `InvalidKey` error.
fn expect_invalid<T>(result: anykv_core::Result<T>) -> CaseResult {
    check_err!(result, InvalidKey);
    Ok(())
}

/// Prefixes a failure's message with what was being done.
pub(crate) fn context(failure: Failure, what: &str) -> Failure {
    match failure {
        Failure::Failed(m) => Failure::Failed(format!("{what}: {m}")),
        other => other,
    }
}

/// `/a/b/`, `/a/b`, `a/b/` and `a/b` are one key: whichever form writes,
/// every form reads the same pair, results carry `a/b`, and `list`,
/// `atomic_put`, `atomic_delete`, `delete` and `delete_tree` accept every
/// form. `list("/a/")` is `list("a")`.
pub async fn keys_canonical_forms(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let forms = ["/a/b/", "/a/b", "a/b/", "a/b"];
    let r1 = s.put("/a/b/", bytes("v1"), PutOptions::new()).await?;
    for f in forms {
        check_eq!(
            s.get(f).await?,
            Some(KvPair::new("a/b", "v1", r1)),
            "get({f:?})"
        );
        check!(s.exists(f).await?, "exists({f:?}) is false");
    }
    let mut rev = r1;
    for (i, f) in forms.iter().enumerate() {
        let value = format!("v{}", i + 2);
        let r = s.put(f, bytes(value.clone()), PutOptions::new()).await?;
        check!(r > rev, "put({f:?}): revision {r} is not above {rev}");
        rev = r;
        check_eq!(s.list("").await?, vec![KvPair::new("a/b", value, r)]);
    }
    let want = vec![KvPair::new("a/b", "v5", rev)];
    for p in ["a", "/a", "a/", "/a/"] {
        check_eq!(s.list(p).await?, want, "list({p:?})");
    }
    check_eq!(s.list("/").await?, want, "list(\"/\")");

    // Compare-and-swap through other forms.
    check_err!(
        s.atomic_put("a/b/", bytes("x"), None, PutOptions::new())
            .await,
        KeyExists
    );
    let r2 = s
        .atomic_put("/a/b", bytes("v6"), Some(rev), PutOptions::new())
        .await?;
    check_eq!(s.get("a/b").await?, Some(KvPair::new("a/b", "v6", r2)));
    s.atomic_delete("a/b/", r2).await?;
    check_eq!(s.get("/a/b/").await?, None);
    let r3 = s
        .atomic_put("/a/b/", bytes("v7"), None, PutOptions::new())
        .await?;
    check_eq!(s.list("").await?, vec![KvPair::new("a/b", "v7", r3)]);
    check!(s.delete("/a/b").await?, "delete(\"/a/b\") returned false");
    check_eq!(s.get("a/b").await?, None);

    // delete_tree through a non-canonical prefix.
    let rc = s.put("/c/", bytes("c"), PutOptions::new()).await?;
    s.put("c/d/e/", bytes("e"), PutOptions::new()).await?;
    check_eq!(s.get("c").await?, Some(KvPair::new("c", "c", rc)));
    check_eq!(s.delete_tree("/c/").await?, 2, "delete_tree(\"/c/\")");
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// Every invalid key is refused with `InvalidKey` by `get`, `put`,
/// `delete`, `exists`, `atomic_put` (create and swap) and `atomic_delete`,
/// and nothing is written: afterwards `list("")` holds only the key written
/// before.
pub async fn keys_invalid_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let rs = s.put("sentinel", bytes("s"), PutOptions::new()).await?;
    for key in invalid_keys() {
        reject_kv_ops(&s, &key, rs)
            .await
            .map_err(|f| context(f, &describe(&key)))?;
    }
    check_eq!(s.list("").await?, vec![KvPair::new("sentinel", "s", rs)]);
    check_eq!(s.list("/").await?, vec![KvPair::new("sentinel", "s", rs)]);
    Ok(())
}

/// Checks that every single-key read and write refuses `key`.
async fn reject_kv_ops(s: &Arc<dyn Store>, key: &str, rev: u64) -> CaseResult {
    check_err!(s.get(key).await, InvalidKey);
    check_err!(s.put(key, bytes("v"), PutOptions::new()).await, InvalidKey);
    check_err!(s.delete(key).await, InvalidKey);
    check_err!(s.exists(key).await, InvalidKey);
    check_err!(
        s.atomic_put(key, bytes("v"), None, PutOptions::new()).await,
        InvalidKey
    );
    check_err!(
        s.atomic_put(key, bytes("v"), Some(rev), PutOptions::new())
            .await,
        InvalidKey
    );
    check_err!(s.atomic_delete(key, rev).await, InvalidKey);
    Ok(())
}

/// Every invalid key is refused by `watch` with `InvalidKey`; a valid key
/// on the same store still watches (its initial state arrives).
pub async fn keys_invalid_rejected_by_watch(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let r = s.put("ok", bytes("v"), PutOptions::new()).await?;
    for key in invalid_keys() {
        let result = s.watch(&key, WatchOptions::new()).await;
        expect_invalid(result).map_err(|f| context(f, &format!("watch({})", describe(&key))))?;
    }
    let mut w = s.watch("ok", WatchOptions::new()).await?;
    let (init, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(init, vec![KvPair::new("ok", "v", r)]);
    check_eq!(s.list("").await?, vec![KvPair::new("ok", "v", r)]);
    Ok(())
}

/// Every invalid key is refused by `lock` and `try_lock` with `InvalidKey`;
/// a valid lock on the same store still works, and no lock bookkeeping
/// shows in `list("")`.
pub async fn keys_invalid_rejected_by_lock(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().locks, "locks")?;
    let r = s.put("ok", bytes("v"), PutOptions::new()).await?;
    let opts = LockOptions::new().with_timeout(SLACK);
    for key in invalid_keys() {
        let locked = s.lock(&key, opts.clone()).await;
        expect_invalid(locked).map_err(|f| context(f, &format!("lock({})", describe(&key))))?;
        let tried = s.try_lock(&key, opts.clone()).await;
        expect_invalid(tried).map_err(|f| context(f, &format!("try_lock({})", describe(&key))))?;
    }
    let guard = s.try_lock("ok", opts).await?;
    let Some(guard) = guard else {
        return Err(Failure::failed("try_lock(\"ok\") of a free lock gave None"));
    };
    check_eq!(s.list("").await?, vec![KvPair::new("ok", "v", r)]);
    guard.release().await?;
    check_eq!(s.list("").await?, vec![KvPair::new("ok", "v", r)]);
    Ok(())
}

/// Invalid prefixes (empty segments, `.`/`..`, control and reserved
/// characters, over 4096 bytes) are refused with `InvalidKey` by `list` and
/// `delete_tree`, and `delete_tree` deletes nothing (`a//b` does not reach
/// `a/b`). `""` and `"/"` are valid and mean the whole root.
pub async fn keys_invalid_prefixes_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut want = Vec::new();
    for k in ["a", "a/b", "a/b/c", "x"] {
        let r = s.put(k, bytes(k), PutOptions::new()).await?;
        want.push(KvPair::new(k, k, r));
    }
    for prefix in invalid_prefixes() {
        let listed = s.list(&prefix).await;
        expect_invalid(listed).map_err(|f| context(f, &format!("list({})", describe(&prefix))))?;
        let deleted = s.delete_tree(&prefix).await;
        expect_invalid(deleted)
            .map_err(|f| context(f, &format!("delete_tree({})", describe(&prefix))))?;
    }
    check_eq!(s.list("").await?, want);
    check_eq!(s.list("/").await?, want);
    check_eq!(s.delete_tree("/").await?, 4, "delete_tree(\"/\")");
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// Invalid prefixes are refused by `watch_tree` with `InvalidKey`; `""` and
/// `"/"` are valid and watch the whole root.
pub async fn keys_invalid_prefixes_rejected_by_watch_tree(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    ctx.require(s.capabilities().watch, "watch")?;
    let ra = s.put("a/b", bytes("1"), PutOptions::new()).await?;
    let rx = s.put("x", bytes("2"), PutOptions::new()).await?;
    for prefix in invalid_prefixes() {
        let result = s.watch_tree(&prefix, WatchOptions::new()).await;
        expect_invalid(result)
            .map_err(|f| context(f, &format!("watch_tree({})", describe(&prefix))))?;
    }
    let want = vec![KvPair::new("a/b", "1", ra), KvPair::new("x", "2", rx)];
    for p in ["", "/"] {
        let mut w = s.watch_tree(p, WatchOptions::new()).await?;
        let (init, _) = read_initial(&mut w, EVENT_TIMEOUT).await?;
        check_eq!(init, want, "watch_tree({p:?}) initial state");
    }
    Ok(())
}

/// A key of exactly 4096 bytes (canonical form; multi-byte characters
/// count in bytes) works for every operation, with or without a leading
/// and trailing `/`; 4097 bytes is `InvalidKey` and writes nothing.
pub async fn keys_length_limit(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let k4096 = format!("{}/{}", "a".repeat(2047), "b".repeat(2048));
    let emoji4096 = "🦀".repeat(1024);
    let k4097 = format!("{}/{}", "a".repeat(2048), "b".repeat(2048));
    let emoji4097 = format!("{emoji4096}x");
    check_eq!((k4096.len(), emoji4096.len()), (4096, 4096));

    let r1 = s.put(&k4096, bytes("long"), PutOptions::new()).await?;
    let r2 = s.put(&emoji4096, bytes("crabs"), PutOptions::new()).await?;
    check_eq!(
        s.get(&k4096).await?,
        Some(KvPair::new(k4096.clone(), "long", r1))
    );
    check_eq!(
        s.get(&format!("/{k4096}/")).await?,
        Some(KvPair::new(k4096.clone(), "long", r1))
    );
    check_eq!(
        s.get(&emoji4096).await?,
        Some(KvPair::new(emoji4096.clone(), "crabs", r2))
    );
    check!(s.exists(&k4096).await?, "the 4096-byte key does not exist");
    let mut want = vec![
        KvPair::new(k4096.clone(), "long", r1),
        KvPair::new(emoji4096.clone(), "crabs", r2),
    ];
    want.sort_by(|a, b| a.key.cmp(&b.key));
    check_eq!(s.list("").await?, want);
    check_eq!(
        s.list(&"a".repeat(2047)).await?,
        vec![KvPair::new(k4096.clone(), "long", r1)]
    );

    for long in [&k4097, &emoji4097] {
        check_err!(s.put(long, bytes("x"), PutOptions::new()).await, InvalidKey);
        check_err!(s.get(long).await, InvalidKey);
        check_err!(
            s.atomic_put(long, bytes("x"), None, PutOptions::new())
                .await,
            InvalidKey
        );
        check_err!(s.list(long).await, InvalidKey);
    }
    check_eq!(s.list("").await?, want);

    let r3 = s
        .atomic_put(&k4096, bytes("cas"), Some(r1), PutOptions::new())
        .await?;
    s.atomic_delete(&k4096, r3).await?;
    check!(
        s.delete(&emoji4096).await?,
        "delete of the emoji key returned false"
    );
    check_eq!(s.list("").await?, Vec::<KvPair>::new());
    Ok(())
}

/// `a` and `a/b` are independent keys: putting `a/b` does not make `a`
/// exist (nor show it in `list`), deleting `a` leaves `a/b`, deleting `a/b`
/// leaves `a`, and `delete("a")` is false when only `a/b` exists.
pub async fn keys_key_and_child_independent(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let rab = s.put("a/b", bytes("child"), PutOptions::new()).await?;
    check_eq!(s.get("a").await?, None);
    check!(!s.exists("a").await?, "putting a/b made a exist");
    check_eq!(s.list("").await?, vec![KvPair::new("a/b", "child", rab)]);
    check!(
        !s.delete("a").await?,
        "delete(\"a\") was true though only a/b exists"
    );
    check_eq!(s.get("a/b").await?, Some(KvPair::new("a/b", "child", rab)));

    // Create-only on the parent works: it is absent.
    let ra = s
        .atomic_put("a", bytes("parent"), None, PutOptions::new())
        .await?;
    check_eq!(s.get("a").await?, Some(KvPair::new("a", "parent", ra)));
    check_eq!(
        s.list("").await?,
        vec![
            KvPair::new("a", "parent", ra),
            KvPair::new("a/b", "child", rab)
        ]
    );
    check_eq!(s.list("a").await?, vec![KvPair::new("a/b", "child", rab)]);

    check!(s.delete("a").await?, "delete(\"a\") returned false");
    check_eq!(s.get("a").await?, None);
    check_eq!(s.get("a/b").await?, Some(KvPair::new("a/b", "child", rab)));
    check_eq!(s.list("").await?, vec![KvPair::new("a/b", "child", rab)]);

    let ra2 = s.put("a", bytes("again"), PutOptions::new()).await?;
    check!(s.delete("a/b").await?, "delete(\"a/b\") returned false");
    check_eq!(s.get("a").await?, Some(KvPair::new("a", "again", ra2)));
    check_eq!(s.list("a").await?, Vec::<KvPair>::new());
    check_eq!(s.list("").await?, vec![KvPair::new("a", "again", ra2)]);

    // A deep key alone: none of its ancestors exist.
    let rdeep = s.put("x/y/z/w", bytes("deep"), PutOptions::new()).await?;
    for k in ["x", "x/y", "x/y/z"] {
        check!(!s.exists(k).await?, "putting x/y/z/w made {k} exist");
        check_eq!(s.get(k).await?, None, "get({k:?})");
    }
    check_eq!(
        s.list("x").await?,
        vec![KvPair::new("x/y/z/w", "deep", rdeep)]
    );
    // Deleting the deep key leaves no ancestor behind.
    check!(
        s.delete("x/y/z/w").await?,
        "delete of the deep key returned false"
    );
    check_eq!(s.list("").await?, vec![KvPair::new("a", "again", ra2)]);
    Ok(())
}
