//! The store's connection to the server: connecting, running scripts and
//! commands within the request timeout (reads retried, writes never),
//! mapping Redis errors to anykv's, and decoding replies.
//!
//! Calls go through a `ConnectionManager` that reconnects by itself. A call
//! that cannot complete within `request_timeout` fails with `Timeout`, a
//! lost connection with `Unavailable`; a write that fails so may have been
//! applied and is never retried. Wrong credentials give `Unauthenticated`,
//! ACL refusals `PermissionDenied`.

use std::future::Future;
use std::time::{Duration, Instant};

use anykv_core::backend::ClosedFlag;
use anykv_core::{Bytes, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, ScriptInvocation, Value};

use crate::config::{RedisConfig, BACKEND};
use crate::layout::Layout;

/// How long a read waits before it tries again after a transient failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A store's connection: the shared `ConnectionManager` for calls, the
/// client for the watch reader's own connection, and the store's closed
/// flag, which stops retries once the store is closed.
pub(crate) struct RedisClient {
    client: Client,
    conn: ConnectionManager,
    /// `{ns}:`, every script's first argument.
    prefix: String,
    /// The change stream's length bound, every script's second argument.
    history: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    closed: ClosedFlag,
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

impl RedisClient {
    /// Connects as `config` says, within its connect and request timeouts.
    pub(crate) async fn connect(config: &RedisConfig, layout: &Layout) -> Result<Self> {
        let scheme = if config.tls { "rediss" } else { "redis" };
        let host = if config.host.contains(':') && !config.host.starts_with('[') {
            format!("[{}]", config.host)
        } else {
            config.host.clone()
        };
        let addr = format!("{scheme}://{host}:{}/{}", config.port, config.db);
        let mut info = redis::IntoConnectionInfo::into_connection_info(addr.as_str())
            .map_err(|e| Error::Config(format!("invalid Redis address: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &config.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &config.password {
            settings = settings.set_password(p);
        }
        info = info.set_redis_settings(settings);
        let client = if config.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = match &config.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    Error::Config(format!("cannot read ca_file {}: {e}", path.display()))
                })?),
                None => None,
            };
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            Client::open(info)
        }
        .map_err(|e| Error::Config(format!("invalid Redis configuration: {e}")))?;
        let mgr_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.request_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connecting = config
            .connect_timeout
            .saturating_add(config.request_timeout);
        let conn = match tokio::time::timeout(
            connecting,
            ConnectionManager::new_with_config(client.clone(), mgr_config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(map_error(e, "connect")),
            Err(_) => {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: "connect".into(),
                    after: connecting,
                })
            }
        };
        Ok(RedisClient {
            client,
            conn,
            prefix: layout.prefix().to_owned(),
            history: config.history.to_string(),
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            closed: ClosedFlag::new(BACKEND),
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

    /// A script call with the namespace's prefix and history bound first,
    /// then `args`.
    fn invocation<'a>(&self, script: &'a Script, args: &[&[u8]]) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(self.prefix.as_bytes()).arg(self.history.as_bytes());
        for a in args {
            inv.arg(*a);
        }
        inv
    }

    /// Runs a script once, within the timeout. For writes: a timeout
    /// says the write may have been applied. `what` is only built when
    /// there is an error to report.
    pub(crate) async fn write_script(
        &self,
        script: &Script,
        args: &[&[u8]],
        what: impl CallName,
    ) -> Result<Value> {
        let inv = self.invocation(script, args);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.request_timeout, inv.invoke_async::<Value>(&mut conn)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, &what.describe())),
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: format!("{} (may have been applied)", what.describe()),
                after: self.request_timeout,
            }),
        }
    }

    /// Runs a read-only script, retrying transient failures within the
    /// timeout.
    pub(crate) async fn read_script(
        &self,
        script: &Script,
        args: &[&[u8]],
        what: &str,
    ) -> Result<Value> {
        let inv = &self.invocation(script, args);
        self.retrying(what, move |mut conn| async move {
            inv.invoke_async::<Value>(&mut conn).await
        })
        .await
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
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.request_timeout, cmd.query_async::<Value>(&mut conn)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, what)),
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: what.to_owned(),
                after: self.request_timeout,
            }),
        }
    }

    /// Calls `call` on the store's connection until it succeeds, fails
    /// for good, or the timeout runs out. For reads only.
    async fn retrying<F, Fut>(&self, what: &str, mut call: F) -> Result<Value>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>>,
    {
        let deadline = Instant::now()
            .checked_add(self.request_timeout)
            .unwrap_or_else(Instant::now);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match tokio::time::timeout(left, call(self.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => map_error(e, what),
                Err(_) => {
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        operation: what.to_owned(),
                        after: self.request_timeout,
                    })
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
    pub(crate) async fn reader_connection(&self, block: Duration) -> Result<MultiplexedConnection> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(block.saturating_add(self.request_timeout)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| map_error(e, "watch reader connect"))
    }

    /// Runs a script once on the reader's connection, within the timeout.
    pub(crate) async fn script_on(
        &self,
        conn: &mut MultiplexedConnection,
        script: &Script,
        args: &[&[u8]],
        what: &str,
    ) -> Result<Value> {
        let inv = self.invocation(script, args);
        match tokio::time::timeout(self.request_timeout, inv.invoke_async::<Value>(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, what)),
            Err(_) => Err(Error::Timeout {
                backend: BACKEND,
                operation: what.to_owned(),
                after: self.request_timeout,
            }),
        }
    }
}

/// An anykv error for a Redis error of the call `what`: `Unauthenticated`,
/// `PermissionDenied`, `Unavailable` (retryable) or `Backend`.
pub(crate) fn map_error(e: RedisError, what: &str) -> Error {
    let code = e.code().unwrap_or("");
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "WRONGPASS"
        || code == "NOAUTH"
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return Error::Unauthenticated {
            backend: BACKEND,
            message: format!("{what}: {text}"),
        };
    }
    if code == "NOPERM"
        || text.contains("NOPERM")
        || text.contains("can't access at least one of the keys")
        || text.contains("has no permissions")
    {
        return Error::PermissionDenied {
            backend: BACKEND,
            message: format!("{what}: {text}"),
        };
    }
    if e.is_timeout() {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: the server did not answer in time (may have been applied)"),
            source: Some(Box::new(e)),
        };
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            code,
            "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "BUSY" | "CLUSTERDOWN"
        )
    {
        return Error::Unavailable {
            backend: BACKEND,
            message: format!("{what}: {text}"),
            source: Some(Box::new(e)),
        };
    }
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}: {text}"),
        source: Some(Box::new(e)),
    }
}

/// `Backend`: the server's reply to `what` is not what the backend sent
/// for.
pub(crate) fn unexpected_reply(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{what}: unexpected reply from the server"),
        source: None,
    }
}

/// A reply's bytes (strings, numbers, `OK`), copied.
pub(crate) fn as_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// Like [`as_bytes`], taking the bytes out of the reply without a copy.
pub(crate) fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        other => as_bytes(&other),
    }
}

/// A reply as an unsigned number (an integer, or a string of one).
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// A reply as a signed number (an integer, or a string of one).
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(&as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// A reply's elements (an array or a set; nil is empty).
pub(crate) fn as_array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// A script's `{code, n}` reply.
pub(crate) fn code_pair(v: Value, what: &str) -> Result<(i64, i64)> {
    let a = as_array(v).ok_or_else(|| unexpected_reply(what))?;
    match (a.first().and_then(as_i64), a.get(1).and_then(as_i64)) {
        (Some(c), Some(n)) => Ok((c, n)),
        _ => Err(unexpected_reply(what)),
    }
}

/// The `STATE` script's `{epoch, revision}`.
pub(crate) fn parse_state(v: Value, what: &str) -> Result<(String, u64)> {
    let a = as_array(v).ok_or_else(|| unexpected_reply(what))?;
    let epoch = a
        .first()
        .and_then(as_bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unexpected_reply(what))?;
    let rev = a
        .get(1)
        .and_then(as_u64)
        .ok_or_else(|| unexpected_reply(what))?;
    Ok((epoch, rev))
}

/// One change record of the stream, `{rev}-{seq}`.
#[derive(Debug)]
pub(crate) struct ChangeRecord {
    /// The revision (the entry ID's first part).
    pub(crate) rev: u64,
    /// 0 for the revision's data record; 1 and up for unlock records.
    pub(crate) seq: u64,
    /// The full key (or lock name).
    pub(crate) key: String,
    /// `p`ut, `d`elete, `u`nlock; 0 for an entry that is not ours.
    pub(crate) kind: u8,
    /// The value of a put.
    pub(crate) value: Bytes,
}

fn parse_id(id: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(id).ok()?;
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses `[id, [field, value, ...]]` entries. An entry whose fields are
/// not ours (kind 0) is kept, so the reader moves past it.
pub(crate) fn parse_records(v: Value) -> Option<Vec<ChangeRecord>> {
    let mut out = Vec::new();
    for item in as_array(v)? {
        let mut parts = as_array(item)?.into_iter();
        let Some((rev, seq)) = parts
            .next()
            .as_ref()
            .and_then(as_bytes)
            .and_then(|id| parse_id(&id))
        else {
            continue;
        };
        let mut e = ChangeRecord {
            rev,
            seq,
            key: String::new(),
            kind: 0,
            value: Bytes::new(),
        };
        let fields = parts.next().and_then(as_array).unwrap_or_default();
        let mut it = fields.into_iter();
        let mut key = None;
        let mut kind = 0;
        while let (Some(f), Some(val)) = (it.next(), it.next()) {
            let (Some(f), Some(val)) = (as_bytes(&f), into_bytes(val)) else {
                continue;
            };
            match f.as_slice() {
                b"k" => key = String::from_utf8(val).ok(),
                b"t" => kind = val.first().copied().unwrap_or(0),
                b"v" => e.value = Bytes::from(val),
                _ => {}
            }
        }
        if let Some(k) = key {
            e.key = k;
            e.kind = kind;
        }
        out.push(e);
    }
    Some(out)
}

/// Parses an `XREAD` reply: `[[stream, entries]]` (RESP2) or a map (RESP3).
pub(crate) fn parse_xread(v: Value) -> Option<Vec<ChangeRecord>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Map(m) => {
            let mut out = Vec::new();
            for (_, entries) in m {
                out.extend(parse_records(entries)?);
            }
            Some(out)
        }
        other => {
            let mut out = Vec::new();
            for stream in as_array(other)? {
                let mut parts = as_array(stream)?.into_iter();
                let _name = parts.next()?;
                out.extend(parse_records(parts.next()?)?);
            }
            Some(out)
        }
    }
}
