//! Connections, error mapping and timeouts.

use std::future::Future;
use std::time::Duration;

use anykv_core::Error;
use zookeeper_client as zk;

use crate::config::ZkConfig;
use crate::BACKEND;

/// Opens a session with the configured servers, credentials and timeouts,
/// giving up after `limit`: `Timeout` naming `limit` when no server
/// answered in time, `Unavailable` at once when no server accepts
/// connections at all (a refused port).
pub(crate) async fn connect(
    config: &ZkConfig,
    session_timeout: Duration,
    limit: Duration,
) -> anykv_core::Result<zk::Client> {
    let cluster = config.connect_string();
    let what = format!("connecting to {cluster}");
    let timed_out = || Error::Timeout {
        backend: BACKEND,
        operation: what.clone(),
        after: limit,
    };
    let mut connector = zk::Client::connector()
        .with_session_timeout(session_timeout)
        .with_connection_timeout(config.connect_timeout);
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
    let connecting = tokio::time::timeout(limit, connector.connect(&cluster));
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
async fn reachable(config: &ZkConfig, limit: Duration, what: &str) -> anykv_core::Result<()> {
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

/// Runs one call with the request timeout; a timeout is `Error::Timeout`.
pub(crate) async fn timed<T, F>(
    limit: Duration,
    what: &str,
    fut: F,
) -> anykv_core::Result<Result<T, zk::Error>>
where
    F: Future<Output = Result<T, zk::Error>>,
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

/// A random-enough token (not security relevant: it tells our own lock
/// nodes apart after a lost reply).
pub(crate) fn token() -> u64 {
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
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server.as_str()).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut reply = Vec::new();
        // The server closes the connection after its answer; a few KiB
        // are plenty.
        stream.take(16 * 1024).read_to_end(&mut reply).await.ok()?;
        Some(
            String::from_utf8_lossy(&reply)
                .lines()
                .any(|l| l.trim() == "Mode: standalone"),
        )
    };
    matches!(
        tokio::time::timeout(config.connect_timeout, probe).await,
        Ok(Some(true))
    )
}
