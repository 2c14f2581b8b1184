//! Cases: single-key round trips (put, get, exists, delete) and values.

use std::collections::BTreeMap;

use anykv_core::{Bytes, KvPair, PutOptions};

use crate::{bytes, check, check_eq, check_err, CaseResult, Ctx, Failure};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_basic {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args basic: [
            basic_put_get_roundtrip,
            basic_put_replaces_value,
            basic_empty_value_roundtrip,
            basic_binary_value_roundtrip,
            basic_large_value_roundtrip,
            basic_value_up_to_max_size_accepted,
            basic_value_too_large_rejected,
            basic_punctuation_and_unicode_keys,
        ] }
    };
}

/// `put` then `get` returns the exact value and the revision `put` returned;
/// `exists` is true; `delete` returns true, then `get` is `None`, `exists`
/// false and a second `delete` false.
pub async fn basic_put_get_roundtrip(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    check_eq!(s.get("k").await?, None);
    check!(!s.exists("k").await?);
    let rev = s.put("k", bytes("v1"), PutOptions::new()).await?;
    check!(rev > 0, "put returned revision 0");
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v1", rev)));
    check!(s.exists("k").await?);
    check!(
        s.delete("k").await?,
        "delete of a present key returned false"
    );
    check_eq!(s.get("k").await?, None);
    check!(!s.exists("k").await?);
    check!(
        !s.delete("k").await?,
        "delete of an absent key returned true"
    );
    Ok(())
}

/// `put` on a present key replaces its value and gives it a larger
/// revision; the key stays one key (`list("")` holds it once, with the new
/// value and revision).
pub async fn basic_put_replaces_value(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("k", bytes("first"), PutOptions::new()).await?;
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "first", r1)));
    let r2 = s.put("k", bytes("second"), PutOptions::new()).await?;
    check!(
        r2 > r1,
        "the replacing put's revision {r2} is not above {r1}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "second", r2)));
    check_eq!(s.list("").await?, vec![KvPair::new("k", "second", r2)]);
    // A shorter value replaces a longer one completely (no stale tail).
    let r3 = s.put("k", bytes("3"), PutOptions::new()).await?;
    check!(
        r3 > r2,
        "the replacing put's revision {r3} is not above {r2}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "3", r3)));
    check_eq!(s.list("").await?, vec![KvPair::new("k", "3", r3)]);
    Ok(())
}

/// The empty value is a value: the key exists, `get` returns it with an
/// empty value (not `None`), `list` includes it, and it can replace and be
/// replaced by a non-empty value.
pub async fn basic_empty_value_roundtrip(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("e", Bytes::new(), PutOptions::new()).await?;
    check!(r1 > 0, "put returned revision 0");
    check_eq!(s.get("e").await?, Some(KvPair::new("e", Bytes::new(), r1)));
    check!(
        s.exists("e").await?,
        "a key with an empty value does not exist"
    );
    check_eq!(s.list("").await?, vec![KvPair::new("e", Bytes::new(), r1)]);

    let r2 = s.put("e", bytes("full"), PutOptions::new()).await?;
    check_eq!(s.get("e").await?, Some(KvPair::new("e", "full", r2)));
    let r3 = s.put("e", Bytes::new(), PutOptions::new()).await?;
    check!(r3 > r2, "revision {r3} is not above {r2}");
    check_eq!(s.get("e").await?, Some(KvPair::new("e", Bytes::new(), r3)));

    // Create-only and compare-and-swap with empty values.
    let r4 = s
        .atomic_put("f", Bytes::new(), None, PutOptions::new())
        .await?;
    check_eq!(s.get("f").await?, Some(KvPair::new("f", Bytes::new(), r4)));
    let r5 = s
        .atomic_put("e", Bytes::new(), Some(r3), PutOptions::new())
        .await?;
    check!(r5 > r3, "revision {r5} is not above {r3}");
    check_eq!(
        s.list("").await?,
        vec![
            KvPair::new("e", Bytes::new(), r5),
            KvPair::new("f", Bytes::new(), r4),
        ]
    );
    check!(
        s.delete("e").await?,
        "delete of an empty-valued key returned false"
    );
    check_eq!(s.get("e").await?, None);
    Ok(())
}

/// Arbitrary bytes round-trip exactly: every byte value 0 to 255, invalid
/// UTF-8, NUL bytes at either end; through `get` and `list`.
pub async fn basic_binary_value_roundtrip(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let values: Vec<(&str, Bytes)> = vec![
        ("all-bytes", Bytes::from((0..=255u8).collect::<Vec<u8>>())),
        (
            "all-bytes-reversed",
            Bytes::from((0..=255u8).rev().collect::<Vec<u8>>()),
        ),
        (
            "invalid-utf8",
            Bytes::from(vec![
                0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc, 0xff, 0xfe, 0xc0,
                0xaf, 0xed, 0xa0, 0x80, 0x80,
            ]),
        ),
        ("nul-ends", Bytes::from(vec![0u8, b'x', 0, 0])),
        ("nul-only", Bytes::from(vec![0u8])),
        ("crlf", Bytes::from_static(b"\r\n\r\n\x1b[0m\x7f")),
    ];
    let mut want = Vec::new();
    for (k, v) in &values {
        let rev = s.put(k, v.clone(), PutOptions::new()).await?;
        want.push(KvPair::new(*k, v.clone(), rev));
    }
    for kv in &want {
        check_eq!(s.get(&kv.key).await?, Some(kv.clone()));
    }
    want.sort_by(|a, b| a.key.cmp(&b.key));
    check_eq!(s.list("").await?, want);
    Ok(())
}

/// A value of exactly 1,000,000 bytes (a pattern, not zeros) is stored and
/// read back byte for byte, through `get` and `list`, and can be replaced by
/// another value of that size. `Capabilities::max_value_size` is at least
/// 1,000,000.
pub async fn basic_large_value_roundtrip(ctx: &Ctx) -> CaseResult {
    const SIZE: usize = 1_000_000;
    let s = ctx.store().await?;
    let max = s.capabilities().max_value_size;
    check!(
        max >= SIZE,
        "capabilities say max_value_size = {max}; every backend must store {SIZE} bytes"
    );
    let v1 = pattern(SIZE, 0);
    let r1 = s.put("big", v1.clone(), PutOptions::new()).await?;
    let got = s.get("big").await?;
    same_pair(got.as_ref(), "big", &v1, r1)?;

    let v2 = pattern(SIZE, 0x5a);
    let r2 = s
        .atomic_put("big", v2.clone(), Some(r1), PutOptions::new())
        .await?;
    check!(r2 > r1, "revision {r2} is not above {r1}");
    let got = s.get("big").await?;
    same_pair(got.as_ref(), "big", &v2, r2)?;
    let listed = s.list("").await?;
    check_eq!(listed.len(), 1, "list(\"\") length");
    same_pair(listed.first(), "big", &v2, r2)?;
    Ok(())
}

/// A value as large as `Capabilities::max_value_size` says (capped at
/// 32 MiB to keep the suite's memory bounded) is accepted and read back
/// byte for byte: the advertised maximum is real.
pub async fn basic_value_up_to_max_size_accepted(ctx: &Ctx) -> CaseResult {
    const CAP: usize = 32 * 1024 * 1024;
    let s = ctx.store().await?;
    let size = s.capabilities().max_value_size.min(CAP);
    let v = pattern(size, 0x33);
    let rev = s.put("max", v.clone(), PutOptions::new()).await?;
    let got = s.get("max").await?;
    same_pair(got.as_ref(), "max", &v, rev)?;
    Ok(())
}

/// A value one byte larger than `Capabilities::max_value_size` fails with
/// `ValueTooLarge` for `put` and `atomic_put`, on an absent and on a present
/// key; nothing is written: the absent key stays absent, the present key
/// keeps its old value and revision.
pub async fn basic_value_too_large_rejected(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let max = s.capabilities().max_value_size;
    let Some(len) = max.checked_add(1) else {
        return Err(Failure::failed(
            "capabilities say max_value_size = usize::MAX, which is not a real maximum",
        ));
    };
    let r = s.put("old", bytes("old value"), PutOptions::new()).await?;
    let big = Bytes::from(vec![0xa5u8; len]);

    check_err!(
        s.put("old", big.clone(), PutOptions::new()).await,
        ValueTooLarge
    );
    check_err!(
        s.put("new", big.clone(), PutOptions::new()).await,
        ValueTooLarge
    );
    check_err!(
        s.atomic_put("old", big.clone(), Some(r), PutOptions::new())
            .await,
        ValueTooLarge
    );
    check_err!(
        s.atomic_put("new", big.clone(), None, PutOptions::new())
            .await,
        ValueTooLarge
    );

    check_eq!(
        s.get("old").await?,
        Some(KvPair::new("old", "old value", r))
    );
    check_eq!(s.get("new").await?, None);
    check!(!s.exists("new").await?, "a rejected value created its key");
    check_eq!(s.list("").await?, vec![KvPair::new("old", "old value", r)]);
    // The store still works, and the old revision is still current.
    let r2 = s
        .atomic_put("old", bytes("small"), Some(r), PutOptions::new())
        .await?;
    check!(r2 > r, "revision {r2} is not above {r}");
    check_eq!(s.get("old").await?, Some(KvPair::new("old", "small", r2)));
    Ok(())
}

/// Glob, regex and URL characters, backslashes, spaces and emoji are
/// ordinary characters: each such key is a separate key that round-trips,
/// `list("")` returns exactly them sorted by key, a prefix containing `*`,
/// `?`, `[ab]` or `%` matches only its own tree, `delete("a*")` leaves
/// `ab`, and `delete_tree("*")` deletes only `*` and `*/...`.
pub async fn basic_punctuation_and_unicode_keys(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let keys = [
        "*",
        "*/c",
        "?",
        "[",
        "]",
        "[ab]",
        "[ab]/q",
        "a/q",
        "b/q",
        "%",
        "%/p",
        "%2F",
        "%s%d",
        ":",
        "\\",
        "a",
        "a*",
        "a*/child",
        "a?",
        "ab",
        "ab/c",
        "aX/c",
        "a[b]",
        "back\\slash",
        "c:d",
        "with space",
        " lead",
        "trail ",
        "a b/c d",
        "x?y/z",
        "xzy/w",
        "🦀",
        "crab/🦀/deep",
        "日本語/キー",
        "a.b",
        "a+b",
        "a|b",
        "(a)",
        "{a}",
        "^$",
        "~",
        "#",
        "&=",
        "'\"",
    ];
    let mut model: BTreeMap<String, KvPair> = BTreeMap::new();
    for k in keys {
        let rev = s
            .put(k, bytes(format!("value of {k}")), PutOptions::new())
            .await?;
        model.insert(k.to_owned(), KvPair::new(k, format!("value of {k}"), rev));
    }
    for kv in model.values() {
        check_eq!(s.get(&kv.key).await?, Some(kv.clone()), "get({:?})", kv.key);
        check!(s.exists(&kv.key).await?, "exists({:?}) is false", kv.key);
    }
    check_eq!(s.list("").await?, all(&model));

    check_eq!(s.list("a*").await?, tree(&model, "a*"));
    check_eq!(tree(&model, "a*").len(), 1);
    check_eq!(s.list("x?y").await?, tree(&model, "x?y"));
    check_eq!(s.list("[ab]").await?, tree(&model, "[ab]"));
    check_eq!(s.list("%").await?, tree(&model, "%"));
    check_eq!(s.list("*").await?, tree(&model, "*"));
    check_eq!(s.list("crab/🦀").await?, tree(&model, "crab/🦀"));
    check_eq!(s.list("a b").await?, tree(&model, "a b"));
    check_eq!(s.list("?").await?, Vec::<KvPair>::new());

    check!(s.delete("a*").await?, "delete(\"a*\") returned false");
    model.remove("a*");
    check!(s.delete("?").await?, "delete(\"?\") returned false");
    model.remove("?");
    check_eq!(s.get("a*").await?, None);
    check_eq!(s.get("ab").await?, model.get("ab").cloned());
    check_eq!(s.get("a?").await?, model.get("a?").cloned());
    check_eq!(s.list("").await?, all(&model));

    check_eq!(s.delete_tree("*").await?, 2, "delete_tree(\"*\")");
    model.remove("*");
    model.remove("*/c");
    check_eq!(s.delete_tree("%").await?, 2, "delete_tree(\"%\")");
    model.remove("%");
    model.remove("%/p");
    check_eq!(s.list("").await?, all(&model));
    Ok(())
}

/// Every pair of the model, sorted by key.
fn all(model: &BTreeMap<String, KvPair>) -> Vec<KvPair> {
    model.values().cloned().collect()
}

/// The pairs of the model under `prefix/`, sorted by key.
fn tree(model: &BTreeMap<String, KvPair>, prefix: &str) -> Vec<KvPair> {
    model
        .values()
        .filter(|kv| anykv_core::key::is_in_tree(prefix, &kv.key))
        .cloned()
        .collect()
}

/// `len` bytes of a pattern that is neither constant nor periodic in 256.
pub(crate) fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// Checks a (large) pair exactly without printing its whole value.
fn same_pair(got: Option<&KvPair>, key: &str, value: &Bytes, revision: u64) -> CaseResult {
    let Some(got) = got else {
        return Err(Failure::failed(format!("{key:?} is absent")));
    };
    check_eq!(
        (got.key.as_str(), got.revision, got.value.len()),
        (key, revision, value.len()),
        "(key, revision, value length)"
    );
    if let Some(i) = got.value.iter().zip(value.iter()).position(|(a, b)| a != b) {
        return Err(Failure::failed(format!(
            "the value of {key:?} differs at byte {i}: {} != {}",
            got.value[i], value[i]
        )));
    }
    Ok(())
}
