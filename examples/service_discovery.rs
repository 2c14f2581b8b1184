//! Service discovery: providers register themselves under a lease, consumers
//! list them and follow every change with a tree watch.
//!
//! ```text
//! cargo run --example service_discovery                  # in-process store
//! cargo run --all-features --example service_discovery -- etcd://127.0.0.1:2379/demo
//! cargo run --all-features --example service_discovery -- redis://127.0.0.1:6379/0/demo
//! cargo run --all-features --example service_discovery -- zk://127.0.0.1:2181/demo
//! ```
//!
//! The demo plays every part in one process: three providers of the
//! service `web`, each with a store handle of its own (as separate
//! processes would have), and one consumer. The consumer lists the
//! instances, then sees one join, one crash and two shut down cleanly.
//! Every key it writes is under `services/web/`, which it empties first and
//! last. The default URL is the named in-process store
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
//! a terminal (`provider web-3 8083 < /dev/null &`) runs until killed.
//!
//! A record is a few `key=value` lines under `services/{service}/{name}`:
//!
//! ```text
//! addr=127.0.0.1
//! port=8081
//! version=1.4.2
//! zone=a
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv::{PutOptions, Store, WatchEvent, WatchOptions, WatchStream};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Where every service's instances live: `services/{service}/{name}`.
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
    let mut out = std::io::stdout();
    let result = match mode {
        Mode::Demo => demo(&url, &store, &mut out).await,
        Mode::Provider(name, port) => provider_until_enter(store.clone(), name, port).await,
        Mode::Consumer => consumer_forever(store.as_ref(), &mut out).await,
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

/// One instance of a service, as providers register it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    service: String,
    name: String,
    addr: String,
    port: u16,
    /// Anything else consumers may use to choose: version, zone, weight.
    meta: BTreeMap<String, String>,
}

impl Instance {
    fn new(service: &str, name: &str, addr: &str, port: u16, meta: &[(&str, &str)]) -> Self {
        Instance {
            service: service.into(),
            name: name.into(),
            addr: addr.into(),
            port,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn key(&self) -> String {
        format!("{SERVICES}/{}/{}", self.service, self.name)
    }

    /// The record: `addr=…`, `port=…`, then the metadata, one per line.
    fn encode(&self) -> String {
        let mut text = format!("addr={}\nport={}\n", self.addr, self.port);
        for (k, v) in &self.meta {
            text.push_str(&format!("{k}={v}\n"));
        }
        text
    }

    /// Reads a record back; a malformed one is an error, never a panic.
    fn decode(key: &str, value: &[u8]) -> Result<Instance, String> {
        let (service, name) = key
            .strip_prefix(SERVICES)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| format!("{key} is not services/SERVICE/NAME"))?;
        let text = std::str::from_utf8(value).map_err(|_| "the record is not UTF-8")?;
        let mut fields = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{line:?} is not key=value"))?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let addr = fields.remove("addr").ok_or("the record has no addr")?;
        let port = fields
            .remove("port")
            .ok_or("the record has no port")?
            .parse()
            .map_err(|_| "the port is not a number from 0 to 65535")?;
        Ok(Instance {
            service: service.into(),
            name: name.into(),
            addr,
            port,
            meta: fields,
        })
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}:{}", self.name, self.addr, self.port)?;
        let meta: Vec<String> = self.meta.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !meta.is_empty() {
            write!(f, " ({})", meta.join(", "))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- provider

/// Registers `instance` under a lease and keeps it registered until `stop`
/// fires (or its sender is dropped), then deregisters it. The lease's
/// keep-alive runs in the background for as long as the `Lease` handle
/// lives; if the lease is lost anyway (a partition longer than its TTL),
/// the provider registers again. Each registration is reported on
/// `registered`.
async fn provide(
    store: Arc<dyn Store>,
    instance: Instance,
    registered: mpsc::UnboundedSender<()>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    loop {
        let lease = store
            .grant_lease(LEASE_TTL.max(store.capabilities().min_ttl))
            .await?;
        store
            .put(
                &instance.key(),
                instance.encode().into(),
                PutOptions::new().with_lease(lease.id()),
            )
            .await?;
        let _ = registered.send(());
        tokio::select! {
            _ = lease.lost() => continue,
            _ = &mut stop => {
                // Revoking the lease deletes the record: consumers see the
                // instance leave at once instead of after the TTL.
                lease.revoke().await?;
                return Ok(());
            }
        }
    }
}

/// A provider running as a task of its own, on a store handle of its own.
struct RunningProvider {
    instance: Instance,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl RunningProvider {
    /// Starts a provider and waits until its record is written.
    async fn start(url: &str, instance: Instance) -> Result<RunningProvider> {
        let store = anykv::open(url).await?;
        let (registered_tx, mut registered) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(provide(store, instance.clone(), registered_tx, stop_rx));
        match tokio::time::timeout(WAIT, registered.recv()).await {
            Ok(Some(())) => Ok(RunningProvider {
                instance,
                stop,
                task,
            }),
            // The task ended without registering: report why.
            Ok(None) => Err(task
                .await?
                .err()
                .unwrap_or_else(|| "the provider ended".into())),
            Err(_) => {
                task.abort();
                Err(format!("{} did not register within {WAIT:?}", instance.name).into())
            }
        }
    }

    /// A clean shutdown: the provider revokes its lease.
    async fn shut_down(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }

    /// A crash, as near as one process gets to one: the task is aborted
    /// mid-flight, and dropping its `Lease` and its store handle gives the
    /// lease back the way a process exit closes its connections. (A
    /// `kill -9`'d process has no say at all: its lease expires after
    /// the TTL; see the multi-terminal mode.)
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The `provider NAME PORT` command: registers `web/NAME` and keeps it until
/// Enter is pressed.
async fn provider_until_enter(store: Arc<dyn Store>, name: String, port: u16) -> Result<()> {
    let instance = Instance::new(
        "web",
        &name,
        "127.0.0.1",
        port,
        &[("pid", &std::process::id().to_string())],
    );
    let (registered_tx, mut registered) = mpsc::unbounded_channel();
    let (stop, stop_rx) = oneshot::channel();
    let mut task = tokio::spawn(provide(store, instance.clone(), registered_tx, stop_rx));
    let mut enter = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()));
    let mut stdin_open = true;
    let mut first = true;
    loop {
        tokio::select! {
            Some(()) = registered.recv() => {
                if first {
                    println!(
                        "Registered {} under a {}-second lease. Press Enter to deregister, \
                         or kill this process and watch the consumer drop it when the lease expires.",
                        instance.key(),
                        LEASE_TTL.as_secs()
                    );
                    first = false;
                } else {
                    println!("The lease was lost; registered {} again.", instance.key());
                }
            }
            // Without a terminal (stdin at its end) it runs until killed.
            read = &mut enter, if stdin_open => {
                if matches!(read, Ok(Ok(0))) {
                    stdin_open = false;
                    continue;
                }
                let _ = stop.send(());
                task.await??;
                println!("Deregistered {}.", instance.key());
                return Ok(());
            }
            result = &mut task => return result?,
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
    /// A record that does not parse: skipped, never fatal.
    Ignored {
        key: String,
        reason: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Joined(i) => write!(f, "{i} joined"),
            Change::Updated(i) => write!(f, "{i} was updated"),
            Change::Left(name) => write!(f, "{name} left"),
            Change::Ignored { key, reason } => write!(f, "ignored {key}: {reason}"),
        }
    }
}

/// A consumer of one service: its current instances, kept up to date.
struct Consumer {
    prefix: String,
    watch: WatchStream,
    instances: BTreeMap<String, Instance>,
}

impl Consumer {
    /// Lists the service's instances and follows it. The watch starts with
    /// the current state, one `Put` per instance, and `Synced` says that
    /// list is complete; every change after it follows in order, so nothing
    /// falls between the list and the watch.
    async fn start(store: &dyn Store, service: &str) -> Result<(Consumer, Vec<Change>)> {
        let prefix = format!("{SERVICES}/{service}");
        let watch = store.watch_tree(&prefix, WatchOptions::new()).await?;
        let mut consumer = Consumer {
            prefix,
            watch,
            instances: BTreeMap::new(),
        };
        let mut skipped = Vec::new();
        loop {
            match next_event(&mut consumer.watch).await? {
                WatchEvent::Synced { .. } => return Ok((consumer, skipped)),
                event => {
                    if let Some(change @ Change::Ignored { .. }) = consumer.apply(event) {
                        skipped.push(change);
                    }
                }
            }
        }
    }

    /// Waits for the next change of the service's instances.
    async fn next_change(&mut self) -> Result<Change> {
        loop {
            let event = next_event(&mut self.watch).await?;
            if let Some(change) = self.apply(event) {
                return Ok(change);
            }
        }
    }

    fn apply(&mut self, event: WatchEvent) -> Option<Change> {
        match event {
            WatchEvent::Put(kv) => match Instance::decode(&kv.key, &kv.value) {
                Ok(instance) => {
                    let name = instance.name.clone();
                    match self.instances.insert(name, instance.clone()) {
                        None => Some(Change::Joined(instance)),
                        Some(old) if old != instance => Some(Change::Updated(instance)),
                        Some(_) => None,
                    }
                }
                Err(reason) => {
                    // A bad record replaces whatever was there: forget it.
                    self.instances.retain(|_, i| i.key() != kv.key);
                    Some(Change::Ignored {
                        key: kv.key,
                        reason,
                    })
                }
            },
            WatchEvent::Delete { key, .. } => {
                let name = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
                self.instances
                    .remove(name)
                    .map(|_| Change::Left(name.to_string()))
            }
            WatchEvent::Synced { .. } => None,
        }
    }

    /// "3 instances: web-1, web-2, web-3"
    fn summary(&self) -> String {
        let names: Vec<&str> = self.instances.keys().map(String::as_str).collect();
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
async fn consumer_forever(store: &dyn Store, out: &mut impl Write) -> Result<()> {
    let started = Instant::now();
    let stamp = || format!("[{:7.1}s]", started.elapsed().as_secs_f64());
    loop {
        let (mut consumer, skipped) = Consumer::start(store, "web").await?;
        for change in skipped {
            writeln!(out, "{} Consumer: {change}.", stamp())?;
        }
        writeln!(out, "{} Consumer: listed {}.", stamp(), consumer.summary())?;
        for instance in consumer.instances.values() {
            writeln!(out, "  {instance}")?;
        }
        loop {
            match consumer.watch.next().await {
                Some(Ok(event)) => {
                    if let Some(change) = consumer.apply(event) {
                        let summary = consumer.summary();
                        writeln!(out, "{} Consumer: {change}; {summary}.", stamp())?;
                    }
                }
                // A watch can end (a slow consumer, a lost connection):
                // start again, which lists the instances afresh.
                Some(Err(e)) => {
                    writeln!(
                        out,
                        "{} Consumer: the watch failed ({e}); starting again.",
                        stamp()
                    )?;
                    break;
                }
                None => return Ok(()),
            }
        }
    }
}

// ---------------------------------------------------------------- the demo

/// The one-process demo: three providers come and go, one consumer
/// follows. `url` opens the providers' handles; `store` is the consumer's.
pub async fn demo(url: &str, store: &Arc<dyn Store>, out: &mut impl Write) -> Result<()> {
    let tree = format!("{SERVICES}/web");
    store.delete_tree(&tree).await?;
    let result = demo_steps(url, store.as_ref(), out).await;
    store.delete_tree(&tree).await?;
    result
}

async fn demo_steps(url: &str, store: &dyn Store, out: &mut impl Write) -> Result<()> {
    let web = |name, port, version, zone| {
        Instance::new(
            "web",
            name,
            "127.0.0.1",
            port,
            &[("version", version), ("zone", zone)],
        )
    };
    let mut providers = BTreeMap::new();
    for instance in [
        web("web-1", 8081, "1.4.2", "a"),
        web("web-2", 8082, "1.4.2", "b"),
    ] {
        let provider = RunningProvider::start(url, instance).await?;
        registered(out, &provider.instance)?;
        providers.insert(provider.instance.name.clone(), provider);
    }

    let (mut consumer, _) = Consumer::start(store, "web").await?;
    writeln!(out, "Consumer: listed {}.", consumer.summary())?;
    for instance in consumer.instances.values() {
        writeln!(out, "  {instance}")?;
    }

    let web3 = RunningProvider::start(url, web("web-3", 8083, "1.5.0", "a")).await?;
    registered(out, &web3.instance)?;
    providers.insert("web-3".to_string(), web3);
    let change = consumer.next_change().await?;
    writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;

    if let Some(web2) = providers.remove("web-2") {
        web2.crash().await;
        writeln!(
            out,
            "Provider web-2: killed; dropping its lease handle gives the lease back."
        )?;
        let change = consumer.next_change().await?;
        writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;
    }

    for (name, provider) in providers {
        provider.shut_down().await?;
        writeln!(out, "Provider {name}: shut down and revoked its lease.")?;
        let change = consumer.next_change().await?;
        writeln!(out, "Consumer: {change}; {}.", consumer.summary())?;
    }
    Ok(())
}

fn registered(out: &mut impl Write, instance: &Instance) -> std::io::Result<()> {
    let record = instance.encode();
    let record: Vec<&str> = record.lines().collect();
    writeln!(
        out,
        "Provider {}: registered {} = \"{}\" under a {}-second lease.",
        instance.name,
        instance.key(),
        record.join(" "),
        LEASE_TTL.as_secs()
    )
}

async fn next_event(watch: &mut WatchStream) -> Result<WatchEvent> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(event)) => Ok(event?),
        Ok(None) => Err("the watch ended".into()),
        Err(_) => Err(format!("no watch event within {WAIT:?}").into()),
    }
}
