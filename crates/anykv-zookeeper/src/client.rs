//! The store's connection: opening sessions (the store's own and the
//! shared ones of leases and locks), the deadline every request runs
//! within, error mapping, multi-read replies, and reads behind a shared
//! `sync`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anykv_core::backend::{loss_deadline, ClosedFlag};
use anykv_core::{Error, Result};
use futures::future::{BoxFuture, Shared as SharedFuture};
use futures::FutureExt;
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::config::{ZkConfig, BACKEND};
use crate::layout::Layout;

/// A `sync` already sent, whose reply concurrent reads share.
type SharedSync = SharedFuture<BoxFuture<'static, std::result::Result<(), zk::Error>>>;

/// The store's `sync` requests: how many were sent, and the last one.
#[derive(Default)]
struct Syncs {
    /// Syncs sent so far; a sync is sent and counted under one lock.
    sent: u64,
    /// The last sync sent: its number, its session and its reply.
    last: Option<(u64, i64, SharedSync)>,
}

/// The store's own session, re-established when it expires, with what
/// every request needs: the configuration, the root's layout, the closed
/// flag and the request timeout.
pub(crate) struct ZkClient {
    config: ZkConfig,
    layout: Layout,
    closed: ClosedFlag,
    session: Mutex<zk::Client>,
    reconnect: tokio::sync::Mutex<()>,
    /// The session's server is standalone ([`is_standalone`]): reads need
    /// no `sync`. Checked again on every new session.
    standalone: AtomicBool,
    syncs: Mutex<Syncs>,
}

impl ZkClient {
    /// Opens the store's session within the connect timeout. `config.root`
    /// is canonical.
    pub(crate) async fn connect(config: ZkConfig) -> Result<Self> {
        let session = open_session(&config, config.session_timeout, config.connect_timeout).await?;
        let standalone = is_standalone(&config).await;
        Ok(ZkClient {
            layout: Layout::new(&config.root),
            config,
            closed: ClosedFlag::new(BACKEND),
            session: Mutex::new(session),
            reconnect: tokio::sync::Mutex::new(()),
            standalone: AtomicBool::new(standalone),
            syncs: Mutex::new(Syncs::default()),
        })
    }

    /// The configuration the store was opened with (root canonical).
    pub(crate) fn config(&self) -> &ZkConfig {
        &self.config
    }

    /// The root's node layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The store's closed flag.
    pub(crate) fn closed(&self) -> &ClosedFlag {
        &self.closed
    }

    /// The time one request may take.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Whether reads go behind a `sync` (the server is not standalone).
    pub(crate) fn syncs_reads(&self) -> bool {
        !self.standalone.load(Ordering::SeqCst)
    }

    /// The id of the store's own session.
    pub(crate) fn session_id(&self) -> i64 {
        self.session.lock().session_id().0
    }

    /// The timeout the server granted the store's own session.
    pub(crate) fn granted_session_timeout(&self) -> Duration {
        self.session.lock().session_timeout()
    }

    /// The ACLs of the nodes the store creates at or under its root: its
    /// digest credentials' only, when it has some.
    pub(crate) fn acls(&self) -> zk::Acls<'static> {
        if self.config.digest.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// The store's session, re-established if it expired; `Closed` once
    /// the store is closed.
    pub(crate) async fn session(&self) -> Result<zk::Client> {
        self.closed.ensure_open()?;
        let c = self.session.lock().clone();
        if !c.state().is_terminated() {
            return Ok(c);
        }
        let _g = self.reconnect.lock().await;
        let c = self.session.lock().clone();
        if !c.state().is_terminated() {
            return Ok(c);
        }
        let config = &self.config;
        let fresh = open_session(config, config.session_timeout, self.request_timeout()).await?;
        let standalone = is_standalone(config).await;
        self.standalone.store(standalone, Ordering::SeqCst);
        *self.session.lock() = fresh.clone();
        count_reconnect("the store's session, after it ended");
        Ok(fresh)
    }

    /// The store's session, after a `sync`: the server it is connected to
    /// has caught up with the leader, so a read that starts after another
    /// client's write completed sees it, even on a follower.
    pub(crate) async fn synced_session(&self) -> Result<zk::Client> {
        let session = self.session().await?;
        match with_deadline(self.request_timeout(), "sync", session.sync("/")).await? {
            Ok(()) => Ok(session),
            Err(e) => Err(map_err(e, "sync")),
        }
    }

    /// Runs `reads` on the store's session behind a `sync` sent after
    /// this call began, without waiting a round trip for the sync's reply:
    /// the client sends requests in call order and the server serves one
    /// session's requests in order, so the reads see at least what the
    /// `sync` guarantees (every write completed before it was sent). The
    /// sync's failure wins over the reads' result.
    ///
    /// Concurrent reads share one sync: a read first notes how many syncs
    /// were sent, lets the other ready tasks run once, and then reuses the
    /// last sync if it was sent after that note (and so after the read
    /// began), or sends one of its own. A sync is sent and counted under
    /// one lock, and the reads are sent after that lock, so they follow the
    /// sync on the wire.
    pub(crate) async fn after_sync<T, F, Fut>(&self, reads: F) -> Result<T>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let session = self.session().await?;
        if self.standalone.load(Ordering::SeqCst) {
            return reads(session).await;
        }
        let ticket = self.syncs.lock().sent;
        tokio::task::yield_now().await;
        let sync = with_deadline(
            self.request_timeout(),
            "sync",
            self.sync_after(&session, ticket),
        );
        // The sync is on its way; the reads are sent when first polled.
        let (synced, out) = futures::join!(sync, reads(session.clone()));
        match synced? {
            Ok(()) => out,
            Err(e) => Err(map_err(e, "sync")),
        }
    }

    /// A sync on `session` sent after the count of syncs was `ticket`: the
    /// last one sent, if it is, else a new one, sent now.
    fn sync_after(&self, session: &zk::Client, ticket: u64) -> SharedSync {
        let id = session.session_id().0;
        let mut syncs = self.syncs.lock();
        if let Some((n, s, sync)) = &syncs.last {
            if *n > ticket && *s == id {
                return sync.clone();
            }
        }
        let c = session.clone();
        let sync = async move { c.sync("/").await }.boxed().shared();
        // The first poll sends the request; its reply comes later.
        let _ = sync.clone().now_or_never();
        syncs.sent += 1;
        let n = syncs.sent;
        syncs.last = Some((n, id, sync.clone()));
        sync
    }

    /// The stat of `path`, `None` if it does not exist.
    pub(crate) async fn stat_of(
        &self,
        session: &zk::Client,
        path: &str,
        what: &str,
    ) -> Result<Option<zk::Stat>> {
        match with_deadline(self.request_timeout(), what, session.check_stat(path)).await? {
            Ok(s) => Ok(s),
            Err(e) => Err(map_err(e, what)),
        }
    }
}

/// The `tracing` target of the backend's background events.
pub(crate) const TARGET: &str = "anykv_zookeeper";

/// Counts a connection or session re-established
/// (`anykv_reconnects_total`); `what` names it in the event.
pub(crate) fn count_reconnect(what: &'static str) {
    metrics::counter!("anykv_reconnects_total", "backend" => BACKEND).increment(1);
    tracing::info!(target: TARGET, what, "zookeeper: re-established");
}

/// Counts a shared session's keep-alive failing
/// (`anykv_keepalive_failures_total`): its connection lost, or the session
/// itself lost. `what` names it in the event.
pub(crate) fn count_keepalive_failure(what: &'static str) {
    metrics::counter!("anykv_keepalive_failures_total", "backend" => BACKEND).increment(1);
    tracing::warn!(target: TARGET, what, "zookeeper: session keep-alive failed");
}

/// Counts the store's shared watch re-synced after its connection or
/// session failed (`anykv_watch_resumes_total`).
pub(crate) fn count_watch_resume(what: &'static str) {
    metrics::counter!("anykv_watch_resumes_total", "backend" => BACKEND).increment(1);
    tracing::info!(target: TARGET, what, "zookeeper: watch re-synced");
}

/// The connection timeout the client gets for a session of
/// `session_timeout`: the configured connect timeout, at most a third of
/// the session timeout. It bounds both the handshake with one server and
/// the silence after which a connection counts as lost, so a client
/// stuck on a frozen server notices it, tries another (possibly frozen
/// too) and reaches a live one before the session could expire.
pub(crate) fn connection_timeout(config: &ZkConfig, session_timeout: Duration) -> Duration {
    config.connect_timeout.min(session_timeout / 3)
}

/// How long after the client noticed that its connection is down its
/// session may still be counted on: what is left of [`loss_deadline`] of
/// the `granted` session timeout once the client noticed the silence.
/// The client notices a silent server after its connection timeout
/// (`connection`, or 2/5 of the session timeout when that is more than
/// 3/5 of it, as the ZooKeeper client computes it), checked once per
/// eighth of it; a connection the server closed is noticed at once, which
/// only makes this earlier. The server cannot expire the session before
/// a full session timeout after it last heard from the client, so a
/// deadline within this grace of noticing comes first.
pub(crate) fn silence_grace(granted: Duration, connection: Duration) -> Duration {
    let noticed = if connection.is_zero() || connection > granted * 3 / 5 {
        granted * 2 / 5
    } else {
        connection
    };
    loss_deadline(granted).saturating_sub(noticed + noticed / 8)
}

/// How long the servers are asked whether they serve before a session
/// is opened: at most this, or the caller's limit if shorter.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// How long the probe waits for the other servers once a majority
/// answered.
const PROBE_STRAGGLERS: Duration = Duration::from_millis(150);

/// The servers a new session is given: those that answered the `srvr`
/// four-letter command (allowed by default) saying they serve, when they
/// are a majority of the configured servers; else all of them. The client
/// tries its servers in random order and waits its whole connection
/// timeout on one that accepts connections but does not answer (a frozen
/// or overloaded server), so leaving such a server out makes opening
/// prompt. A majority is enough: any quorum that serves later shares a
/// server with it, so the session can always reach one that serves.
async fn serving_servers(config: &ZkConfig, limit: Duration) -> Vec<String> {
    use futures::StreamExt;
    let all = &config.servers;
    if all.len() < 2 {
        return all.clone();
    }
    let majority = all.len() / 2 + 1;
    let limit = limit.min(PROBE_LIMIT);
    let mut asks: futures::stream::FuturesUnordered<_> = all
        .iter()
        .enumerate()
        .map(|(i, server)| async move { (i, server_mode(server).await) })
        .collect();
    let mut serving = vec![false; all.len()];
    let mut answered = 0;
    let probe = async {
        let mut stragglers: Option<tokio::time::Instant> = None;
        loop {
            let next = match stragglers {
                Some(until) => match tokio::time::timeout_at(until, asks.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => asks.next().await,
            };
            let Some((i, mode)) = next else { break };
            if let Some(slot) = serving.get_mut(i) {
                *slot = mode.as_deref().is_some_and(is_serving_mode);
            }
            answered += 1;
            let count = serving.iter().filter(|s| **s).count();
            if count >= majority && stragglers.is_none() {
                stragglers = Some(tokio::time::Instant::now() + PROBE_STRAGGLERS);
            }
            if answered == all.len() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, probe).await;
    let chosen: Vec<String> = all
        .iter()
        .zip(&serving)
        .filter(|(_, s)| **s)
        .map(|(server, _)| server.clone())
        .collect();
    if chosen.len() >= majority {
        chosen
    } else {
        all.clone()
    }
}

/// Whether a `srvr` mode line names a server that serves clients.
fn is_serving_mode(mode: &str) -> bool {
    matches!(mode, "leader" | "follower" | "observer" | "standalone")
}

/// The `Mode:` of a server's `srvr` answer; `None` when it does not
/// answer, refuses the command, or does not serve. Its callers bound the
/// time it takes; [`MODE_LIMIT`] only keeps it from hanging without one.
async fn server_mode(server: &str) -> Option<String> {
    srvr(server, MODE_LIMIT).await.ok()?.mode
}

/// The longest [`server_mode`] waits by itself (its callers' limits are
/// shorter).
const MODE_LIMIT: Duration = Duration::from_secs(60);

/// The most of a `srvr` answer read (a real one is a few hundred bytes).
const SRVR_MAX_REPLY: u64 = 16 * 1024;

/// What a server's `srvr` four-letter command said; a field the answer
/// lacked is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SrvrReply {
    /// `Zookeeper version:` (the version, without the build line).
    pub(crate) version: Option<String>,
    /// `Mode:` (`leader`, `follower`, `observer`, `standalone`, ...).
    pub(crate) mode: Option<String>,
    /// `Zxid:`, the server's last processed transaction id.
    pub(crate) zxid: Option<u64>,
}

/// Asks `server` the `srvr` four-letter command within `limit` (connect,
/// send and read together; at most [`SRVR_MAX_REPLY`] bytes). The error,
/// for a server that does not answer or refuses the command, is a short
/// text for [`anykv_core::ServerStatus::unreachable`].
pub(crate) async fn srvr(server: &str, limit: Duration) -> std::result::Result<SrvrReply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"srvr")
            .await
            .map_err(|e| format!("send srvr: {e}"))?;
        let mut reply = Vec::new();
        // The server closes the connection after its answer.
        stream
            .take(SRVR_MAX_REPLY)
            .read_to_end(&mut reply)
            .await
            .map_err(|e| format!("read srvr: {e}"))?;
        Ok::<_, String>(reply)
    };
    let reply = match tokio::time::timeout(limit, ask).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("no answer to srvr within {limit:?}")),
    };
    parse_srvr(&String::from_utf8_lossy(&reply))
}

/// The most of a `cons` answer read (about 200 bytes a connection).
const CONS_MAX_REPLY: u64 = 1024 * 1024;

/// Whether `server`'s `cons` four-letter command lists session `id`
/// among its connections, asked within `limit`: `None` when it does not
/// answer or refuses the command (`cons` is not in ZooKeeper's default
/// whitelist, which allows only `srvr`).
pub(crate) async fn serves_session(server: &str, id: i64, limit: Duration) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
        stream.write_all(b"cons").await.ok()?;
        let mut reply = Vec::new();
        stream
            .take(CONS_MAX_REPLY)
            .read_to_end(&mut reply)
            .await
            .ok()?;
        Some(reply)
    };
    let reply = tokio::time::timeout(limit, ask).await.ok()??;
    let text = String::from_utf8_lossy(&reply);
    if !text.contains("sid=0x") {
        // Refused, or no connection with a session at all.
        return (text.contains("queued=")).then_some(false);
    }
    Some(text.contains(&format!("sid=0x{id:x},")) || text.contains(&format!("sid=0x{id:x})")))
}

/// Parses a `srvr` answer. An answer without any of the known lines (the
/// command not whitelisted: "srvr is not executed because it is not in
/// the whitelist.", a server not serving yet: "This ZooKeeper instance is
/// not currently serving requests", or an empty reply) is an error quoting
/// the start of what came back.
pub(crate) fn parse_srvr(text: &str) -> std::result::Result<SrvrReply, String> {
    let mut out = SrvrReply::default();
    for line in text.lines() {
        let line = line.trim();
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "Zookeeper version" => {
                // "3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on ..."
                let v = value.split(',').next().unwrap_or(value).trim();
                let v = v.split_once('-').map_or(v, |(v, _)| v);
                if !v.is_empty() {
                    out.version = Some(v.to_owned());
                }
            }
            "Mode" if !value.is_empty() => out.mode = Some(value.to_owned()),
            "Zxid" => {
                let hex = value
                    .strip_prefix("0x")
                    .or_else(|| value.strip_prefix("0X"))
                    .unwrap_or(value);
                out.zxid = u64::from_str_radix(hex, 16).ok();
            }
            _ => {}
        }
    }
    if out == SrvrReply::default() {
        let shown: String = text.trim().chars().take(120).collect();
        return Err(if shown.is_empty() {
            "empty answer to srvr (four-letter commands disabled?)".to_owned()
        } else {
            format!("srvr: {shown}")
        });
    }
    Ok(out)
}

/// Opens a session with the configured servers (those that serve, see
/// [`serving_servers`]), credentials and timeouts, giving up after
/// `limit`: `Timeout` naming `limit` when no server answered in time,
/// `Unavailable` at once when no server accepts connections at all (a
/// refused port).
pub(crate) async fn open_session(
    config: &ZkConfig,
    session_timeout: Duration,
    limit: Duration,
) -> Result<zk::Client> {
    let cluster = config.connect_string();
    let what = format!("connecting to {cluster}");
    let timed_out = || Error::Timeout {
        backend: BACKEND,
        operation: what.clone(),
        after: limit,
    };
    let started = tokio::time::Instant::now();
    let servers = serving_servers(config, limit).await;
    let mut connector = zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(connection_timeout(config, session_timeout));
    if let Some((user, password)) = &config.digest {
        connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
    }
    // The client retries a refused connection until the timeout; if the
    // session is not there after a moment, look whether anything listens
    // at all, and fail at once if nothing does.
    let refused = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match reachable(config, limit, &what).await {
            Err(e) => e,
            Ok(()) => std::future::pending().await,
        }
    };
    let servers = servers.join(",");
    let connecting = tokio::time::timeout_at(started + limit, connector.connect(&servers));
    tokio::select! {
        r = connecting => match r {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(zk::Error::Timeout)) | Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(map_err(e, &what)),
        },
        e = refused => Err(e),
    }
}

/// Fails with `Unavailable` when every server refuses TCP connections
/// (nothing listens there), rather than letting the client retry until
/// the connect timeout. A server that accepts, or does not answer within
/// `limit`, passes: the session handshake decides then.
async fn reachable(config: &ZkConfig, limit: Duration, what: &str) -> Result<()> {
    let tries = config.servers.iter().map(|server| async move {
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(server.as_str())).await {
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(format!("{server}: {e}")),
        }
    });
    let results = futures::future::join_all(tries).await;
    if results.iter().any(|r| r.is_ok()) {
        return Ok(());
    }
    let reasons: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    Err(Error::Unavailable {
        backend: BACKEND,
        message: format!(
            "{what}: no server accepts connections ({})",
            reasons.join("; ")
        ),
        source: None,
    })
}

/// Maps a client error to the anykv error of the same meaning.
pub(crate) fn map_err(e: zk::Error, what: &str) -> Error {
    match e {
        zk::Error::NoAuth => Error::PermissionDenied {
            backend: BACKEND,
            message: format!("{what}: the credentials do not allow this (ZooKeeper ACL)"),
        },
        zk::Error::AuthFailed => Error::Unauthenticated {
            backend: BACKEND,
            message: format!("{what}: the server refused the credentials"),
        },
        // The client's own timeouts: a session it could not re-establish
        // in time, a connection that stopped answering ("no response from
        // connection"), an I/O error. The outcome of a write is unknown.
        zk::Error::Timeout | zk::Error::Custom(_) => Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {e} (lost the connection; a write may have been applied)"),
            source: Some(Box::new(e)),
        },
        zk::Error::ConnectionLoss
        | zk::Error::NoHosts
        | zk::Error::SessionExpired
        | zk::Error::SessionMoved
        | zk::Error::Throttled
        | zk::Error::NotReadOnly
        | zk::Error::ClientClosed => Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {e} (a write may have been applied)"),
            source: Some(Box::new(e)),
        },
        zk::Error::Unimplemented if !what.starts_with("put") => Error::unsupported(
            BACKEND,
            "this call",
            format!("{what}: the server does not implement it (anykv needs ZooKeeper 3.6+)"),
        ),
        zk::Error::Unimplemented => Error::unsupported(
            BACKEND,
            "put with a TTL",
            format!(
                "{what}: the server refused a TTL node; TTL keys need \
                 extendedTypesEnabled=true in zoo.cfg and the JVM property \
                 -Dznode.container.checkIntervalMs=1000"
            ),
        ),
        other => Error::Backend {
            backend: BACKEND,
            message: format!("{what}: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// Runs one request within `limit`; running out is `Error::Timeout`
/// naming `what`. The request's own error is left to the caller, which
/// may retry a definite refusal.
pub(crate) async fn with_deadline<T, F>(
    limit: Duration,
    what: &str,
    fut: F,
) -> Result<std::result::Result<T, zk::Error>>
where
    F: Future<Output = std::result::Result<T, zk::Error>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r),
        Err(_) => Err(Error::Timeout {
            backend: BACKEND,
            operation: what.to_owned(),
            after: limit,
        }),
    }
}

/// The error of a multi-op: the failing operation's error, or the
/// request's.
pub(crate) fn multi_err(e: zk::MultiWriteError) -> zk::Error {
    match e {
        zk::MultiWriteError::RequestFailed { source } => source,
        zk::MultiWriteError::OperationFailed { source, .. } => source,
    }
}

/// The error for a multi-read result of the wrong kind, or a missing one.
pub(crate) fn unexpected_reply(result: Option<zk::MultiReadResult>) -> zk::Error {
    zk::Error::UnexpectedError(format!("an unexpected multi-read result: {result:?}"))
}

/// A random-enough token (not security relevant: it tells our own lock
/// nodes apart after a lost reply).
pub(crate) fn random_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Whether the store talks to a standalone server: exactly one server in
/// its URL, which answers the `srvr` four-letter command (allowed by
/// default) with `Mode: standalone`. A standalone server applies every
/// write before replying and serves every session from the same data, so
/// a read there sees every write completed before it without a `sync`.
/// Anything else (several servers, a follower or leader, `srvr` refused or
/// unreachable) keeps the syncs.
pub(crate) async fn is_standalone(config: &ZkConfig) -> bool {
    let [server] = config.servers.as_slice() else {
        return false;
    };
    matches!(
        tokio::time::timeout(config.connect_timeout, server_mode(server)).await,
        Ok(Some(mode)) if mode == "standalone"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srvr_answers_parse() {
        let answer = "Zookeeper version: 3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on 2024-02-12 22:16 UTC\n\
                      Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\nOutstanding: 0\n\
                      Zxid: 0x10000002a\nMode: follower\nNode count: 5\n";
        assert_eq!(
            parse_srvr(answer),
            Ok(SrvrReply {
                version: Some("3.8.4".to_owned()),
                mode: Some("follower".to_owned()),
                zxid: Some(0x1_0000_002a),
            })
        );
    }

    #[test]
    fn odd_srvr_answers_are_errors_or_partial() {
        assert_eq!(
            parse_srvr("srvr is not executed because it is not in the whitelist.\n"),
            Err("srvr: srvr is not executed because it is not in the whitelist.".to_owned())
        );
        assert_eq!(
            parse_srvr(""),
            Err("empty answer to srvr (four-letter commands disabled?)".to_owned())
        );
        assert_eq!(
            parse_srvr("Mode: standalone\nZxid: 0xzz\nZookeeper version:\n:\n"),
            Ok(SrvrReply {
                version: None,
                mode: Some("standalone".to_owned()),
                zxid: None,
            })
        );
        let long = "x".repeat(10_000);
        assert_eq!(parse_srvr(&long).unwrap_err().len(), "srvr: ".len() + 120);
        assert!(parse_srvr("\u{fffd}\u{0}:\u{fffd}").is_err());
    }
}
