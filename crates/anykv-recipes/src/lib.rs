//! Recipes over any anykv [`Store`](anykv_core::Store): written only
//! against the trait, so each works on every backend, third-party ones
//! included (it needs watches, and leases for the election and the
//! registry; the queue, semaphore, barrier and counter need
//! [transactions](anykv_core::txn)).
//!
//! - [`Cache`]: a list-then-watch view of a prefix, as Kubernetes
//!   informers keep one: events `Init`, `InitDone`, `Apply`, `Delete`,
//!   `Stale`, `Resynced`; re-lists with backoff after `Compacted`, a watch
//!   error or an outage and emits only the differences; serves its last
//!   state while the backend is unreachable and says it is stale.
//! - [`Election`]: `campaign` resolves when the candidate leads, with a
//!   [`Leadership`] carrying a fencing token, `lost()`, `proclaim` and
//!   `resign`; `leader`, `candidates`, `observe`; candidates wait on their
//!   predecessor only; [`Terms`] re-enters after each loss.
//! - [`Registry`]: service instances under one lease per registry, kept
//!   alive, written again when the lease is lost or a record vanishes, with
//!   a status stream. [`Discovery`]: a cached view of one service with
//!   round-robin, random and sticky selection, a filter, error feedback,
//!   protection against an empty view during an outage, and a cache file.
//! - [`Queue`]: a FIFO work queue; `push`, `claim` (each item to exactly
//!   one consumer, by a compare-and-delete transaction), `claim_wait`
//!   (waits with a watch), `len`.
//! - [`Semaphore`]: N permits, each a slot key bound to its holder's lease,
//!   taken by a transaction so holders never outnumber permits; `acquire`
//!   queues in arrival order and wakes one waiter per freed permit;
//!   `try_acquire`; a [`Permit`] with `lost()` and `release()`.
//! - [`DoubleBarrier`]: `enter` waits until N participants have entered,
//!   [`BarrierEntry::leave`] until all have left; participants are
//!   lease-bound keys.
//! - [`Counter`]: an atomic 64-bit counter on one key, `add` and `get`.
//! - [`cases`]: the recipe cases, for proving the recipes on a backend.
//!
//! # Cache
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_core::{PutOptions, Store};
//! use anykv_recipes::{Cache, CacheEvent, CacheOptions};
//! use futures::StreamExt;
//!
//! let store = anykv_memory::MemoryStore::open_url("memory://docs-cache")?.into_dyn();
//! store.put("config/db", "postgres://a".into(), PutOptions::new()).await?;
//! let cache = Cache::open(store.clone(), "config", CacheOptions::new())?;
//! cache.ready().await?;
//! let mut events = cache.subscribe();
//! assert!(matches!(events.next().await, Some(CacheEvent::Init(kv)) if kv.key == "config/db"));
//! assert!(matches!(events.next().await, Some(CacheEvent::InitDone { .. })));
//! store.delete("config/db").await?;
//! assert!(matches!(events.next().await, Some(CacheEvent::Delete { pair, .. }) if pair.key == "config/db"));
//! assert!(cache.list().is_empty() && !cache.is_stale());
//! # Ok(())
//! # }
//! ```
//!
//! # Election
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{Election, ElectionOptions};
//! use futures::StreamExt;
//!
//! // Two processes' clients of one store.
//! let a = anykv_memory::MemoryStore::open_url("memory://docs-election")?.into_dyn();
//! let b = anykv_memory::MemoryStore::open_url("memory://docs-election")?.into_dyn();
//! let election_a = Election::new(a, ElectionOptions::new());
//! let election_b = Election::new(b, ElectionOptions::new());
//! let mut observer = election_b.observe("scheduler")?;
//! assert_eq!(observer.next().await, Some(None)); // nobody leads yet
//!
//! let leader = election_a.campaign("scheduler", "10.0.0.1:9000").await?;
//! let seen = observer.next().await.flatten().expect("a leader");
//! assert_eq!((seen.value.as_str(), seen.token), ("10.0.0.1:9000", leader.token()));
//!
//! let waiting = tokio::spawn(async move { election_b.campaign("scheduler", "10.0.0.2:9000").await });
//! let token = leader.token();
//! leader.resign().await?; // or lose it: leader.lost() completes
//! let next = waiting.await.expect("the task")?;
//! assert!(next.token() > token); // fencing tokens increase per term
//! # Ok(())
//! # }
//! ```
//!
//! # Service registry and discovery
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{
//!     Discovery, DiscoveryOptions, Instance, Registry, RegistryOptions, RegistryState, Strategy,
//! };
//!
//! let provider = anykv_memory::MemoryStore::open_url("memory://docs-services")?.into_dyn();
//! let consumer = anykv_memory::MemoryStore::open_url("memory://docs-services")?.into_dyn();
//!
//! let registry = Registry::new(provider, RegistryOptions::new())?;
//! let _web1 = registry
//!     .register(Instance::new("web", "web-1", "10.0.0.1", 8080).with_metadata("zone", "a"))
//!     .await?;
//! assert_eq!(registry.status().state, RegistryState::Registered);
//!
//! let web = Discovery::open(
//!     consumer,
//!     "web",
//!     DiscoveryOptions::new().with_strategy(Strategy::RoundRobin),
//! )
//! .await?;
//! let chosen = web.pick().expect("an instance");
//! assert_eq!(chosen.endpoint(), "10.0.0.1:8080");
//! registry.close().await?; // every instance of the registry leaves
//! # Ok(())
//! # }
//! ```
//!
//! # Queue, semaphore, barrier and counter
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anykv_core::Result<()> {
//! use anykv_recipes::{Counter, Queue, QueueOptions, Semaphore, SemaphoreOptions};
//!
//! let store = anykv_memory::MemoryStore::open_url("memory://docs-txn-recipes")?.into_dyn();
//! let jobs = Queue::new(store.clone(), "jobs", QueueOptions::new())?;
//! jobs.push("job 1").await?;
//! let workers = Semaphore::new(store.clone(), "workers", 4, SemaphoreOptions::new())?;
//! let done = Counter::new(store.clone(), "stats/done")?;
//!
//! let permit = workers.acquire().await?; // at most 4 at a time
//! let job = jobs.claim().await?.expect("a job"); // nobody else gets it
//! assert_eq!(job.value, "job 1");
//! assert_eq!(done.add(1).await?, 1);
//! permit.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Key layout and formats
//!
//! Everything the recipes write is JSON under plain keys, so programs in
//! other languages can read and write it:
//!
//! | recipe | key | value |
//! |---|---|---|
//! | election | `{prefix}/{name}/{candidate id}` (prefix `elections`), bound to the candidate's lease | `{"value": "..."}`, with `"token": N` after a proclaim; the candidate with the smallest token (`token`, else the key's revision) leads |
//! | registry | `{prefix}/{service}/{instance id}` (prefix `services`), bound to the registry's lease | an [`Instance`]: `{"service", "id", "address", "port", "metadata", "weight", "enabled"}` |
//! | queue | `{prefix}/{name}/tail` (prefix `queues`); `{prefix}/{name}/items/{seq}`, `seq` in 20 digits | `tail`: the last sequence number, decimal; an item: the bytes pushed |
//! | semaphore | `{prefix}/{name}/slots/{i}` (prefix `semaphores`), `i` in `0..permits`, bound to the holder's lease; `{prefix}/{name}/waiters/{id}`, bound to the waiter's lease | a slot: `{"holder": "<id>"}`; a waiter: empty |
//! | double barrier | `{prefix}/{name}/members/{id}` (prefix `barriers`), bound to the participant's lease; `{prefix}/{name}/ready` | a member: empty; `ready`: the round's random id |
//! | counter | the key given | the value, a signed 64-bit decimal integer |
//! | discovery cache file | a file of the application's choosing | `{"version": 1, "service", "saved_at_ms", "instances": [Instance...]}` |
//!
//! Election names, service names and instance ids are single key segments
//! (no `/`).
#![deny(rustdoc::broken_intra_doc_links)]

pub mod barrier;
pub mod cache;
pub mod cases;
pub mod counter;
pub mod discovery;
pub mod election;
mod instance;
pub mod queue;
pub mod registry;
pub mod semaphore;
mod util;

pub use barrier::{BarrierEntry, BarrierOptions, DoubleBarrier};
pub use counter::Counter;
pub use queue::{Queue, QueueItem, QueueOptions};
pub use semaphore::{Permit, Semaphore, SemaphoreOptions};

pub use cache::{Cache, CacheEvent, CacheEvents, CacheOptions, CacheStatus};
pub use discovery::{
    Discovery, DiscoveryOptions, DiscoveryStatus, EmptyProtection, InstanceFilter, Strategy,
    ViewSource,
};
pub use election::{Candidate, Election, ElectionOptions, Leadership, Observer, Terms};
pub use instance::{Instance, DEFAULT_SERVICES_PREFIX};
pub use registry::{Registration, Registry, RegistryOptions, RegistryState, RegistryStatus};
pub use util::Backoff;
