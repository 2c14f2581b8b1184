//! Cases: compare-and-swap (`atomic_put`) and compare-and-delete
//! (`atomic_delete`), including the ABA case.

use anykv_core::{Error, KvPair, PutOptions};

use crate::{bytes, check, check_eq, check_err, CaseResult, Ctx};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_atomic {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args atomic: [
            atomic_put_create_only,
            atomic_put_replace_current,
            atomic_put_stale_revision,
            atomic_put_missing_key,
            atomic_delete_current,
            atomic_delete_stale_revision,
            atomic_delete_missing_key,
            atomic_put_old_revision_after_recreate,
        ] }
    };
}

/// Fails unless the error's message names the key.
fn names_key(e: &Error, key: &str) -> CaseResult {
    let message = e.to_string();
    check!(
        message.contains(key),
        "the error message {message:?} does not name the key {key:?}"
    );
    Ok(())
}

/// `atomic_put(key, v, None)` creates an absent key and returns its
/// revision; on a present key it fails with `KeyExists` (naming the key)
/// and leaves value and revision unchanged.
pub async fn atomic_put_create_only(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s
        .atomic_put("cas/k", bytes("v1"), None, PutOptions::new())
        .await?;
    check!(r1 > 0, "atomic_put returned revision 0");
    check_eq!(s.get("cas/k").await?, Some(KvPair::new("cas/k", "v1", r1)));

    let e = check_err!(
        s.atomic_put("cas/k", bytes("v2"), None, PutOptions::new())
            .await,
        KeyExists
    );
    names_key(&e, "cas/k")?;
    check_eq!(s.get("cas/k").await?, Some(KvPair::new("cas/k", "v1", r1)));

    // A key created by a plain put is present too.
    let r2 = s.put("cas/p", bytes("p"), PutOptions::new()).await?;
    check_err!(
        s.atomic_put("cas/p", bytes("x"), None, PutOptions::new())
            .await,
        KeyExists
    );
    // A child of a present key is a different, absent key.
    let r3 = s
        .atomic_put("cas/k/child", bytes("c"), None, PutOptions::new())
        .await?;
    check_eq!(
        s.list("").await?,
        vec![
            KvPair::new("cas/k", "v1", r1),
            KvPair::new("cas/k/child", "c", r3),
            KvPair::new("cas/p", "p", r2),
        ]
    );
    Ok(())
}

/// `atomic_put(key, v, Some(current))` replaces the value and returns a
/// larger revision, which the next swap can use in turn.
pub async fn atomic_put_replace_current(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let mut rev = s.put("cas/k", bytes("v0"), PutOptions::new()).await?;
    for i in 1..=5 {
        let value = format!("v{i}");
        let next = s
            .atomic_put("cas/k", bytes(value.clone()), Some(rev), PutOptions::new())
            .await?;
        check!(next > rev, "swap {i}: revision {next} is not above {rev}");
        check_eq!(
            s.get("cas/k").await?,
            Some(KvPair::new("cas/k", value, next))
        );
        rev = next;
    }
    check_eq!(s.list("").await?, vec![KvPair::new("cas/k", "v5", rev)]);
    Ok(())
}

/// `atomic_put` with a revision the present key no longer has (an older
/// one, a future one, or 0) fails with `KeyModified` (naming the key) and
/// leaves value and revision unchanged.
pub async fn atomic_put_stale_revision(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("cas/k", bytes("v1"), PutOptions::new()).await?;
    let r2 = s.put("cas/k", bytes("v2"), PutOptions::new()).await?;
    let want = Some(KvPair::new("cas/k", "v2", r2));
    for stale in [r1, r2 + 1_000_000, 0] {
        let e = check_err!(
            s.atomic_put("cas/k", bytes("v3"), Some(stale), PutOptions::new())
                .await,
            KeyModified
        );
        names_key(&e, "cas/k")?;
        check_eq!(
            s.get("cas/k").await?,
            want,
            "after a swap expecting {stale}"
        );
    }
    check_eq!(s.list("").await?, vec![KvPair::new("cas/k", "v2", r2)]);
    Ok(())
}

/// `atomic_put(key, v, Some(rev))` on an absent key fails with
/// `KeyNotFound` (naming the key), whatever `rev` is (another key's
/// revision, 0, the maximum), and writes nothing.
pub async fn atomic_put_missing_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let other = s.put("cas/other", bytes("o"), PutOptions::new()).await?;
    for rev in [other, 0, u64::MAX] {
        let e = check_err!(
            s.atomic_put("cas/k", bytes("v"), Some(rev), PutOptions::new())
                .await,
            KeyNotFound
        );
        names_key(&e, "cas/k")?;
        check_eq!(s.get("cas/k").await?, None, "after a swap expecting {rev}");
    }
    check!(!s.exists("cas/k").await?, "a failed swap created the key");
    check_eq!(
        s.list("").await?,
        vec![KvPair::new("cas/other", "o", other)]
    );
    Ok(())
}

/// `atomic_delete(key, current)` deletes the key; a re-created key can be
/// compare-and-deleted with its new revision. Other keys stay.
pub async fn atomic_delete_current(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r = s.put("cas/k", bytes("v"), PutOptions::new()).await?;
    let ro = s.put("cas/other", bytes("o"), PutOptions::new()).await?;
    s.atomic_delete("cas/k", r).await?;
    check_eq!(s.get("cas/k").await?, None);
    check!(
        !s.exists("cas/k").await?,
        "the key exists after atomic_delete"
    );
    check_eq!(s.list("").await?, vec![KvPair::new("cas/other", "o", ro)]);

    let r2 = s
        .atomic_put("cas/k", bytes("again"), None, PutOptions::new())
        .await?;
    check_eq!(
        s.get("cas/k").await?,
        Some(KvPair::new("cas/k", "again", r2))
    );
    s.atomic_delete("cas/k", r2).await?;
    check_eq!(s.get("cas/k").await?, None);
    check_eq!(s.list("").await?, vec![KvPair::new("cas/other", "o", ro)]);
    Ok(())
}

/// `atomic_delete` with a revision the present key no longer has (older,
/// future, 0) fails with `KeyModified` (naming the key); the key stays
/// with its value and revision.
pub async fn atomic_delete_stale_revision(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("cas/k", bytes("v1"), PutOptions::new()).await?;
    let r2 = s.put("cas/k", bytes("v2"), PutOptions::new()).await?;
    let want = Some(KvPair::new("cas/k", "v2", r2));
    for stale in [r1, r2 + 1_000_000, 0] {
        let e = check_err!(s.atomic_delete("cas/k", stale).await, KeyModified);
        names_key(&e, "cas/k")?;
        check_eq!(
            s.get("cas/k").await?,
            want,
            "after a delete expecting {stale}"
        );
    }
    check_eq!(s.list("").await?, vec![KvPair::new("cas/k", "v2", r2)]);
    Ok(())
}

/// `atomic_delete` of an absent key (never written, or deleted) fails with
/// `KeyNotFound` (naming the key), whatever revision it expects (0 too),
/// and touches nothing else.
pub async fn atomic_delete_missing_key(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let ro = s.put("cas/other", bytes("o"), PutOptions::new()).await?;
    for rev in [ro, 0, u64::MAX] {
        let e = check_err!(s.atomic_delete("cas/k", rev).await, KeyNotFound);
        names_key(&e, "cas/k")?;
    }
    let r = s.put("cas/k", bytes("v"), PutOptions::new()).await?;
    check!(s.delete("cas/k").await?, "delete returned false");
    check_err!(s.atomic_delete("cas/k", r).await, KeyNotFound);
    check_eq!(s.get("cas/k").await?, None);
    check_eq!(s.list("").await?, vec![KvPair::new("cas/other", "o", ro)]);
    Ok(())
}

/// The ABA case: after a key is deleted and re-created, a swap or
/// compare-and-delete expecting its revision from before the delete fails
/// with `KeyModified`, and the re-created pair stays.
pub async fn atomic_put_old_revision_after_recreate(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    let r1 = s.put("cas/k", bytes("v1"), PutOptions::new()).await?;
    check!(s.delete("cas/k").await?, "delete returned false");
    let r2 = s.put("cas/k", bytes("v2"), PutOptions::new()).await?;
    check!(r2 > r1, "re-created: revision {r2} is not above {r1}");
    let want = Some(KvPair::new("cas/k", "v2", r2));
    check_err!(
        s.atomic_put("cas/k", bytes("v3"), Some(r1), PutOptions::new())
            .await,
        KeyModified
    );
    check_eq!(s.get("cas/k").await?, want);
    check_err!(s.atomic_delete("cas/k", r1).await, KeyModified);
    check_eq!(s.get("cas/k").await?, want);

    // Re-created by a create-only atomic_put after an atomic_delete.
    s.atomic_delete("cas/k", r2).await?;
    let r3 = s
        .atomic_put("cas/k", bytes("v4"), None, PutOptions::new())
        .await?;
    check!(r3 > r2, "re-created: revision {r3} is not above {r2}");
    check_err!(
        s.atomic_put("cas/k", bytes("v5"), Some(r2), PutOptions::new())
            .await,
        KeyModified
    );
    check_err!(s.atomic_delete("cas/k", r1).await, KeyModified);
    check_eq!(s.list("").await?, vec![KvPair::new("cas/k", "v4", r3)]);
    Ok(())
}
