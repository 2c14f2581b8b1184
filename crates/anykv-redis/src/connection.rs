//! How a store reaches Redis, for each deployment ([`Topology`]):
//!
//! - one server: a `ConnectionManager`, which reconnects to the same
//!   address by itself;
//! - Sentinel: a multiplexed connection to the primary the Sentinels name,
//!   dropped when it fails (a lost connection, a time-out, `READONLY`,
//!   `LOADING`, `MASTERDOWN`) so that the next call asks the Sentinels
//!   again. The Sentinels are asked all at once, so a dead or frozen one
//!   costs nothing; the address most of them name (the first Sentinel's
//!   on a tie) is tried first, and a server counts as the primary only if
//!   it says so itself (`INFO replication`, `role:master`);
//! - Cluster: the cluster client, which follows the slot map; it never
//!   retries a command by itself (the store decides what may be retried).
//!
//! The watch reader gets a connection of its own ([`Link::reader`]) the
//! same way, found anew on every reconnect.
//!
//! A store that waits for replicas (`wait_replicas`) also keeps
//! [`WAIT_LANES`] connections for those writes: `WAIT` holds up every
//! later command of the connection it is sent on until the replicas
//! answer, so on the calls' connection it would hold up reads and every
//! other write behind each write's replication.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anykv_core::{Error, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, TlsCertificates, Value,
};

use crate::config::{RedisConfig, Topology, BACKEND};
use crate::errors::{describe, map_error};

/// One call's connection, of whichever deployment.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting by itself.
    Managed(ConnectionManager),
    /// A connection to one server (a Sentinel-named primary, or a watch
    /// reader's).
    Direct(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How many connections a store keeps for writes that wait for replicas.
pub(crate) const WAIT_LANES: usize = 8;

/// Which of a link's connections a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The calls' connection.
    Main,
    /// One of the connections for writes that wait for replicas (the
    /// calls' connection if the store has none).
    Waiting,
}

/// A call's connection, which of the link's connections it is, and its
/// generation (see [`Link::invalidate`]).
pub(crate) struct Handle {
    /// The connection.
    pub(crate) conn: Conn,
    /// Its place among the link's connections.
    pub(crate) slot: usize,
    /// Which connection of a Sentinel link's slot this is (0 otherwise).
    pub(crate) generation: u64,
}

/// The store's way to its server(s).
pub(crate) struct Link {
    kind: Kind,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// How many connections for writes that wait (0 or [`WAIT_LANES`]),
    /// after the calls' connection in each deployment's list.
    lanes: usize,
    next_lane: AtomicUsize,
}

/// The deployment's own part of a [`Link`].
enum Kind {
    /// One server.
    Single {
        /// For the watch reader's connections.
        client: Box<Client>,
        /// The calls' connection, then the lanes.
        managers: Vec<ConnectionManager>,
    },
    /// The primary the Sentinels name.
    Sentinel(Box<SentinelLink>),
    /// A Redis Cluster.
    Cluster {
        /// For the watch reader's connections.
        client: Box<ClusterClient>,
        /// The calls' connection, then the lanes.
        conns: Vec<ClusterConnection>,
    },
}

/// What connecting to a data server needs, for every deployment.
#[derive(Clone)]
struct NodeSettings {
    tls: bool,
    root_cert: Option<Vec<u8>>,
    redis: RedisConnectionInfo,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl NodeSettings {
    fn new(config: &RedisConfig) -> Result<Self> {
        let mut redis = RedisConnectionInfo::default().set_db(config.db);
        if let Some(u) = &config.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &config.password {
            redis = redis.set_password(p);
        }
        let root_cert = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        if config.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(NodeSettings {
            tls: config.tls,
            root_cert,
            redis,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })
    }

    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        }
    }

    /// A client for the server at `host:port`, with `redis` as its
    /// handshake (credentials, database).
    fn client(&self, host: &str, port: u16, redis: &RedisConnectionInfo) -> Result<Client> {
        let info = self
            .addr(host, port)
            .into_connection_info()
            .map_err(|e| Error::Config(format!("invalid Redis address: {}", describe(&e))))?
            .set_redis_settings(redis.clone());
        if self.tls {
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: self.root_cert.clone(),
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|e| Error::Config(format!("invalid Redis configuration: {}", describe(&e))))
    }

    /// A connection's settings: the connect time-out and `response`.
    fn connection_config(&self, response: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(response))
    }
}

/// `Timeout` of `operation` after `after`.
fn timed_out(operation: &str, after: Duration) -> Error {
    Error::Timeout {
        backend: BACKEND,
        operation: operation.to_owned(),
        after,
    }
}

impl Link {
    /// Connects as `config` says, within its connect and request timeouts.
    pub(crate) async fn open(config: &RedisConfig) -> Result<Link> {
        let settings = NodeSettings::new(config)?;
        let connecting = config
            .connect_timeout
            .saturating_add(config.request_timeout);
        let lanes = if config.wait_replicas > 0 {
            WAIT_LANES
        } else {
            0
        };
        let kind = match &config.topology {
            Topology::Single => {
                let client = settings.client(&config.host, config.port, &settings.redis)?;
                let mgr_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.request_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let mut managers = Vec::with_capacity(1 + lanes);
                for _ in 0..=lanes {
                    let manager = match tokio::time::timeout(
                        connecting,
                        ConnectionManager::new_with_config(client.clone(), mgr_config.clone()),
                    )
                    .await
                    {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            return Err(map_error(
                                e,
                                &format!("connect to {}:{}", config.host, config.port),
                            ))
                        }
                        Err(_) => return Err(timed_out("connect", connecting)),
                    };
                    managers.push(manager);
                }
                Kind::Single {
                    client: Box::new(client),
                    managers,
                }
            }
            Topology::Sentinel {
                sentinels,
                master_name,
            } => {
                let link = SentinelLink::new(config, settings, sentinels, master_name, 1 + lanes)?;
                match tokio::time::timeout(connecting, link.current(0)).await {
                    Ok(Ok(_)) => Kind::Sentinel(Box::new(link)),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(timed_out("connect (through the Sentinels)", connecting)),
                }
            }
            Topology::Cluster { nodes } => {
                let addrs: Vec<ConnectionAddr> =
                    nodes.iter().map(|(h, p)| settings.addr(h, *p)).collect();
                let mut builder = ClusterClient::builder(addrs)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.request_timeout)
                    .retries(0);
                if let Some(u) = &config.username {
                    builder = builder.username(u);
                }
                if let Some(p) = &config.password {
                    builder = builder.password(p);
                }
                if config.tls {
                    builder = builder.tls(redis::TlsMode::Secure);
                    if let Some(root_cert) = &settings.root_cert {
                        builder = builder.certs(TlsCertificates {
                            client_tls: None,
                            root_cert: Some(root_cert.clone()),
                        });
                    }
                }
                let client = builder.build().map_err(|e| {
                    Error::Config(format!(
                        "invalid Redis Cluster configuration: {}",
                        describe(&e)
                    ))
                })?;
                let mut conns = Vec::with_capacity(1 + lanes);
                for _ in 0..=lanes {
                    let conn = match tokio::time::timeout(connecting, client.get_async_connection())
                        .await
                    {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => return Err(map_error(e, "connect to the Redis Cluster")),
                        Err(_) => {
                            return Err(timed_out("connect to the Redis Cluster", connecting))
                        }
                    };
                    conns.push(conn);
                }
                Kind::Cluster {
                    client: Box::new(client),
                    conns,
                }
            }
        };
        Ok(Link {
            kind,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            lanes,
            next_lane: AtomicUsize::new(0),
        })
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster { .. })
    }

    /// How many connections the link holds open for calls (the watch
    /// reader's not counted).
    pub(crate) fn connections(&self) -> usize {
        match &self.kind {
            Kind::Single { managers, .. } => managers.len(),
            Kind::Sentinel(s) => s.open_slots(),
            Kind::Cluster { conns, .. } => conns.len(),
        }
    }

    /// The connection for a call on `lane` (for Sentinel: the current one,
    /// or one to the primary the Sentinels name now).
    pub(crate) async fn get(&self, lane: Lane) -> Result<Handle> {
        let slot = match lane {
            Lane::Waiting if self.lanes > 0 => {
                1 + self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes
            }
            _ => 0,
        };
        match &self.kind {
            Kind::Single { managers, .. } => Ok(Handle {
                conn: Conn::Managed(managers[slot.min(managers.len() - 1)].clone()),
                slot,
                generation: 0,
            }),
            Kind::Sentinel(s) => s.current(slot).await,
            Kind::Cluster { conns, .. } => Ok(Handle {
                conn: Conn::Cluster(conns[slot.min(conns.len() - 1)].clone()),
                slot,
                generation: 0,
            }),
        }
    }

    /// Drops the Sentinel link's connection `handle` came from, if it is
    /// still the current one of its slot, so that the next call there asks
    /// the Sentinels again. Does nothing for the other deployments, which
    /// reconnect by themselves.
    pub(crate) fn invalidate(&self, handle: &Handle) {
        if let Kind::Sentinel(s) = &self.kind {
            s.invalidate(handle.slot, handle.generation);
        }
    }

    /// What the servers say about themselves, for `Store::status`: the
    /// data server that serves the namespace (asked `INFO server`, `INFO
    /// replication` and `GET rev_key`, for a Cluster also `CLUSTER
    /// KEYSLOT` and `CLUSTER SLOTS`, in one round trip, within the
    /// request timeout) and, for Sentinel, every Sentinel (`INFO server`,
    /// at the same time and within the same bound).
    pub(crate) async fn status(&self, rev_key: &str) -> LinkStatus {
        let bound = self.request_timeout;
        let primary = async {
            match tokio::time::timeout(bound, self.probe(rev_key)).await {
                Ok(r) => r,
                Err(_) => Err(timed_out("status", bound)),
            }
        };
        let sentinels = async {
            match &self.kind {
                Kind::Sentinel(s) => s.sentinel_status(bound).await,
                _ => Vec::new(),
            }
        };
        let (primary, sentinels) = futures::join!(primary, sentinels);
        let (address, named_by) = match &self.kind {
            Kind::Single { client, .. } => {
                (Some(client.get_connection_info().addr().to_string()), None)
            }
            Kind::Sentinel(s) => match s.found.lock().clone() {
                Some((a, n)) => (Some(a), Some(n)),
                None => (None, None),
            },
            Kind::Cluster { .. } => (None, None),
        };
        LinkStatus {
            address,
            primary,
            sentinels,
            named_by,
        }
    }

    /// Sends the status commands (see [`Link::status`]) to the data
    /// server of the namespace: each reply, or its error.
    async fn probe(&self, rev_key: &str) -> Result<Vec<Value>> {
        let handle = self.get(Lane::Main).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("replication")
            .cmd("GET")
            .arg(rev_key);
        let replies = match handle.conn {
            Conn::Cluster(mut c) => {
                pipe.cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(rev_key)
                    .cmd("CLUSTER")
                    .arg("SLOTS");
                let n = 5;
                let route = Route::with_key(rev_key.as_bytes(), SlotAddr::Master);
                c.route_pipeline(
                    pipe.ignore_errors().clone(),
                    0,
                    n,
                    SingleNodeRoutingInfo::SpecificNode(route),
                )
                .await
            }
            mut other => {
                pipe.ignore_errors()
                    .query_async::<Vec<Value>>(&mut other)
                    .await
            }
        };
        match replies {
            Ok(r) => Ok(r),
            Err(e) => {
                if gives_up(&e) {
                    self.invalidate_slot(&handle.slot, handle.generation);
                }
                if e.is_timeout() {
                    return Err(timed_out("status", self.request_timeout));
                }
                Err(map_error(e, "status"))
            }
        }
    }

    fn invalidate_slot(&self, slot: &usize, generation: u64) {
        if let Kind::Sentinel(s) = &self.kind {
            s.invalidate(*slot, generation);
        }
    }

    /// A new connection of its own for the watch reader, whose blocking
    /// `XREAD`s (of up to `block`) must not hold up other calls.
    pub(crate) async fn reader(&self, block: Duration) -> Result<Conn> {
        let response = block.saturating_add(self.request_timeout);
        match &self.kind {
            Kind::Single { client, .. } => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(response));
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Conn::Direct)
                    .map_err(|e| map_error(e, "watch reader connect"))
            }
            Kind::Sentinel(s) => s.connect_primary(response).await.map(Conn::Direct),
            Kind::Cluster { client, .. } => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.connect_timeout)
                    .set_response_timeout(response);
                client
                    .get_async_connection_with_config(cfg)
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| map_error(e, "watch reader connect"))
            }
        }
    }
}

/// What [`Link::status`] found.
pub(crate) struct LinkStatus {
    /// The data server's address (`host:port`), when known (for a
    /// Cluster it comes from the replies).
    pub(crate) address: Option<String>,
    /// The data server's replies (see [`Link::status`]), or why it did
    /// not answer.
    pub(crate) primary: Result<Vec<Value>>,
    /// For Sentinel: each Sentinel's address and its `INFO server`, or
    /// why it did not answer.
    pub(crate) sentinels: Vec<(String, Result<Value>)>,
    /// For Sentinel: the Sentinel that named the primary.
    pub(crate) named_by: Option<String>,
}

/// Whether an error means the connection should be given up.
fn gives_up(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// The primary the Sentinels name, and the current connection to it.
pub(crate) struct SentinelLink {
    settings: NodeSettings,
    /// A client per Sentinel, in the configured order.
    sentinels: Vec<Client>,
    /// The Sentinels' addresses (`host:port`), in the same order.
    addresses: Vec<String>,
    master_name: String,
    /// The primary last found (`host:port`), and the address of the
    /// Sentinel that named it first.
    found: Mutex<Option<(String, String)>>,
    /// Per slot (the calls' connection, then the lanes): the current
    /// connection and its generation.
    current: Vec<Mutex<Option<(u64, MultiplexedConnection)>>>,
    /// One search for the primary at a time.
    searching: tokio::sync::Mutex<()>,
    next_generation: AtomicU64,
}

/// How much longer the other Sentinels are waited for once one has named
/// a primary.
const OTHER_SENTINELS: Duration = Duration::from_millis(200);

/// What one Sentinel said.
type Answer = std::result::Result<Option<(String, u16)>, RedisError>;

impl SentinelLink {
    fn new(
        config: &RedisConfig,
        settings: NodeSettings,
        sentinels: &[(String, u16)],
        master_name: &str,
        slots: usize,
    ) -> Result<Self> {
        let mut auth = RedisConnectionInfo::default();
        if let Some(u) = &config.sentinel_username {
            auth = auth.set_username(u);
        }
        if let Some(p) = &config.sentinel_password {
            auth = auth.set_password(p);
        }
        let addresses = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let sentinels = sentinels
            .iter()
            .map(|(h, p)| settings.client(h, *p, &auth))
            .collect::<Result<Vec<_>>>()?;
        Ok(SentinelLink {
            settings,
            sentinels,
            addresses,
            master_name: master_name.to_owned(),
            found: Mutex::new(None),
            current: (0..slots).map(|_| Mutex::new(None)).collect(),
            searching: tokio::sync::Mutex::new(()),
            next_generation: AtomicU64::new(1),
        })
    }

    /// How many slots have a connection.
    fn open_slots(&self) -> usize {
        self.current.iter().filter(|c| c.lock().is_some()).count()
    }

    /// Slot `slot`'s current connection, or a new one to the primary the
    /// Sentinels name now.
    async fn current(&self, slot: usize) -> Result<Handle> {
        let slot = slot.min(self.current.len().saturating_sub(1));
        let cached = || {
            self.current[slot]
                .lock()
                .clone()
                .map(|(generation, c)| Handle {
                    conn: Conn::Direct(c),
                    slot,
                    generation,
                })
        };
        if let Some(h) = cached() {
            return Ok(h);
        }
        let _one = self.searching.lock().await;
        if let Some(h) = cached() {
            return Ok(h);
        }
        let c = self.connect_primary(self.settings.request_timeout).await?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        *self.current[slot].lock() = Some((generation, c.clone()));
        Ok(Handle {
            conn: Conn::Direct(c),
            slot,
            generation,
        })
    }

    fn invalidate(&self, slot: usize, generation: u64) {
        let Some(current) = self.current.get(slot) else {
            return;
        };
        let mut current = current.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Every Sentinel's `INFO server`, asked at once, each within `bound`.
    async fn sentinel_status(&self, bound: Duration) -> Vec<(String, Result<Value>)> {
        let asks = (0..self.sentinels.len()).map(|i| async move {
            let ask = async {
                let cfg = self.settings.connection_config(bound);
                let mut c = self.sentinels[i]
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?;
                redis::cmd("INFO")
                    .arg("server")
                    .query_async::<Value>(&mut c)
                    .await
            };
            let r = match tokio::time::timeout(bound, ask).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(map_error(e, "status")),
                Err(_) => Err(timed_out("status", bound)),
            };
            (self.addresses[i].clone(), r)
        });
        futures::future::join_all(asks).await
    }

    /// Asks Sentinel `i` for the primary's address (`None`: it knows no
    /// master of that name).
    async fn ask(&self, i: usize) -> Answer {
        let cfg = self
            .settings
            .connection_config(self.settings.request_timeout);
        let mut c = self.sentinels[i]
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let v: Value = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut c)
            .await?;
        let items = match v {
            Value::Array(items) => items,
            _ => return Ok(None),
        };
        let text = |v: &Value| crate::reply::as_bytes(v).and_then(|b| String::from_utf8(b).ok());
        match (items.first().and_then(text), items.get(1).and_then(text)) {
            (Some(host), Some(port)) => Ok(port.parse().ok().map(|p| (host, p))),
            _ => Ok(None),
        }
    }

    /// Asks every Sentinel at once, each within the connect and request
    /// timeouts, and the others for at most [`OTHER_SENTINELS`] once one
    /// has answered (at once when a majority agrees); the addresses they
    /// name, most named first (the earlier Sentinel's on a tie), what went
    /// wrong with the others, and whether every one refused the
    /// credentials. Each address comes with the index of the first
    /// Sentinel that named it.
    async fn candidates(&self) -> (Vec<((String, u16), usize)>, Vec<String>, bool) {
        let n = self.sentinels.len();
        let mut asks: FuturesUnordered<_> = (0..n)
            .map(|i| async move {
                let r = tokio::time::timeout(
                    self.settings.connect_timeout + self.settings.request_timeout,
                    self.ask(i),
                )
                .await;
                (i, r)
            })
            .collect();
        let mut named: Vec<(usize, (String, u16))> = Vec::new();
        let mut problems = Vec::new();
        let mut all_auth = true;
        // Once one Sentinel has named a primary, the others get a short
        // while more: a frozen one must not hold up the search.
        let mut until: Option<tokio::time::Instant> = None;
        loop {
            let next = match until {
                Some(deadline) => match tokio::time::timeout_at(deadline, asks.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => asks.next().await,
            };
            let Some((i, r)) = next else {
                break;
            };
            match r {
                Ok(Ok(Some(addr))) => {
                    named.push((i, addr));
                    all_auth = false;
                    until.get_or_insert_with(|| tokio::time::Instant::now() + OTHER_SENTINELS);
                    // A majority agrees: no need to wait for the others.
                    let votes = named.iter().filter(|(_, a)| *a == named[named.len() - 1].1);
                    if votes.count() > n / 2 {
                        break;
                    }
                }
                Ok(Ok(None)) => {
                    all_auth = false;
                    problems.push(format!(
                        "Sentinel {} knows no master {:?}",
                        i + 1,
                        self.master_name
                    ));
                }
                Ok(Err(e)) => {
                    let e = map_error(e, "");
                    all_auth &= e.kind() == anykv_core::ErrorKind::Unauthenticated;
                    problems.push(format!("Sentinel {}: {e}", i + 1));
                }
                Err(_) => {
                    all_auth = false;
                    problems.push(format!("Sentinel {} did not answer in time", i + 1));
                }
            }
        }
        let mut ranked: Vec<((String, u16), usize, usize)> = Vec::new();
        for (i, addr) in named {
            match ranked.iter_mut().find(|(a, _, _)| *a == addr) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 = entry.2.min(i);
                }
                None => ranked.push((addr, 1, i)),
            }
        }
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let all_auth = all_auth && ranked.is_empty() && !problems.is_empty();
        (
            ranked.into_iter().map(|(a, _, i)| (a, i)).collect(),
            problems,
            all_auth,
        )
    }

    /// A new connection (with `response` as its response timeout) to the
    /// server the Sentinels name that says it is a primary.
    pub(crate) async fn connect_primary(
        &self,
        response: Duration,
    ) -> Result<MultiplexedConnection> {
        let (candidates, mut problems, all_auth) = self.candidates().await;
        if all_auth {
            return Err(Error::Unauthenticated {
                backend: BACKEND,
                message: format!(
                    "the Sentinels refused the credentials: {}",
                    problems.join("; ")
                ),
            });
        }
        let cfg = self.settings.connection_config(response);
        for ((host, port), named_by) in candidates {
            let client = self.settings.client(&host, port, &self.settings.redis)?;
            let attempt = async {
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?;
                let info: Value = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await?;
                Ok::<_, RedisError>((c, info))
            };
            match tokio::time::timeout(
                self.settings.connect_timeout + self.settings.request_timeout,
                attempt,
            )
            .await
            {
                Ok(Ok((c, info))) => {
                    let text = crate::reply::as_bytes(&info).unwrap_or_default();
                    if String::from_utf8_lossy(&text)
                        .lines()
                        .any(|l| l.trim() == "role:master")
                    {
                        let sentinel = self.addresses.get(named_by).cloned().unwrap_or_default();
                        *self.found.lock() = Some((format!("{host}:{port}"), sentinel));
                        return Ok(c);
                    }
                    problems.push(format!(
                        "{host}:{port}, named by the Sentinels, is not a primary (a failover \
                         is under way)"
                    ));
                }
                Ok(Err(e)) => {
                    let e = map_error(e, &format!("connect to the primary {host}:{port}"));
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    problems.push(e.to_string());
                }
                Err(_) => {
                    problems.push(format!("the primary {host}:{port} did not answer in time"))
                }
            }
        }
        Err(Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "no primary {:?} found through the Sentinels: {}",
                self.master_name,
                if problems.is_empty() {
                    "none answered".to_owned()
                } else {
                    problems.join("; ")
                }
            ),
            source: None,
        })
    }
}
