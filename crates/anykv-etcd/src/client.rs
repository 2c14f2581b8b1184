//! The connection to etcd: connecting (with a clear error when the first
//! contact fails), the deadline and retry rules every request follows,
//! the mapping of etcd's errors to anykv's, and decoding of replies.
//!
//! A write that times out is never retried; one that could not be sent
//! (no connection to that endpoint) is tried again within the request
//! timeout, as are reads that fail with `Unavailable`.

use std::future::Future;
use std::time::{Duration, Instant};

use anykv_core::{Error, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, LeaseClient, WatchClient};

use crate::config::EtcdConfig;
use crate::errors::{explain_connect_failure, is_unavailable, map_error, not_sent};
use crate::layout::probe_key;
use crate::tls::{install_crypto_provider, tls_options};

/// The backend's name, as in errors.
pub(crate) const BACKEND: &str = "etcd";

/// The largest gRPC message sent or received (etcd enforces its own).
const MAX_MESSAGE: usize = usize::MAX >> 1;

/// The etcd client of one store and its request timeout.
#[derive(Clone)]
pub(crate) struct EtcdClient {
    client: Client,
    request_timeout: Duration,
}

impl EtcdClient {
    /// Connects and checks that etcd answers (and accepts the credentials)
    /// within the connect timeout.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdClient> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), config.request_timeout)
            .with_keep_alive_while_idle(true);
        let scheme = if let Some(tls) = &config.tls {
            install_crypto_provider();
            options = options.with_tls(tls_options(tls)?);
            "https"
        } else {
            "http"
        };
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let connected = with_deadline(config.connect_timeout, "connect", Retry::IfNotSent, || {
            Client::connect(&urls, Some(options.clone()))
        })
        .await;
        let client = match connected {
            Ok(client) => EtcdClient {
                client,
                request_timeout: config.request_timeout,
            },
            Err(e) => return Err(explain_connect_failure(config, &urls, e).await),
        };
        // A first request proves the server answers over this transport.
        let probe = with_deadline(config.connect_timeout, "connect", Retry::IfNotSent, || {
            let mut kv = client.kv();
            async move {
                kv.get(probe_key(), Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await;
        match probe {
            Ok(_) => Ok(client),
            Err(e) => Err(explain_connect_failure(config, &urls, e).await),
        }
    }

    /// The key-value service, without a message size limit of its own.
    pub fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The lease service.
    pub fn leases(&self) -> LeaseClient {
        self.client.lease_client()
    }

    /// The watch service, without a message size limit of its own.
    pub fn watches(&self) -> WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// The time one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Runs a request that may change something, within the request
    /// timeout: retried only while it could not be sent.
    pub async fn send<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        with_deadline(self.request_timeout, op, Retry::IfNotSent, f).await
    }

    /// Runs a read within the request timeout: retried also when the
    /// server is unavailable.
    pub async fn read<T, F, Fut>(&self, op: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        with_deadline(self.request_timeout, op, Retry::IfUnavailable, f).await
    }
}

/// Which failures [`with_deadline`] tries again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only a request that never reached a server (safe for writes).
    IfNotSent,
    /// Also one that failed with `Unavailable` (reads).
    IfUnavailable,
}

/// Runs a request with a deadline, mapping errors and retrying what
/// `retry` allows while the deadline leaves room.
async fn with_deadline<T, F, Fut>(timeout: Duration, op: &str, retry: Retry, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let deadline = instant_after(Instant::now(), timeout);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let again = not_sent(&e) || (retry == Retry::IfUnavailable && is_unavailable(&e));
                if again && Instant::now() + Duration::from_millis(100) < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return Err(map_error(e, op));
            }
            Err(_) => {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: op.to_owned(),
                    after: timeout,
                })
            }
        }
    }
}

/// An etcd revision (or lease id) as anykv's `u64`; 0 for a negative one.
pub(crate) fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// The revision in a response header; an error if the server sent none.
pub(crate) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    match header.map(|h| h.revision()) {
        Some(r) if r > 0 => Ok(r),
        _ => Err(Error::Backend {
            backend: BACKEND,
            message: "the server's response carries no revision".into(),
            source: None,
        }),
    }
}

/// `at + d`, saturating at a year (a server may send any TTL).
pub(crate) fn instant_after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(at)
}
