//! Cases: resuming a watch from a revision, compaction, lagging consumers,
//! and freeing or sharing the resources of watches.

use std::collections::HashMap;

use anykv_core::{ErrorKind, KvPair, WatchEvent, WatchOptions};

use super::watch::{put, watch_store};
use crate::{
    check, check_eq, expect_delete, next_event, next_item, read_initial, wait_until, CaseResult,
    Ctx, Failure, EVENT_TIMEOUT, SLACK,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __anykv_cases_watch_resume {
    (($($cb:tt)*) $args:tt) => {
        $($cb)*! { $args watch_resume: [
            watch_resume_from_revision,
            watch_tree_resume_from_revision,
            watch_resume_compacted,
            watch_lagged_consumer,
            watch_dropped_stream_frees,
            watch_many_share_connections,
        ] }
    };
}

/// `WatchOptions::from_revision(r)` yields exactly the changes of the key
/// after `r` (here v3, v4, v5 after v2's revision), with no initial state
/// and no `Synced`, then live changes; writes to other keys are not part of
/// it.
pub async fn watch_resume_from_revision(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let mut written = Vec::new();
    for i in 1..=5 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
        put(&s, "other", &format!("o{i}")).await?;
        put(&s, "k/child", &format!("c{i}")).await?;
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(written[1].revision))
        .await?;
    for p in &written[2..] {
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(p.clone())
        );
    }
    let v6 = put(&s, "k", "v6").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(v6.clone())
    );
    check!(s.delete("k").await?);
    expect_delete(&mut w, "k", v6.revision, EVENT_TIMEOUT).await?;
    Ok(())
}

/// `watch_tree` with `from_revision(r)` replays every change under the
/// prefix after `r` in order, deletes included, then live changes; no
/// initial state, no `Synced`, nothing from outside the prefix.
pub async fn watch_tree_resume_from_revision(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let a = put(&s, "t/a", "1").await?;
    put(&s, "t/keep", "1").await?;
    let mark = put(&s, "u", "outside").await?.revision;
    let b = put(&s, "t/b", "1").await?;
    put(&s, "tt", "outside").await?;
    check!(s.delete("t/a").await?);
    let cd = put(&s, "t/c/d", "1").await?;
    put(&s, "t", "outside").await?;
    let b2 = put(&s, "t/b", "2").await?;
    let mut w = s.watch_tree("t", WatchOptions::from_revision(mark)).await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(b.clone())
    );
    let del = expect_delete(&mut w, "t/a", b.revision.max(a.revision), EVENT_TIMEOUT).await?;
    check!(
        del < cd.revision,
        "the replayed Delete of t/a is out of order"
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(cd)
    );
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(b2)
    );
    let live = put(&s, "t/e", "live").await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(live)
    );
    Ok(())
}

/// After the history up to revision `r` is compacted (through the
/// factory's compact hook), a watch resuming from an older revision yields
/// `Err(Compacted)` and then ends (`None`), for `watch` and `watch_tree`;
/// resuming from `r` itself still works. Runs alone (it compacts).
pub async fn watch_resume_compacted(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    ctx.require(s.capabilities().watch_resume, "watch_resume")?;
    let mut written = Vec::new();
    for i in 1..=5 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
    }
    match ctx.factory().compact(&s, written[3].revision).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            return Err(Failure::unsupported(format!(
                "the factory has no compact hook (StoreFactory::compact): {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    for tree in [false, true] {
        let opts = WatchOptions::from_revision(written[1].revision);
        let opened = if tree {
            s.watch_tree("", opts).await
        } else {
            s.watch("k", opts).await
        };
        let mut w = match opened {
            Ok(w) => w,
            Err(e) => {
                return Err(Failure::failed(format!(
                    "Compacted comes from the stream, not from watch(): opening the \
                     watch from compacted revision {} failed ({:?}): {e}",
                    written[1].revision,
                    e.kind()
                )))
            }
        };
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            Some(Err(e)) if e.kind() == ErrorKind::Compacted => {}
            other => {
                return Err(Failure::failed(format!(
                    "a watch resuming from a compacted revision yields Err(Compacted) first: \
                 resuming {} from {}, got {other:?}",
                    if tree {
                        "watch_tree(\"\")"
                    } else {
                        "watch(\"k\")"
                    },
                    written[1].revision
                )))
            }
        }
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            None => {}
            Some(other) => {
                return Err(Failure::failed(format!(
                    "a stream ends after Err(Compacted): got {other:?}"
                )))
            }
        }
    }
    let mut w = s
        .watch("k", WatchOptions::from_revision(written[3].revision))
        .await?;
    check_eq!(
        next_event(&mut w, EVENT_TIMEOUT).await?,
        WatchEvent::Put(written[4].clone())
    );
    Ok(())
}

/// A consumer that stops reading a watch with a buffer of 16 while 500 puts
/// happen gets, when it drains the stream, events in order and without
/// gaps (from the first put on, with `watch_every_revision`), then
/// `Err(WatchLagged)`, then the end (`None`); buffering is bounded. Where
/// resuming works, resuming after the last revision seen carries on with
/// the next put. Without `watch_every_revision` the stream may instead
/// coalesce, but then it delivers the final value after few events.
pub async fn watch_lagged_consumer(ctx: &Ctx) -> CaseResult {
    const BUFFER: usize = 16;
    let s = watch_store(ctx).await?;
    let caps = s.capabilities().clone();
    let mut w = s
        .watch("k", WatchOptions::new().with_buffer(BUFFER))
        .await?;
    let (initial, synced) = read_initial(&mut w, EVENT_TIMEOUT).await?;
    check_eq!(initial, Vec::<KvPair>::new());
    let mut written = Vec::new();
    for i in 0..500 {
        written.push(put(&s, "k", &format!("v{i}")).await?);
    }
    let index: HashMap<u64, usize> = written
        .iter()
        .enumerate()
        .map(|(i, p)| (p.revision, i))
        .collect();
    let mut delivered: Vec<usize> = Vec::new();
    let lagged = loop {
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            Some(Ok(WatchEvent::Put(kv))) => {
                let Some(&i) = index.get(&kv.revision) else {
                    return Err(Failure::failed(format!(
                        "event {kv:?} has a revision no put returned"
                    )));
                };
                check_eq!(kv, written[i]);
                let expected_next = delivered.last().map_or(0, |l| l + 1);
                if caps.watch_every_revision {
                    check_eq!(
                        i,
                        expected_next,
                        "index of the next delivered put (no gaps)"
                    );
                } else {
                    check!(i >= expected_next, "put #{i} arrived out of order");
                }
                delivered.push(i);
                if i == written.len() - 1 {
                    break false;
                }
            }
            Some(Err(e)) if e.kind() == ErrorKind::WatchLagged => break true,
            other => {
                return Err(Failure::failed(format!(
                    "draining a lagged watch: expected a put or Err(WatchLagged), got {other:?}"
                )))
            }
        }
    };
    if lagged {
        match next_item(&mut w, EVENT_TIMEOUT).await? {
            None => {}
            Some(other) => {
                return Err(Failure::failed(format!(
                    "the stream did not end after Err(WatchLagged): got {other:?}"
                )))
            }
        }
        if caps.watch_resume {
            let from = delivered.last().map_or(synced, |&i| written[i].revision);
            let next = delivered.last().map_or(0, |l| l + 1);
            let mut r = s.watch("k", WatchOptions::from_revision(from)).await?;
            check_eq!(
                next_event(&mut r, EVENT_TIMEOUT).await?,
                WatchEvent::Put(written[next].clone()),
                "resuming after the last revision seen"
            );
        }
    } else {
        check!(
            !caps.watch_every_revision,
            "all 500 puts were delivered through a buffer of {BUFFER}: buffering is not bounded"
        );
        check!(
            delivered.len() <= BUFFER + 2,
            "{} events were delivered through a buffer of {BUFFER}: buffering is not bounded",
            delivered.len()
        );
        let live = put(&s, "k", "live").await?;
        check_eq!(
            next_event(&mut w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(live)
        );
    }
    Ok(())
}

/// `stats().watches` rises by exactly the number of open watches (on the
/// store that opened them only) and returns to the baseline within
/// [`SLACK`] after they are dropped; the store keeps working.
pub async fn watch_dropped_stream_frees(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let other = ctx.store().await?;
    let base = s.stats().watches;
    let other_base = other.stats().watches;
    let mut first = vec![
        s.watch("a", WatchOptions::new()).await?,
        s.watch_tree("t", WatchOptions::new()).await?,
    ];
    let mut rest = vec![
        s.watch_tree("", WatchOptions::new()).await?,
        s.watch("b", WatchOptions::new()).await?,
        s.watch("a", WatchOptions::new()).await?,
    ];
    for w in first.iter_mut().chain(rest.iter_mut()) {
        read_initial(w, EVENT_TIMEOUT).await?;
    }
    check_eq!(s.stats().watches, base + 5, "open watches with 5 streams");
    check_eq!(
        other.stats().watches,
        other_base,
        "another client's open watches"
    );
    drop(first);
    wait_until(
        SLACK,
        "stats().watches falls by the 2 dropped streams",
        || {
            let n = s.stats().watches;
            async move { Ok(n == base + 3) }
        },
    )
    .await?;
    drop(rest);
    wait_until(SLACK, "stats().watches returns to its baseline", || {
        let n = s.stats().watches;
        async move { Ok(n == base) }
    })
    .await?;
    let mut w = s.watch("a", WatchOptions::new()).await?;
    read_initial(&mut w, EVENT_TIMEOUT).await?;
    let a = put(&s, "a", "v").await?;
    check_eq!(next_event(&mut w, EVENT_TIMEOUT).await?, WatchEvent::Put(a));
    Ok(())
}

/// A hundred watches on one store share its connections: opening them adds
/// only a few connections to `stats().connections`, and every one of them
/// delivers the put of the watched key.
pub async fn watch_many_share_connections(ctx: &Ctx) -> CaseResult {
    let s = watch_store(ctx).await?;
    let mut watches = vec![s.watch("k", WatchOptions::new()).await?];
    read_initial(&mut watches[0], EVENT_TIMEOUT).await?;
    let base = s.stats().connections;
    for i in 1..100 {
        let mut w = if i % 2 == 0 {
            s.watch("k", WatchOptions::new()).await?
        } else {
            s.watch_tree("", WatchOptions::new()).await?
        };
        read_initial(&mut w, EVENT_TIMEOUT).await?;
        watches.push(w);
    }
    let conns = s.stats().connections;
    check!(
        conns <= base + 4,
        "100 watches use {conns} connections; one watch used {base}: watches do not share connections"
    );
    let k = put(&s, "k", "v").await?;
    for (i, w) in watches.iter_mut().enumerate() {
        check_eq!(
            next_event(w, EVENT_TIMEOUT).await?,
            WatchEvent::Put(k.clone()),
            "watch #{i}"
        );
    }
    Ok(())
}
