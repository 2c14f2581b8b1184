//! The cases' teeth: each deliberately broken recipe fails the case made
//! to catch it, on the memory backend.

use std::sync::Arc;

use anykv_core::{async_trait, Result, Store};

use super::{all_cases, run_in, Ctx, Failure, Flaw, RecipeFactory};

struct Memory;

#[async_trait]
impl RecipeFactory for Memory {
    async fn open(&self, root: &str) -> Result<Arc<dyn Store>> {
        Ok(
            anykv_memory::MemoryStore::open_url(&format!("memory://recipe-teeth/{root}"))?
                .into_dyn(),
        )
    }

    async fn compact(&self, store: &Arc<dyn Store>, revision: u64) -> Result<()> {
        anykv_memory::compact(store.as_ref(), revision)
    }
}

async fn fails(case: &str, flaw: Flaw) -> String {
    let case = all_cases()
        .into_iter()
        .find(|c| c.name == case)
        .expect("a case of the suite");
    let mut ctx = Ctx::new(Arc::new(Memory), case.name);
    ctx.flaw = Some(flaw);
    match run_in(&case, &ctx).await {
        Err(Failure::Failed(message)) => message,
        other => panic!(
            "{} with {flaw:?}: expected a failure, got {other:?}",
            case.name
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_skips_deletes_fails() {
    let m = fails("cache_matches_list_after_churn", Flaw::CacheSkipsDeletes).await;
    assert!(m.contains("list()"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_emits_everything_again_after_relisting_fails() {
    let m = fails("cache_relists_after_compacted", Flaw::CacheRelistEmitsAll).await;
    assert!(m.contains("emitted twice"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_that_does_not_wait_fails() {
    let m = fails(
        "election_exclusive_while_leaders_killed",
        Flaw::ElectionDoesNotWait,
    )
    .await;
    assert!(m.contains("still led"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_whose_loss_never_fires_fails() {
    let m = fails(
        "election_exclusive_while_leaders_killed",
        Flaw::ElectionNeverLost,
    )
    .await;
    assert!(m.contains("lost()"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_does_not_repair_fails() {
    let m = fails("registry_repairs_deleted_records", Flaw::RegistryNoRepair).await;
    assert!(m.contains("to hold its record"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_without_protection_fails() {
    let m = fails(
        "discovery_never_empty_during_outage",
        Flaw::DiscoveryUnprotected,
    )
    .await;
    assert!(m.contains("protected"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_whose_candidates_all_wake_fails() {
    let m = fails("election_waits_on_predecessor_only", Flaw::ElectionHerd).await;
    assert!(m.contains("listed the queue when c2 left"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_claims_without_a_compare_fails() {
    let m = fails(
        "queue_items_claimed_exactly_once",
        Flaw::QueueClaimWithoutCompare,
    )
    .await;
    assert!(m.contains("claimed twice"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_that_counts_without_a_transaction_fails() {
    let m = fails(
        "semaphore_never_exceeds_permits_while_holders_killed",
        Flaw::SemaphoreWithoutTxn,
    )
    .await;
    assert!(m.contains("held a permit at once"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_that_passes_one_early_fails() {
    let m = fails(
        "barrier_nobody_passes_before_all_entered",
        Flaw::BarrierPassesEarly,
    )
    .await;
    assert!(m.contains("passed enter when only 4 of 5"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_gets_then_puts_fails() {
    let m = fails("counter_concurrent_adds_exact_sum", Flaw::CounterGetThenPut).await;
    assert!(m.contains("the counter's final value"), "{m}");
}
