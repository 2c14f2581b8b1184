//! Cases: single-key round trips (put, get, exists, delete) and values.

use anykv_core::{KvPair, PutOptions};

use crate::{bytes, check, check_eq, CaseResult, Ctx};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_basic {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args basic: [
            put_get_roundtrip,
        ] }
    };
}

/// `put` then `get` returns the exact value and the revision `put` returned;
/// `exists` is true; `delete` returns true, then `get` is `None`, `exists`
/// false and a second `delete` false.
pub async fn put_get_roundtrip(ctx: &Ctx) -> CaseResult {
    let s = ctx.store().await?;
    check_eq!(s.get("k").await?, None);
    check!(!s.exists("k").await?);
    let rev = s.put("k", bytes("v1"), PutOptions::new()).await?;
    check!(rev > 0, "put returned revision 0");
    check_eq!(s.get("k").await?, Some(KvPair::new("k", "v1", rev)));
    check!(s.exists("k").await?);
    check!(s.delete("k").await?, "delete of a present key returned false");
    check_eq!(s.get("k").await?, None);
    check!(!s.exists("k").await?);
    check!(!s.delete("k").await?, "delete of an absent key returned true");
    Ok(())
}
