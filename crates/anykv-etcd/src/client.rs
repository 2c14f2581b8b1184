//! The connection to etcd: connecting (through whichever member answers
//! first, with a clear error when none does), the deadline, retry and
//! hedging rules every request follows, and decoding of replies.
//!
//! - A write goes to one member at a time (see [`crate::members`] for
//!   which). It is sent again, to another member when there is one, only
//!   if it certainly was not applied: it could not be sent (no
//!   connection), or the member refused it before acting (no leader).
//!   Otherwise its outcome is unknown and the error says so: `Timeout`
//!   when the request timeout ran out, `Unavailable` when the connection
//!   broke or the member was found down (or naming a new leader) first.
//! - A read is *hedged*: if its member has not answered within
//!   [`HEDGE_AFTER`], the same read also goes to another member, and the
//!   first answer wins; a read that fails with `Unavailable` is tried
//!   again on another member. So a member that froze costs a read about
//!   [`HEDGE_AFTER`] until the member's probe finds it down, and nothing
//!   after that.
//! - Everything ends within the request timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anykv_core::{Error, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, StatusResponse};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::config::EtcdConfig;
use crate::errors::{
    describe, explain_connect_failure, is_unavailable, map_error_at, not_applied, not_sent,
};
use crate::layout::probe_key;
use crate::members::{Conn, MemberStatus, Members, PROBE_TIMEOUT};
use crate::tls::{install_crypto_provider, tls_options};

pub(crate) use crate::config::BACKEND;

/// How long a read waits for its member before it is also sent to
/// another one.
pub const HEDGE_AFTER: Duration = Duration::from_millis(250);

/// The pause before an attempt that failed is made again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The etcd members of one store and its request timeout.
#[derive(Clone)]
pub(crate) struct EtcdClient {
    members: Arc<Members>,
    request_timeout: Duration,
}

impl EtcdClient {
    /// Connects to every endpoint at once and returns as soon as one
    /// member answers (and accepts the credentials), within the connect
    /// timeout; the others are connected and probed in the background.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdClient> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), config.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member without a leader refuses requests at once rather
            // than holding them (and such a refusal is safe to resend).
            .with_require_leader(true);
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
        if urls.is_empty() {
            return Err(Error::Config("no etcd endpoint is configured".into()));
        }
        let members = Arc::new(Members::new(&urls));
        let contacts = (0..urls.len())
            .map(|i| Box::pin(first_contact(&members, i, &options, config.connect_timeout)));
        // The first member to answer wins; the other attempts stop here
        // (the probes take over).
        let first = futures::future::select_ok(contacts).await.map(|(i, _)| i);
        match first {
            Ok(i) => members.mark_up(i),
            Err(e) => return Err(explain_connect_failure(config, &urls, e).await),
        }
        members.start_probes(&options, config.connect_timeout);
        Ok(EtcdClient {
            members,
            request_timeout: config.request_timeout,
        })
    }

    /// The time one request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The member a new stream should use; `None` while no member has a
    /// connection.
    pub fn stream_conn(&self) -> Option<Conn> {
        self.members.pick(&[])
    }

    /// Stops probing the members (the store closed); requests still go
    /// where the last probes said.
    pub fn stop_probes(&self) {
        self.members.stop_probes();
    }

    /// What is known of each member, in endpoint order.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.members.list()
    }

    /// Asks every member for its status (etcd's maintenance `Status`), all
    /// at once, each within the request timeout: per member, in endpoint
    /// order, its address (`host:port`) and its answer or why there is
    /// none (a clean message). A member that does not answer costs the
    /// call no more than the request timeout and fails nothing else.
    pub async fn member_statuses(
        &self,
    ) -> Vec<(String, std::result::Result<StatusResponse, String>)> {
        let timeout = self.request_timeout;
        let asks = (0..self.members.len()).map(|i| {
            let url = self.members.url(i);
            let address = url.split_once("://").map_or(url, |(_, a)| a).to_owned();
            let client = self.members.client(i);
            async move {
                let answer = match client {
                    None => Err("not connected: the member was never reached".to_owned()),
                    Some(mut c) => match tokio::time::timeout(timeout, c.status()).await {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(e)) => Err(describe(&e)),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    },
                };
                (address, answer)
            }
        });
        futures::future::join_all(asks).await
    }

    /// Runs a request that may change something, within the request
    /// timeout: sent again only while it certainly was not applied. A
    /// request whose member is found down before it answers fails then
    /// with `Unavailable`, without waiting out the timeout.
    pub async fn send<T, F, Fut>(&self, op: &str, mut f: F) -> Result<T>
    where
        F: FnMut(&Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = instant_after(Instant::now(), self.request_timeout);
        let mut failed = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(conn) = self.members.pick(&failed) else {
                if Instant::now() + Duration::from_millis(100) < deadline {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                return Err(no_connection(op));
            };
            let sent = Instant::now();
            let attempt = tokio::select! {
                r = tokio::time::timeout(remaining, f(&conn)) => r,
                // No need to wait out the timeout for a member that stopped
                // answering: the outcome is just as unknown now. (Not before
                // the request itself waited a probe's timeout: a member
                // found down by a slow probe may well answer a request.)
                _ = async {
                    conn.gone_down().await;
                    tokio::time::sleep_until((sent + PROBE_TIMEOUT).into()).await;
                } => return Err(Error::Unavailable {
                    backend: BACKEND,
                    message: format!(
                        "{op}: the etcd member {} stopped answering; the request may or may \
                         not have been applied",
                        conn.url()
                    ),
                    source: None,
                }),
            };
            match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let unsent = not_sent(&e);
                    if unsent {
                        conn.unreachable();
                    }
                    let again = unsent || not_applied(&e);
                    if again && Instant::now() + Duration::from_millis(100) < deadline {
                        // A member that refused (no leader yet) may take it
                        // soon; one that could not be reached is passed
                        // over.
                        if unsent && !failed.contains(&conn.index()) {
                            failed.push(conn.index());
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    return Err(map_error_at(e, op, Some(conn.url())));
                }
                Err(_) => return Err(timeout_error(op, self.request_timeout)),
            }
        }
    }

    /// Runs a read within the request timeout, hedged: also sent to
    /// another member when its member has not answered within
    /// [`HEDGE_AFTER`], and tried again elsewhere when it fails with
    /// `Unavailable`.
    pub async fn read<T, F, Fut>(&self, op: &str, mut f: F) -> Result<T>
    where
        F: FnMut(&Conn) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = instant_after(Instant::now(), self.request_timeout);
        let mut launch = |conn: Conn, id: usize| {
            let attempt = f(&conn);
            async move { (id, conn, attempt.await) }
        };
        let mut inflight = FuturesUnordered::new();
        // The attempts in flight and the members whose attempt failed,
        // each with the members' health generation when it was sent: a
        // member is tried again only once the generation moved on (a new
        // leader, a member back), so an attempt stuck on a member that
        // waits for a dead leader is sent again once there is a new one.
        let mut busy: Vec<(usize, usize, u64)> = Vec::new();
        let mut failed: Vec<(usize, u64)> = Vec::new();
        // Attempts so far (their ids), and how many may be in flight.
        let (mut launched, most) = (0, 2 * self.members.len());
        let mut next_launch = Instant::now();
        loop {
            if Instant::now() >= next_launch && busy.len() < most {
                let generation = self.members.generation();
                let avoid: Vec<usize> = busy
                    .iter()
                    .map(|b| (b.1, b.2))
                    .chain(failed.iter().copied())
                    .filter(|(_, g)| *g == generation)
                    .map(|(i, _)| i)
                    .collect();
                let conn = if busy.is_empty() {
                    self.members.pick(&avoid)
                } else {
                    self.members.pick_other(&avoid)
                };
                if let Some(conn) = conn {
                    busy.push((launched, conn.index(), generation));
                    inflight.push(launch(conn, launched));
                    launched += 1;
                } else if busy.is_empty() && Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(no_connection(op));
                }
                let pause = if busy.is_empty() {
                    RETRY_PAUSE
                } else {
                    HEDGE_AFTER
                };
                next_launch = Instant::now() + pause;
            }
            tokio::select! {
                Some((id, conn, r)) = inflight.next(), if !inflight.is_empty() => {
                    busy.retain(|b| b.0 != id);
                    match r {
                        Ok(v) => return Ok(v),
                        Err(e) if not_sent(&e) || is_unavailable(&e) || not_applied(&e) => {
                            if not_sent(&e) {
                                conn.unreachable();
                            }
                            failed.retain(|f| f.0 != conn.index());
                            failed.push((conn.index(), self.members.generation()));
                            let late = Instant::now() + Duration::from_millis(100) >= deadline;
                            if busy.is_empty() && late {
                                return Err(map_error_at(e, op, Some(conn.url())));
                            }
                            // Another member may take it now.
                            next_launch = Instant::now()
                                + if busy.is_empty() { RETRY_PAUSE } else { Duration::ZERO };
                        }
                        Err(e) => return Err(map_error_at(e, op, Some(conn.url()))),
                    }
                }
                _ = tokio::time::sleep_until(next_launch.into()), if busy.len() < most => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return Err(timeout_error(op, self.request_timeout));
                }
            }
        }
    }
}

/// Builds member `i`'s client and checks that it answers a first request
/// (with the credentials); `i` once it did.
async fn first_contact(
    members: &Arc<Members>,
    i: usize,
    options: &ConnectOptions,
    timeout: Duration,
) -> Result<usize> {
    let url = members.url(i).to_owned();
    let client = with_deadline(timeout, "connect", &url, || {
        Client::connect([url.clone()], Some(options.clone()))
    })
    .await?;
    let client = members
        .set_client(i, client)
        .ok_or_else(|| no_connection("connect"))?;
    // A first request proves the server answers over this transport.
    with_deadline(timeout, "connect", &url, || {
        let mut kv = client.kv_client();
        async move {
            kv.get(probe_key(), Some(GetOptions::new().with_count_only()))
                .await
        }
    })
    .await?;
    Ok(i)
}

/// Runs a request with a deadline, mapping errors and trying again while
/// it could not be sent and the deadline leaves room.
async fn with_deadline<T, F, Fut>(timeout: Duration, op: &str, url: &str, mut f: F) -> Result<T>
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
                let again = not_sent(&e) || not_applied(&e);
                if again && Instant::now() + Duration::from_millis(100) < deadline {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                return Err(map_error_at(e, op, Some(url)));
            }
            Err(_) => return Err(timeout_error(op, timeout)),
        }
    }
}

fn timeout_error(op: &str, after: Duration) -> Error {
    Error::Timeout {
        backend: BACKEND,
        operation: op.to_owned(),
        after,
    }
}

fn no_connection(op: &str) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        message: format!("{op}: no etcd member could be reached"),
        source: None,
    }
}

/// An etcd revision (or lease id) as anykv's `u64`; 0 for a negative one.
pub(crate) fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// The replies of a transaction's operations. etcd-client panics on a
/// reply without its operation's result; here that is a `Backend` error,
/// for every transaction the backend sends.
pub(crate) fn op_responses(
    resp: &etcd_client::TxnResponse,
) -> Result<Vec<etcd_client::TxnOpResponse>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resp.op_responses())).map_err(|_| {
        Error::Backend {
            backend: BACKEND,
            message: "a transaction reply lacks an operation's result".into(),
            source: None,
        }
    })
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
