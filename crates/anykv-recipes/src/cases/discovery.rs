//! Cases of service [`Discovery`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ensure, ensure_eq, eventually, CaseResult, Ctx, Tap, WAIT};
use crate::{Discovery, Instance, Registry, Strategy, ViewSource};

fn ids(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(|i| i.id.clone()).collect()
}

async fn shows(discovery: &Discovery, expected: &[&str], what: &str) -> CaseResult {
    eventually(WAIT, what, || {
        let same = ids(&discovery.instances()) == expected;
        async move { same.then_some(()) }
    })
    .await
}

/// Round-robin takes each instance in turn, random follows the weights,
/// sticky keeps its choice until it is noted with an error; disabled
/// instances and those the filter refuses are never picked, and one noted
/// with an error is left out while others remain.
pub async fn discovery_strategies_and_feedback(ctx: &Ctx) -> CaseResult {
    let store = ctx.open().await?;
    let registry = Registry::new(store.clone(), ctx.registry_options())?;
    let instance = |id: &str, weight: u32, zone: &str| {
        Instance::new("web", id, "127.0.0.1", 8000)
            .with_weight(weight)
            .with_metadata("zone", zone)
    };
    let a_reg = registry.register(instance("a", 1, "a")).await?;
    let _b = registry.register(instance("b", 3, "a")).await?;
    let _c = registry
        .register(instance("c", 1, "a").with_enabled(false))
        .await?;
    let _d = registry.register(instance("d", 1, "b")).await?;

    let options = ctx.discovery_options();
    let rr = Discovery::open(store.clone(), "web", options.clone()).await?;
    shows(&rr, &["a", "b", "d"], "a, b and d (c is disabled)").await?;
    ensure_eq(
        ids(&rr.all_instances()),
        vec!["a".into(), "b".into(), "c".into(), "d".into()],
        "all",
    )?;
    let picks: Vec<String> = (0..6).filter_map(|_| rr.pick()).map(|i| i.id).collect();
    ensure_eq(
        picks,
        ["a", "b", "d", "a", "b", "d"].map(String::from).to_vec(),
        "round-robin",
    )?;
    rr.note_error("b");
    let picks: Vec<String> = (0..6).filter_map(|_| rr.pick()).map(|i| i.id).collect();
    ensure(!picks.contains(&"b".to_string()), || {
        format!("b picked after an error: {picks:?}")
    })?;
    for id in ["a", "d"] {
        rr.note_error(id);
    }
    ensure(rr.pick().is_some(), || {
        "nothing picked when every instance had an error".into()
    })?;

    let zoned = Discovery::open(
        store.clone(),
        "web",
        options
            .clone()
            .with_filter(|i| i.metadata.get("zone").map(String::as_str) == Some("b")),
    )
    .await?;
    shows(&zoned, &["d"], "the filter's choice").await?;
    ensure_eq(
        zoned.pick().map(|i| i.id),
        Some("d".into()),
        "the filtered pick",
    )?;

    let random = Discovery::open(
        store.clone(),
        "web",
        options.clone().with_strategy(Strategy::Random),
    )
    .await?;
    shows(&random, &["a", "b", "d"], "random's view").await?;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..600 {
        if let Some(i) = random.pick() {
            *counts.entry(i.id).or_default() += 1;
        }
    }
    let count = |id: &str| counts.get(id).copied().unwrap_or(0);
    ensure(count("a") > 0 && count("d") > 0 && count("c") == 0, || {
        format!("random: {counts:?}")
    })?;
    ensure(count("b") > count("a") && count("b") > count("d"), || {
        format!("random ignores the weights: {counts:?}")
    })?;

    let sticky = Discovery::open(store, "web", options.with_strategy(Strategy::Sticky)).await?;
    shows(&sticky, &["a", "b", "d"], "sticky's view").await?;
    let first = sticky.pick().map(|i| i.id);
    let again: Vec<Option<String>> = (0..10).map(|_| sticky.pick().map(|i| i.id)).collect();
    ensure(again.iter().all(|p| *p == first), || {
        format!("sticky moved: {first:?} then {again:?}")
    })?;
    sticky.note_error(first.as_deref().unwrap_or_default());
    let second = sticky.pick().map(|i| i.id);
    ensure(second.is_some() && second != first, || {
        format!("sticky kept {first:?} after its error")
    })?;
    ensure_eq(sticky.pick().map(|i| i.id), second, "sticky's new choice")?;
    drop(a_reg);
    shows(&sticky, &["b", "d"], "a gone after its deregistration").await
}

/// With empty protection on, a discovery cut off from its backend while
/// every instance leaves never shows an empty view: it keeps the last one
/// (and says so) until new instances are registered.
pub async fn discovery_never_empty_during_outage(ctx: &Ctx) -> CaseResult {
    let writer = ctx.open().await?;
    let tap = Tap::new(ctx.open().await?);
    let first = Registry::new(writer.clone(), ctx.registry_options())?;
    let _a = first
        .register(Instance::new("web", "a", "10.0.0.1", 80))
        .await?;
    let _b = first
        .register(Instance::new("web", "b", "10.0.0.2", 80))
        .await?;
    let discovery = Arc::new(Discovery::open(tap.clone(), "web", ctx.discovery_options()).await?);
    shows(&discovery, &["a", "b"], "the instances before the outage").await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (discovery, stop) = (discovery.clone(), stop.clone());
        async move {
            let mut empty = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if discovery.pick().is_none() || discovery.instances().is_empty() {
                    empty += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            empty
        }
    });
    tap.set_down(true);
    eventually(WAIT, "discovery to say it is stale", || {
        let stale = discovery.status().stale;
        async move { stale.then_some(()) }
    })
    .await?;
    first.close().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tap.set_down(false);
    eventually(WAIT, "the cache to be current and empty", || {
        let status = discovery.cache().status();
        let done = discovery.cache().is_empty() && status.stale.is_none();
        async move { done.then_some(()) }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure(discovery.status().protected, || {
        format!("the empty view is not protected: {:?}", discovery.status())
    })?;
    let second = Registry::new(writer, ctx.registry_options())?;
    let _c = second
        .register(Instance::new("web", "c", "10.0.0.3", 80))
        .await?;
    shows(&discovery, &["c"], "the new instance after the outage").await?;
    stop.store(true, Ordering::SeqCst);
    let empty = sampler.await.unwrap_or(u32::MAX);
    ensure_eq(empty, 0, "samples that found the view empty")?;
    ensure(!discovery.status().protected, || {
        "still protected with an instance".into()
    })
}

/// Discovery saves its view to its cache file; started while the backend
/// is unreachable it serves the saved view and says so, then switches to
/// the live view when the backend answers. Without a file it starts empty.
pub async fn discovery_starts_from_cache_file(ctx: &Ctx) -> CaseResult {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path =
        std::env::temp_dir().join(format!("anykv-recipes-{}-{nanos}.json", std::process::id()));
    let result = from_file(ctx, &path).await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn from_file(ctx: &Ctx, path: &std::path::Path) -> CaseResult {
    let store = ctx.open().await?;
    let registry = Registry::new(store.clone(), ctx.registry_options())?;
    let _a = registry
        .register(Instance::new("web", "a", "10.0.0.1", 80))
        .await?;
    let _b = registry
        .register(Instance::new("web", "b", "10.0.0.2", 80))
        .await?;
    let options = ctx.discovery_options().with_cache_file(path);
    let live = Discovery::open(store, "web", options.clone()).await?;
    shows(&live, &["a", "b"], "the live view").await?;
    eventually(WAIT, "the cache file", || {
        let saved = std::fs::read(path)
            .ok()
            .map(|body| body.windows(3).filter(|w| w == b"\"id").count());
        async move { (saved == Some(2)).then_some(()) }
    })
    .await?;
    drop(live);

    let tap = Tap::new(ctx.open().await?);
    tap.set_down(true);
    let quick = options.with_startup_timeout(Duration::from_millis(300));
    let started = Discovery::open(tap.clone(), "web", quick.clone()).await?;
    let status = started.status();
    ensure_eq(
        status.source,
        ViewSource::CacheFile,
        "the source at start-up",
    )?;
    ensure(status.stale, || {
        "a view from the file is not marked stale".into()
    })?;
    ensure_eq(
        ids(&started.instances()),
        vec!["a".into(), "b".into()],
        "the view from the file",
    )?;
    ensure(started.pick().is_some(), || {
        "nothing picked from the file's view".into()
    })?;

    let mut bare = quick;
    bare.cache_file = None;
    let nothing = Discovery::open(tap.clone(), "web", bare).await?;
    ensure_eq(
        nothing.status().source,
        ViewSource::Nothing,
        "the source without a file",
    )?;
    ensure_eq(nothing.instances(), Vec::new(), "the view without a file")?;

    tap.set_down(false);
    eventually(WAIT, "the live view after start-up", || {
        let status = started.status();
        let live = status.source == ViewSource::Live && !status.stale;
        async move { live.then_some(()) }
    })
    .await?;
    shows(&started, &["a", "b"], "the live view after start-up").await?;
    shows(
        &nothing,
        &["a", "b"],
        "the live view of the discovery without a file",
    )
    .await
}
