//! Service discovery: providers register themselves with the registry
//! recipe, consumers follow them with the discovery recipe.
//!
//! ```text
//! cargo run --example service_discovery                  # in-process store
//! cargo run --all-features --example service_discovery -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example service_discovery -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example service_discovery -- zk://127.0.0.1:2181/demo
//! ```
//!
//! The demo plays every part in one process: three providers of the
//! service `web`, each with a store handle and an
//! `anykv::recipes::Registry` of its own (as separate processes would
//! have), and one consumer, an `anykv::recipes::Discovery`. The consumer
//! lists the instances, then sees one join, one crash and two shut down
//! cleanly. Every key it writes is under `services/web/`, which it empties
//! first and last. The default URL is the named in-process store
//! `memory://discovery/demo`, which every handle of the process shares; a
//! plain `memory://` would give each handle a private store, so the demo
//! uses the named one instead.
//!
//! Across terminals, on a real server (`docker compose up -d` starts etcd,
//! Redis and ZooKeeper):
//!
//! ```text
//! export ANYKV_URL=etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example service_discovery -- consumer
//! cargo run --all-features --example service_discovery -- provider web-1 8081
//! cargo run --all-features --example service_discovery -- provider web-2 8082
//! ```
//!
//! Press Enter in a provider's terminal and it deregisters: the consumer
//! sees it leave at once. Kill one instead (Ctrl-C, `kill -9`): nothing
//! revokes its lease, so the consumer sees it leave when the lease expires,
//! within the lease's 5 s TTL. The consumer stamps each line with the
//! seconds since it started, so the wait shows. A provider started without
//! a terminal (`provider web-3 8083 < /dev/null &`) runs until killed. Stop
//! the server for a while: providers report that they register again, and
//! the consumer that its view is stale, keeping the last instances it saw.
//!
//! A record is the registry's JSON under `services/{service}/{id}` (see
//! `anykv::recipes::Instance`); the demo prints it as `key=value` pairs.

#[macro_use]
#[path = "support/say.rs"]
mod say;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::recipes::{
    Discovery, DiscoveryOptions, Instance, Registration, Registry, RegistryOptions, RegistryState,
};
use anykv::Store;
use futures::{Stream, StreamExt};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Where every service's instances live: `services/{service}/{id}`.
const SERVICES: &str = "services";
/// A provider's lease: if it dies without deregistering, it vanishes this
/// long after its last keep-alive (raised to the backend's minimum TTL).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// The longest the demo waits for any one step.
const WAIT: Duration = Duration::from_secs(10);
/// The demo's URL when none is given: a named in-process store.
const DEFAULT_URL: &str = "memory://discovery/demo";

const USAGE: &str = "usage: service_discovery [URL]
       service_discovery provider NAME PORT [URL]
       service_discovery consumer [URL]
(the URL defaults to ANYKV_URL, then memory://discovery/demo)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_url = std::env::var("ANYKV_URL").ok();
    let url_from = |arg: Option<&String>| {
        arg.cloned()
            .or_else(|| env_url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    };
    let (mode, url) = match args.first().map(String::as_str) {
        Some("provider") if (3..=4).contains(&args.len()) => match args[2].parse::<u16>() {
            Ok(port) => (Mode::Provider(args[1].clone(), port), url_from(args.get(3))),
            Err(_) => return usage(&format!("{:?} is not a port number", args[2])),
        },
        Some("consumer") if args.len() <= 2 => (Mode::Consumer, url_from(args.get(1))),
        Some(url) if args.len() == 1 && url.contains("://") => (Mode::Demo, url.to_string()),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        None => (Mode::Demo, url_from(None)),
        Some(_) => return usage("unexpected arguments"),
    };
    let url = shared_url(&url);
    let store = match anykv::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "service_discovery: cannot open {}: {e}",
                anykv::redact_url(&url)
            );
            return ExitCode::from(2);
        }
    };
    if mode != Mode::Demo && store.capabilities().backend == "memory" {
        eprintln!(
            "service_discovery: providers and consumers in separate processes need a server; \
             set ANYKV_URL to an etcd://, redis:// or zk:// URL"
        );
        return ExitCode::from(2);
    }
    println!(
        "Opened {} (backend: {}).",
        anykv::redact_url(&url),
        store.capabilities().backend
    );
    let mut out = say::Stdout;
    let result = match mode {
        Mode::Demo => demo(&url, &store, &mut out).await,
        Mode::Provider(name, port) => provider_until_enter(store.clone(), name, port).await,
        Mode::Consumer => consumer_forever(store.clone(), &mut out).await,
    };
    let _ = store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service_discovery: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Demo,
    Provider(String, u16),
    Consumer,
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("service_discovery: {problem}\n{USAGE}");
    ExitCode::from(2)
}

/// `memory://` opens a private store per handle, so the providers and the
/// consumer would never see each other: use the demo's named store instead.
fn shared_url(url: &str) -> String {
    match anykv::Url::parse(url) {
        Ok(u) if u.scheme() == "memory" && u.host_str().unwrap_or("").is_empty() => {
            DEFAULT_URL.to_string()
        }
        _ => url.to_string(),
    }
}

/// An instance of `web` as the demo's providers register it.
fn web(name: &str, port: u16, meta: &[(&str, &str)]) -> Instance {
    meta.iter().fold(
        Instance::new("web", name, "127.0.0.1", port),
        |instance, (k, v)| instance.with_metadata(*k, *v),
    )
}

/// The record as `key=value` pairs: `addr=… port=… version=… zone=…`.
fn describe(instance: &Instance) -> String {
    let mut text = format!("addr={} port={}", instance.address, instance.port);
    for (k, v) in &instance.metadata {
        text.push_str(&format!(" {k}={v}"));
    }
    text
}

/// How the consumer shows an instance: `web-1 at 127.0.0.1:8081 (version
/// 1.4.2, zone a)`.
struct Shown<'a>(&'a Instance);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.0.id, self.0.endpoint())?;
        let meta: Vec<String> = self
            .0
            .metadata
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !meta.is_empty() {
            write!(f, " ({})", meta.join(", "))?;
        }
        Ok(())
    }
}

fn registry_options() -> RegistryOptions {
    RegistryOptions::new()
        .with_prefix(SERVICES)
        .with_ttl(LEASE_TTL)
}

// ---------------------------------------------------------------- provider

/// A provider: a registry of its own, on a store handle of its own, with
/// one instance registered.
struct Provider {
    registry: Registry,
    registration: Registration,
}

impl Provider {
    /// Registers `instance` and waits until its record is written.
    async fn start(url: &str, instance: Instance) -> Result<Provider> {
        let registry = Registry::new(anykv::open(url).await?, registry_options())?;
        let registration = tokio::time::timeout(WAIT, registry.register(instance)).await??;
        Ok(Provider {
            registry,
            registration,
        })
    }

    /// A clean shutdown: the registry revokes its lease.
    async fn shut_down(self) -> Result<()> {
        self.registry.close().await?;
        Ok(())
    }

    /// A crash, as near as one process gets to one: the registry and its
    /// store handle are dropped, which gives the lease back the way a
    /// process exit closes its connections. (A `kill -9`'d process has no
    /// say at all: its lease expires after the TTL; see the multi-terminal
    /// mode.)
    fn crash(self) {
        drop(self);
    }
}

/// The `provider NAME PORT` command: registers `web/NAME` and keeps it until
/// Enter is pressed, reporting what the registry does meanwhile.
async fn provider_until_enter(store: Arc<dyn Store>, name: String, port: u16) -> Result<()> {
    let pid = std::process::id().to_string();
    let instance = web(&name, port, &[("pid", &pid)]);
    let registry = Registry::new(store, registry_options())?;
    let registration = registry.register(instance).await?;
    println!(
        "Registered {} under a {}-second lease. Press Enter to deregister, or kill this process \
         and watch the consumer drop it when the lease expires.",
        registration.key(),
        LEASE_TTL.as_secs()
    );
    let mut enter = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()));
    let mut stdin_open = true;
    let mut statuses = Box::pin(registry.statuses());
    let mut generation = 1;
    loop {
        tokio::select! {
            Some(status) = statuses.next() => match status.state {
                RegistryState::Registered if status.generation > generation => {
                    generation = status.generation;
                    println!("The lease was lost; registered {} again.", registration.key());
                }
                RegistryState::Retrying { retry_in, .. } => println!(
                    "Cannot reach the store ({}); trying again in {retry_in:?}.",
                    status.last_error.unwrap_or_default()
                ),
                _ => {}
            },
            // Without a terminal (stdin at its end) it runs until killed.
            read = &mut enter, if stdin_open => {
                if matches!(read, Ok(Ok(0))) {
                    stdin_open = false;
                    continue;
                }
                let key = registration.key().to_string();
                registration.deregister().await?;
                registry.close().await?;
                println!("Deregistered {key}.");
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------- consumer

/// What a consumer saw change.
#[derive(Debug)]
enum Change {
    Joined(Instance),
    Updated(Instance),
    Left(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Joined(i) => write!(f, "{} joined", Shown(i)),
            Change::Updated(i) => write!(f, "{} was updated", Shown(i)),
            Change::Left(name) => write!(f, "{name} left"),
        }
    }
}

/// A consumer of one service: a discovery, and the instances it last
/// reported, to tell what changed.
struct Consumer {
    discovery: Discovery,
    views: std::pin::Pin<Box<dyn Stream<Item = Vec<Instance>> + Send>>,
    known: BTreeMap<String, Instance>,
    pending: Vec<Change>,
}

impl Consumer {
    /// Follows `service`: the discovery lists its instances, then keeps
    /// them current with a watch (see `anykv::recipes::Cache`).
    async fn start(store: Arc<dyn Store>, service: &str) -> Result<Consumer> {
        let options = DiscoveryOptions::new().with_prefix(SERVICES);
        let discovery = Discovery::open(store, service, options).await?;
        let mut views = Box::pin(discovery.changes());
        let first = views.next().await.unwrap_or_default();
        Ok(Consumer {
            discovery,
            views,
            known: first.into_iter().map(|i| (i.id.clone(), i)).collect(),
            pending: Vec::new(),
        })
    }

    /// Waits for the next change of the service's instances.
    async fn next_change(&mut self) -> Result<Change> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            let view = self.views.next().await.ok_or("the discovery stopped")?;
            let view: BTreeMap<String, Instance> =
                view.into_iter().map(|i| (i.id.clone(), i)).collect();
            for (id, instance) in &view {
                match self.known.get(id) {
                    None => self.pending.push(Change::Joined(instance.clone())),
                    Some(old) if old != instance => {
                        self.pending.push(Change::Updated(instance.clone()))
                    }
                    Some(_) => {}
                }
            }
            for id in self.known.keys().filter(|id| !view.contains_key(*id)) {
                self.pending.push(Change::Left(id.clone()));
            }
            self.known = view;
        }
    }

    /// "3 instances: web-1, web-2, web-3"
    fn summary(&self) -> String {
        let names: Vec<&str> = self.known.keys().map(String::as_str).collect();
        match names.len() {
            0 => "no instances".to_string(),
            1 => format!("1 instance: {}", names[0]),
            n => format!("{n} instances: {}", names.join(", ")),
        }
    }
}

/// The `consumer` command: prints the instances of `web`, then every change
/// as it comes, each line stamped with the seconds since the start, until
/// the process is stopped.
async fn consumer_forever(store: Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    let started = Instant::now();
    let stamp = || format!("[{:7.1}s]", started.elapsed().as_secs_f64());
    let mut consumer = Consumer::start(store, "web").await?;
    writeln!(out, "{} Consumer: listed {}.", stamp(), consumer.summary())?;
    for instance in consumer.known.values() {
        writeln!(out, "  {}", Shown(instance))?;
    }
    let mut status = consumer.discovery.status();
    loop {
        let change = consumer.next_change().await?;
        writeln!(
            out,
            "{} Consumer: {change}; {}.",
            stamp(),
            consumer.summary()
        )?;
        let now = consumer.discovery.status();
        if (now.stale, now.protected) != (status.stale, status.protected) {
            let what = match (now.stale, now.protected) {
                (_, true) => "the store shows no instance; keeping the last ones seen",
                (true, false) => "the store cannot be reached; the view may be out of date",
                (false, false) => "the store is reachable again",
            };
            writeln!(out, "{} Consumer: {what}.", stamp())?;
            status = now;
        }
    }
}

// ---------------------------------------------------------------- the demo

/// The one-process demo: three providers come and go, one consumer
/// follows. `url` opens the providers' handles; `store` is the consumer's.
pub async fn demo(url: &str, store: &Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    let tree = format!("{SERVICES}/web");
    store.delete_tree(&tree).await?;
    let result = demo_steps(url, store, out).await;
    store.delete_tree(&tree).await?;
    result
}

async fn demo_steps(url: &str, store: &Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    let mut providers = BTreeMap::new();
    for instance in [
        web("web-1", 8081, &[("version", "1.4.2"), ("zone", "a")]),
        web("web-2", 8082, &[("version", "1.4.2"), ("zone", "b")]),
    ] {
        let provider = Provider::start(url, instance).await?;
        registered(out, provider.registration.instance())?;
        providers.insert(provider.registration.instance().id.clone(), provider);
    }

    let mut consumer = Consumer::start(store.clone(), "web").await?;
    writeln!(out, "Consumer: listed {}.", consumer.summary())?;
    for instance in consumer.known.values() {
        writeln!(out, "  {}", Shown(instance))?;
    }

    let web3 = web("web-3", 8083, &[("version", "1.5.0"), ("zone", "a")]);
    let web3 = Provider::start(url, web3).await?;
    registered(out, web3.registration.instance())?;
    providers.insert("web-3".to_string(), web3);
    let change = next_change(&mut consumer).await?;
    writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;

    if let Some(web2) = providers.remove("web-2") {
        web2.crash();
        writeln!(
            out,
            "Provider web-2: killed; dropping its lease handle gives the lease back."
        )?;
        let change = next_change(&mut consumer).await?;
        writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;
    }

    for (name, provider) in providers {
        provider.shut_down().await?;
        writeln!(out, "Provider {name}: shut down and revoked its lease.")?;
        let change = next_change(&mut consumer).await?;
        writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;
    }
    Ok(())
}

fn registered(out: &mut impl Write, instance: &Instance) -> Result<()> {
    writeln!(
        out,
        "Provider {}: registered {} = \"{}\" under a {}-second lease.",
        instance.id,
        instance.key(SERVICES)?,
        describe(instance),
        LEASE_TTL.as_secs()
    )?;
    Ok(())
}

async fn next_change(consumer: &mut Consumer) -> Result<Change> {
    match tokio::time::timeout(WAIT, consumer.next_change()).await {
        Ok(change) => change,
        Err(_) => Err(format!("no change within {WAIT:?}").into()),
    }
}
