//! Cases: revisions: returned by writes, never 0, strictly increasing per
//! key (across delete and re-create) and across keys.

use anykv_core::{KvPair, PutOptions};

use crate::{bytes, check, check_eq, check_err, CaseResult, Ctx};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_revision {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args revision: [
            revision_returned_by_put,
            revision_increases_per_key,
            revision_increases_across_recreate,
            revision_ordered_across_keys,
            revision_after_delete_tree,
            revision_stable_until_written,
        ] }
    };
}

/// The revision `put` and `atomic_put` return is the one `get` and `list`
/// then carry, and it is never 0.
pub async fn revision_returned_by_put(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("k", bytes("v1"), PutOptions::new()).await?;
    check!(r1 != 0, "put returned revision 0");
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v1", r1)));
    check_eq!(s.list("").await?, vec![KvPair::new("k", "v1", r1)]);

    let r2 = s
        .atomic_put("k", bytes("v2"), Some(r1), PutOptions::new())
        .await?;
    check!(r2 != 0, "atomic_put returned revision 0");
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v2", r2)));

    let r3 = s
        .atomic_put("n", bytes("v3"), None, PutOptions::new())
        .await?;
    check!(r3 != 0, "create-only atomic_put returned revision 0");
    check_eq!(s.get("n").await?, Some(KvPair::new("n", "v3", r3)));
    check_eq!(
        s.list("").await?,
        vec![KvPair::new("k", "v2", r2), KvPair::new("n", "v3", r3)]
    );
    Ok(())
}

/// Each successful write of a key (put or atomic_put) gives it a revision
/// strictly greater than the one before.
pub async fn revision_increases_per_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut last = 0u64;
    for i in 0..20u32 {
        let value = format!("v{i}");
        let rev = if i % 2 == 0 {
            s.put("k", bytes(value.clone()), PutOptions::new()).await?
        } else {
            s.atomic_put("k", bytes(value.clone()), Some(last), PutOptions::new())
                .await?
        };
        check!(rev > last, "write {i}: revision {rev} is not above {last}");
        check_eq!(s.get("k").await?, Some(KvPair::new("k", value, rev)));
        last = rev;
    }
    // Writing the same value again is still a write.
    let same = s.put("k", bytes("v19"), PutOptions::new()).await?;
    check!(
        same > last,
        "rewriting the same value: revision {same} is not above {last}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v19", same)));
    Ok(())
}

/// A key deleted and created again gets a revision strictly greater than
/// any it had before, whichever call deletes (`delete`, `atomic_delete`,
/// `delete_tree`) or creates (`put`, `atomic_put`): no ABA.
pub async fn revision_increases_across_recreate(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("k", bytes("v"), PutOptions::new()).await?;
    let r2 = s.put("k", bytes("v"), PutOptions::new()).await?;
    check!(r2 > r1, "revision {r2} is not above {r1}");
    check!(s.delete("k").await?, "delete returned false");

    let r3 = s.put("k", bytes("v"), PutOptions::new()).await?;
    check!(
        r3 > r2,
        "re-created by put: revision {r3} is not above {r2}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v", r3)));
    s.atomic_delete("k", r3).await?;

    let r4 = s
        .atomic_put("k", bytes("v"), None, PutOptions::new())
        .await?;
    check!(
        r4 > r3,
        "re-created by atomic_put: revision {r4} is not above {r3}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v", r4)));
    check_eq!(s.delete_tree("k").await?, 1, "delete_tree(\"k\")");

    let r5 = s.put("k", bytes("v"), PutOptions::new()).await?;
    check!(
        r5 > r4,
        "re-created after delete_tree: revision {r5} is not above {r4}"
    );
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v", r5)));
    check_eq!(s.list("").await?, vec![KvPair::new("k", "v", r5)]);
    Ok(())
}

/// Sequential writes to different keys (puts, atomic puts, at different
/// depths, with deletes between) get strictly increasing revisions.
pub async fn revision_ordered_across_keys(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut last = 0u64;
    let mut want = Vec::new();
    let keys = ["m", "a", "z/y/x", "b/c", "a/a", "0", "z"];
    for (i, k) in keys.iter().enumerate() {
        let rev = if i % 2 == 0 {
            s.put(k, bytes("v"), PutOptions::new()).await?
        } else {
            s.atomic_put(k, bytes("v"), None, PutOptions::new()).await?
        };
        check!(
            rev > last,
            "write of {k:?}: revision {rev} is not above {last}"
        );
        last = rev;
        want.push(KvPair::new(*k, "v", rev));
        // A delete of another key between writes does not reorder them.
        let scratch = format!("scratch/{i}");
        s.put(&scratch, bytes("x"), PutOptions::new()).await?;
        check!(
            s.delete(&scratch).await?,
            "delete({scratch:?}) returned false"
        );
    }
    want.sort_by(|a, b| a.key.cmp(&b.key));
    check_eq!(s.list("").await?, want);
    Ok(())
}

/// Keys re-created after `delete_tree` (of a prefix, then of the whole
/// root) get revisions greater than any revision seen before, of any key.
pub async fn revision_after_delete_tree(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut max = 0u64;
    for k in ["t", "t/a", "t/b", "t/c/d", "u"] {
        max = max.max(s.put(k, bytes("old"), PutOptions::new()).await?);
    }
    check_eq!(s.delete_tree("t").await?, 4, "delete_tree(\"t\")");
    let mut last = max;
    for k in ["t/a", "t", "t/c/d"] {
        let rev = s.put(k, bytes("new"), PutOptions::new()).await?;
        check!(
            rev > last,
            "re-created {k:?}: revision {rev} is not above {last}"
        );
        check_eq!(s.get(k).await?, Some(KvPair::new(k, "new", rev)));
        last = rev;
    }
    check_eq!(s.delete_tree("").await?, 4, "delete_tree(\"\")");
    for k in ["u", "t/b"] {
        let rev = s
            .atomic_put(k, bytes("newer"), None, PutOptions::new())
            .await?;
        check!(
            rev > last,
            "re-created {k:?}: revision {rev} is not above {last}"
        );
        check_eq!(s.get(k).await?, Some(KvPair::new(k, "newer", rev)));
        last = rev;
    }
    Ok(())
}

/// A key's revision changes only when that key is written: reads, writes
/// and deletes of other keys (its children included) and failed
/// compare-and-swaps leave it as it was.
pub async fn revision_stable_until_written(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r = s.put("k", bytes("v"), PutOptions::new()).await?;
    let want = Some(KvPair::new("k", "v", r));

    check_eq!(s.get("k").await?, want);
    check!(s.exists("k").await?);
    s.list("").await?;
    s.list("k").await?;
    check_eq!(s.get("k").await?, want, "after reads");

    let other = s.put("other", bytes("o"), PutOptions::new()).await?;
    s.put("k/child", bytes("c"), PutOptions::new()).await?;
    check!(s.delete("other").await?, "delete(\"other\") returned false");
    check_eq!(
        s.delete_tree("k/child").await?,
        1,
        "delete_tree(\"k/child\")"
    );
    check_eq!(s.get("k").await?, want, "after writes of other keys");

    check_err!(
        s.atomic_put("k", bytes("x"), None, PutOptions::new()).await,
        KeyExists
    );
    check_err!(
        s.atomic_put("k", bytes("x"), Some(other), PutOptions::new())
            .await,
        KeyModified
    );
    check_err!(s.atomic_delete("k", other).await, KeyModified);
    check_eq!(s.get("k").await?, want, "after failed compare-and-swaps");
    check_eq!(s.list("").await?, vec![KvPair::new("k", "v", r)]);
    Ok(())
}
