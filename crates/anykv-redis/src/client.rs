//! The store's calls to the server: running scripts and commands within
//! the request timeout, retrying what may be retried, and waiting for
//! replicas when configured. How the server is reached (one server,
//! Sentinel, Cluster) is `connection.rs`; mapping Redis errors to anykv's
//! is `errors.rs`; decoding replies is `reply.rs`.
//!
//! A call that cannot complete within `request_timeout` fails with
//! `Timeout`, a lost connection with `Unavailable`; a write that fails so
//! may have been applied and is never retried. A write the server refused
//! before running it (`READONLY` from a demoted primary, `MOVED`, `ASK`,
//! `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `BUSY`,
//! `NOREPLICAS`, or a connection that could not be made) is tried again
//! within the timeout, on the primary found anew. Reads are retried within
//! the timeout. Wrong credentials give `Unauthenticated`, ACL refusals
//! `PermissionDenied`.
//!
//! Every script gets the namespace's revision counter as `KEYS[1]`, so
//! that a Cluster routes it to the namespace's slot, and, while the
//! failover check is on, `{ns}:replid` as `KEYS[2]` (see `scripts.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anykv_core::backend::ClosedFlag;
use anykv_core::{Error, Result};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisError, Value};

use crate::config::{RedisConfig, BACKEND};
use crate::connection::{Conn, Handle, Lane, Link, LinkStatus};
use crate::errors::{map_error, map_error_kind_retryable};
use crate::layout::Layout;
use crate::reply::as_i64;
use crate::scripts::Lua;

/// How long a call waits before it tries again after a transient failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A store's connection to its server(s), and the store's closed flag,
/// which stops retries once the store is closed.
pub(crate) struct RedisClient {
    link: Link,
    /// `{ns}:`, every script's first argument.
    prefix: String,
    /// The change stream's length bound, every script's second argument.
    history: String,
    /// `{ns}:rev` and `{ns}:replid`: the scripts' keys.
    keys: [String; 2],
    /// Whether scripts check the server's replication id (`KEYS[2]`).
    check: AtomicBool,
    /// `WAIT` after writes: how many replicas, for how long.
    wait: Option<(usize, Duration)>,
    request_timeout: Duration,
    closed: ClosedFlag,
    /// Set when a call fails for a reason that may mean a new connection
    /// or a new primary; the next call that succeeds clears it and counts
    /// one more in `recovered`.
    suspect: AtomicBool,
    /// How many times calls succeeded again after failing: the store
    /// checks its locks and leases at once on every change.
    recovered: tokio::sync::watch::Sender<u64>,
}

/// What a call is, for its error messages: a fixed text, or a closure that
/// builds one (only when there is an error to report).
pub(crate) trait CallName {
    /// The call's name, as errors show it.
    fn describe(&self) -> String;
}

impl CallName for &str {
    fn describe(&self) -> String {
        (*self).to_owned()
    }
}

impl<F: Fn() -> String> CallName for F {
    fn describe(&self) -> String {
        self()
    }
}

/// Whether a write waits for replicas (when the store is configured to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `WAIT` after it, if `wait_replicas` is set.
    Replicated,
    /// Never waits (background work, releases).
    Primary,
}

/// A write script's reply, and how many replicas acknowledged it.
#[derive(Debug)]
pub(crate) struct Written {
    /// The script's reply.
    pub(crate) value: Value,
    /// What `WAIT` said.
    pub(crate) replicas: Replicas,
}

/// `(wanted, got, waited)` when a write waited for replicas.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replicas(Option<(usize, i64, Duration)>);

impl Replicas {
    /// `Ok` unless the write waited for replicas and fewer acknowledged
    /// it than wanted: then `Unavailable`, the write applied on the
    /// primary but maybe lost in a failover. Call it only for a reply that
    /// says the script wrote something.
    pub(crate) fn check(&self, what: impl CallName) -> Result<()> {
        match self.0 {
            Some((want, got, waited)) if got < want as i64 => Err(Error::Unavailable {
                backend: BACKEND,
                message: format!(
                    "{}: applied on the primary, but only {} of {want} replicas acknowledged \
                     it within {waited:?}; it may be lost in a failover",
                    what.describe(),
                    got.max(0)
                ),
                source: None,
            }),
            _ => Ok(()),
        }
    }
}

impl Written {
    /// See [`Replicas::check`].
    pub(crate) fn replicated(&self, what: impl CallName) -> Result<()> {
        self.replicas.check(what)
    }

    /// The reply, once [`Written::replicated`] holds.
    pub(crate) fn durable(self, what: impl CallName) -> Result<Value> {
        self.replicated(what)?;
        Ok(self.value)
    }
}

/// Whether the server refused the command before running it, so that
/// sending it again cannot apply it twice.
fn unexecuted(e: &RedisError) -> bool {
    e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
        || matches!(
            e.code(),
            Some(
                "READONLY"
                    | "MOVED"
                    | "ASK"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "LOADING"
                    | "MASTERDOWN"
                    | "BUSY"
                    | "NOREPLICAS"
                    | "NOSCRIPT"
            )
        )
}

/// Whether a failed call means the connection (or the server behind it)
/// should be given up: a Sentinel link then asks the Sentinels again.
fn gives_up_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.code(),
            Some("READONLY" | "LOADING" | "MASTERDOWN" | "NOREPLICAS")
        )
}

impl RedisClient {
    /// Connects as `config` says, within its connect and request timeouts.
    pub(crate) async fn connect(config: &RedisConfig, layout: &Layout) -> Result<Self> {
        let link = Link::open(config).await?;
        let prefix = layout.prefix().to_owned();
        Ok(RedisClient {
            link,
            keys: [format!("{prefix}rev"), format!("{prefix}replid")],
            prefix,
            history: config.history.to_string(),
            check: AtomicBool::new(true),
            wait: (config.wait_replicas > 0).then_some((config.wait_replicas, config.wait_timeout)),
            request_timeout: config.request_timeout,
            closed: ClosedFlag::new(BACKEND),
            suspect: AtomicBool::new(false),
            recovered: tokio::sync::watch::channel(0).0,
        })
    }

    /// The store's closed flag.
    pub(crate) fn closed(&self) -> &ClosedFlag {
        &self.closed
    }

    /// How long one call may take.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How many connections the store holds open for calls (the watch
    /// reader's not counted).
    pub(crate) fn connections(&self) -> usize {
        self.link.connections()
    }

    /// What the servers say about themselves (see [`Link::status`]).
    pub(crate) async fn status(&self) -> LinkStatus {
        self.link.status(&self.keys[0]).await
    }

    /// Whether the store talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.link.is_cluster()
    }

    /// Whether scripts check the server's replication id.
    pub(crate) fn checks_failovers(&self) -> bool {
        self.check.load(Ordering::Relaxed)
    }

    /// Turns the replication id check off (a server that forbids `INFO`).
    pub(crate) fn stop_checking_failovers(&self) {
        self.check.store(false, Ordering::Relaxed);
    }

    /// Changes each time calls succeed again after failing.
    pub(crate) fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    fn failed(&self, handle: Option<&Handle>, e: Option<&RedisError>) {
        if e.is_none_or(gives_up_connection) {
            if let Some(h) = handle {
                self.link.invalidate(h);
            }
        }
        if e.is_none_or(|e| gives_up_connection(e) || unexecuted(e) || map_error_kind_retryable(e))
        {
            self.suspect.store(true, Ordering::SeqCst);
        }
    }

    fn succeeded(&self) {
        if self.suspect.swap(false, Ordering::SeqCst) {
            crate::counters::reconnect("calls");
            self.recovered.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// `EVALSHA` of `script` with the keys, the namespace's prefix and
    /// history bound, then `args`.
    fn evalsha(&self, script: &Lua, args: &[&[u8]]) -> redis::Cmd {
        let keys = if self.checks_failovers() { 2 } else { 1 };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.hash()).arg(keys);
        for k in &self.keys[..keys] {
            cmd.arg(k.as_bytes());
        }
        cmd.arg(self.prefix.as_bytes()).arg(self.history.as_bytes());
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// Loads `script` on the server that serves the namespace (which a
    /// failover may have just promoted, without the script cache).
    async fn load(&self, conn: &mut Conn, script: &Lua) -> redis::RedisResult<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(script.code());
        match conn {
            Conn::Cluster(c) => {
                let route = Route::with_key(self.keys[0].as_bytes(), SlotAddr::Master);
                c.route_command(
                    load,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await?;
            }
            other => {
                load.query_async::<Value>(other).await?;
            }
        }
        Ok(())
    }

    /// Runs a script once (loading it first if the server lacks it), then
    /// `WAIT`s for replicas if `wait` is set, in one round trip.
    async fn run(
        &self,
        conn: &mut Conn,
        script: &Lua,
        args: &[&[u8]],
        wait: Option<(usize, Duration)>,
    ) -> redis::RedisResult<(Value, Option<(usize, i64, Duration)>)> {
        let eval = self.evalsha(script, args);
        for attempt in 0..2 {
            let outcome = match wait {
                None => eval.query_async::<Value>(conn).await.map(|v| (v, None)),
                Some((n, t)) => {
                    let mut pipe = redis::pipe();
                    pipe.add_command(eval.clone())
                        .cmd("WAIT")
                        .arg(n)
                        .arg(t.as_millis().max(1) as u64)
                        .ignore_errors();
                    let replies: Vec<Value> = pipe.query_async(conn).await?;
                    let mut it = replies.into_iter();
                    let value = it.next().unwrap_or(Value::Nil).extract_error();
                    // A refused WAIT (an ACL without it) says so, rather
                    // than "no replica acknowledged".
                    let waited = it.next().unwrap_or(Value::Nil).extract_error();
                    value.and_then(|v| {
                        let got = as_i64(&waited?).unwrap_or(0);
                        Ok((v, Some((n, got, t))))
                    })
                }
            };
            match outcome {
                Err(e) if attempt == 0 && e.code() == Some("NOSCRIPT") => {
                    self.load(conn, script).await?
                }
                other => return other,
            }
        }
        Err(RedisError::from((
            redis::ErrorKind::Client,
            "the script was not loaded",
        )))
    }

    /// Runs a write script. It is sent again only when the server refused
    /// it unexecuted (see the module documentation); otherwise a failure
    /// says the write may have been applied. `durability` says whether it
    /// waits for replicas (when configured); the caller checks them with
    /// [`Written::replicated`] once it knows the script wrote.
    pub(crate) async fn write_script(
        &self,
        script: &Lua,
        args: &[&[u8]],
        what: impl CallName,
        durability: Durability,
    ) -> Result<Written> {
        let wait = match durability {
            Durability::Replicated => self.wait,
            Durability::Primary => None,
        };
        // `WAIT` holds up its connection: writes that wait use the lanes.
        let lane = if wait.is_some() {
            Lane::Waiting
        } else {
            Lane::Main
        };
        let deadline = Instant::now()
            .checked_add(self.request_timeout)
            .unwrap_or_else(Instant::now);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let handle = match self.handle(lane, left).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    self.failed(None, None);
                    if e.is_retryable() && Instant::now() + RETRY_PAUSE < deadline {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        self.closed.ensure_open()?;
                        continue;
                    }
                    return Err(e);
                }
                Err(_) => {
                    self.failed(None, None);
                    return Err(self.timed_out(&what.describe()));
                }
            };
            let mut conn = handle.conn.clone();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.run(&mut conn, script, args, wait)).await {
                Ok(Ok((value, acked))) => {
                    self.succeeded();
                    return Ok(Written {
                        value,
                        replicas: Replicas(acked),
                    });
                }
                Ok(Err(e)) => {
                    self.failed(Some(&handle), Some(&e));
                    if unexecuted(&e) && Instant::now() + RETRY_PAUSE < deadline {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        self.closed.ensure_open()?;
                        continue;
                    }
                    return Err(map_error(e, &what.describe()));
                }
                Err(_) => {
                    self.failed(Some(&handle), None);
                    return Err(
                        self.timed_out(&format!("{} (may have been applied)", what.describe()))
                    );
                }
            }
        }
    }

    fn timed_out(&self, operation: &str) -> Error {
        Error::Timeout {
            backend: BACKEND,
            operation: operation.to_owned(),
            after: self.request_timeout,
        }
    }

    /// Runs a read-only script (or one whose writes may be repeated, such
    /// as the state script), retrying transient failures within the
    /// timeout.
    pub(crate) async fn read_script(
        &self,
        script: &Lua,
        args: &[&[u8]],
        what: &str,
    ) -> Result<Value> {
        self.retrying(what, move |mut conn| async move {
            self.run(&mut conn, script, args, None)
                .await
                .map(|(v, _)| v)
        })
        .await
    }

    /// A connection of `lane`, waiting at most `limit` for one (only a
    /// Sentinel link that is finding its primary waits; the others answer
    /// at once, without a timer).
    async fn handle(
        &self,
        lane: Lane,
        limit: Duration,
    ) -> std::result::Result<Result<Handle>, tokio::time::error::Elapsed> {
        let get = self.link.get(lane);
        futures::pin_mut!(get);
        if let Some(ready) = futures::FutureExt::now_or_never(&mut get) {
            return Ok(ready);
        }
        tokio::time::timeout(limit, get).await
    }

    /// Sends a read-only command, retrying transient failures within the
    /// timeout.
    pub(crate) async fn read_command(&self, cmd: &redis::Cmd, what: &str) -> Result<Value> {
        self.retrying(what, move |mut conn| async move {
            cmd.query_async::<Value>(&mut conn).await
        })
        .await
    }

    /// Sends a command once, within the timeout.
    pub(crate) async fn command_once(&self, cmd: &redis::Cmd, what: &str) -> Result<Value> {
        let started = Instant::now();
        let handle = match self.handle(Lane::Main, self.request_timeout).await {
            Ok(h) => h?,
            Err(_) => return Err(self.timed_out(what)),
        };
        let mut conn = handle.conn.clone();
        let left = self.request_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(Some(&handle), Some(&e));
                Err(map_error(e, what))
            }
            Err(_) => {
                self.failed(Some(&handle), None);
                Err(self.timed_out(what))
            }
        }
    }

    /// Calls `call` on a connection until it succeeds, fails for good, or
    /// the timeout runs out. For reads only.
    async fn retrying<F, Fut>(&self, what: &str, mut call: F) -> Result<Value>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>>,
    {
        let deadline = Instant::now()
            .checked_add(self.request_timeout)
            .unwrap_or_else(Instant::now);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match self.handle(Lane::Main, left).await {
                Err(_) => {
                    self.failed(None, None);
                    return Err(self.timed_out(what));
                }
                Ok(Err(e)) => {
                    self.failed(None, None);
                    e
                }
                Ok(Ok(handle)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, call(handle.conn.clone())).await {
                        Ok(Ok(v)) => {
                            self.succeeded();
                            return Ok(v);
                        }
                        Ok(Err(e)) => {
                            self.failed(Some(&handle), Some(&e));
                            map_error(e, what)
                        }
                        Err(_) => {
                            self.failed(Some(&handle), None);
                            return Err(self.timed_out(what));
                        }
                    }
                }
            };
            if !err.is_retryable() || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(err);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            self.closed.ensure_open()?;
        }
    }

    /// A new connection of its own for the watch reader, whose blocking
    /// `XREAD`s (of up to `block`) must not hold up other calls.
    pub(crate) async fn reader_connection(&self, block: Duration) -> Result<Conn> {
        self.link.reader(block).await
    }

    /// Runs a script once on the reader's connection, within the timeout.
    pub(crate) async fn script_on(
        &self,
        conn: &mut Conn,
        script: &Lua,
        args: &[&[u8]],
        what: &str,
    ) -> Result<Value> {
        match tokio::time::timeout(self.request_timeout, self.run(conn, script, args, None)).await {
            Ok(Ok((v, _))) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, what)),
            Err(_) => Err(self.timed_out(what)),
        }
    }
}
