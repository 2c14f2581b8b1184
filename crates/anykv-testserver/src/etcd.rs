//! An etcd server for the tests: Debian's `etcd` on free loopback ports
//! with a temporary data directory, so [`EtcdServer::stop`] and
//! [`EtcdServer::start`] make a restart that keeps the data.
//!
//! Variants: [`EtcdServer::start_with_auth`] (a `root` user with a password,
//! auth enabled through `etcdctl`) and [`EtcdServer::start_tls`] (a CA and a
//! server certificate made with `openssl` in the server's directory).
//! [`shared_url`] is one server for a whole test binary, or
//! `ANYKV_ETCD_URL` when set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{free_port, require_binary, temp_dir, wait_for_port, Process, TempDir};

/// A running (or stopped) `etcd` owned by a test.
#[derive(Debug)]
pub struct EtcdServer {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    binary: PathBuf,
    tls: bool,
    client_auth: bool,
    process: Option<Process>,
}

fn binary() -> PathBuf {
    require_binary(
        "etcd",
        &["/usr/bin/etcd", "/usr/local/bin/etcd"],
        "etcd-server",
        "ANYKV_ETCD_URL",
    )
}

impl EtcdServer {
    /// Starts a plain server on free ports.
    pub fn start_new() -> EtcdServer {
        Self::start_with(false)
    }

    /// Starts a server serving clients over TLS only, with a CA
    /// (`ca_file()`) and a server certificate for `127.0.0.1` and
    /// `localhost` made by `openssl`.
    pub fn start_tls() -> EtcdServer {
        Self::start_with(true)
    }

    /// Like [`EtcdServer::start_tls`], and clients must present a
    /// certificate signed by the CA: `client_cert()` gives one.
    pub fn start_tls_client_auth() -> EtcdServer {
        let dir = temp_dir("anykv-etcd-");
        crate::make_test_certificates(dir.path());
        make_client_certificate(dir.path());
        let mut s = EtcdServer {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            binary: binary(),
            tls: true,
            client_auth: true,
            process: None,
        };
        s.start();
        s
    }

    /// The client certificate and key (PEM files) of a server started with
    /// [`EtcdServer::start_tls_client_auth`].
    pub fn client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        self.client_auth.then(|| {
            (
                self.dir.path().join("client.crt"),
                self.dir.path().join("client.key"),
            )
        })
    }

    /// Starts a server with auth enabled: user `root` (with the `root`
    /// role) and `password`, set up through etcd's JSON gateway.
    pub fn start_with_auth(password: &str) -> EtcdServer {
        let s = Self::start_new();
        let steps = [
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"root","password":"{password}"}}"#),
            ),
            (
                "/v3/auth/user/grant",
                r#"{"user":"root","role":"root"}"#.to_owned(),
            ),
            ("/v3/auth/enable", "{}".to_owned()),
        ];
        for (path, body) in steps {
            if let Err(e) = s.gateway(path, &body) {
                panic!("etcd {path} failed: {e}");
            }
        }
        s
    }

    /// POSTs `body` (JSON) to etcd's gRPC gateway at `path` (such as
    /// `/v3/lease/leases`) of a plain (non-TLS) server; the response body,
    /// or an error for a failed connection or a status other than 200.
    pub fn gateway(&self, path: &str, body: &str) -> Result<String, String> {
        http_post(self.client_port, path, body, Duration::from_secs(10))
    }

    /// Grants a lease of `ttl_secs` through the gateway (nothing keeps it
    /// alive); its id.
    pub fn grant_lease(&self, ttl_secs: i64) -> Result<i64, String> {
        let body = self.gateway("/v3/lease/grant", &format!("{{\"TTL\":{ttl_secs}}}"))?;
        let id = body
            .split("\"ID\":")
            .nth(1)
            .ok_or_else(|| format!("no lease id in {body}"))?;
        let id: String = id
            .trim_start_matches([' ', '"'])
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        id.parse().map_err(|e| format!("lease id in {body}: {e}"))
    }

    /// Puts each `(key, value)` through the gateway in one transaction (so
    /// all at one revision), bound to `lease` if it is not 0.
    pub fn txn_put(&self, pairs: &[(&str, &str)], lease: i64) -> Result<String, String> {
        let ops: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{{\"requestPut\":{{\"key\":\"{}\",\"value\":\"{}\",\"lease\":\"{lease}\"}}}}",
                    base64(k.as_bytes()),
                    base64(v.as_bytes())
                )
            })
            .collect();
        self.gateway(
            "/v3/kv/txn",
            &format!("{{\"success\":[{}]}}", ops.join(",")),
        )
    }

    /// How many leases the server holds (plain servers without auth).
    pub fn lease_count(&self) -> Result<usize, String> {
        let body = self.gateway("/v3/lease/leases", "{}")?;
        Ok(body.matches("\"ID\"").count())
    }

    fn start_with(tls: bool) -> EtcdServer {
        let dir = temp_dir("anykv-etcd-");
        if tls {
            crate::make_test_certificates(dir.path());
        }
        let mut s = EtcdServer {
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            binary: binary(),
            tls,
            client_auth: false,
            process: None,
        };
        s.start();
        s
    }

    /// `host:port` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// `etcd://127.0.0.1:port` (or `etcds://` for TLS), without a root.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        format!("{scheme}://{}", self.endpoint())
    }

    /// The CA certificate of a TLS server.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.crt"))
    }

    /// Starts the server (again), with the same ports and data.
    pub fn start(&mut self) {
        if self.process.as_mut().is_some_and(|p| p.is_running()) {
            return;
        }
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = member_command(
            &self.binary,
            "t",
            &self.dir.path().join("data"),
            (&client, &peer),
            &format!("t={peer}"),
        );
        if self.tls {
            cmd.arg("--cert-file")
                .arg(self.dir.path().join("server.crt"))
                .arg("--key-file")
                .arg(self.dir.path().join("server.key"));
        }
        if self.client_auth {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(self.dir.path().join("ca.crt"));
        }
        let p = Process::spawn("etcd", cmd, self.dir.path().join("etcd.log"));
        if let Err(e) = wait_for_port(self.client_port, Duration::from_secs(30)) {
            let tail = p.log_tail(3000);
            panic!("etcd did not start: {e}\n{tail}");
        }
        // Wait until it serves requests, not just accepts connections.
        self.process = Some(p);
        if !self.tls {
            for _ in 0..200 {
                if self.gateway("/v3/kv/range", r#"{"key":"AA=="}"#).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops the server gracefully, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, so requests hang instead of failing. Undo with
    /// [`EtcdServer::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(p) = &self.process {
            if let Err(e) = p.signal(sig) {
                panic!("etcd: {e}");
            }
        }
    }

    /// The server's log so far (its last `bytes`).
    pub fn log_tail(&self, bytes: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(bytes))
            .unwrap_or_default()
    }

    /// The data directory's parent.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The URL (without a root) of one etcd server for the whole test binary:
/// `ANYKV_ETCD_URL` if set, otherwise a server started on first use and
/// stopped when the test process exits.
pub fn shared_url() -> String {
    if let Ok(url) = std::env::var("ANYKV_ETCD_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    shared_server()
        .lock()
        .map(|s| s.url())
        .unwrap_or_else(|e| e.into_inner().url())
}

/// Freezes (`pause = true`, SIGSTOP) or resumes (SIGCONT) the shared
/// server of [`shared_url`]; an error when that is `ANYKV_ETCD_URL`'s.
pub fn pause_shared(pause: bool) -> Result<(), String> {
    let server = shared().ok_or("the server at ANYKV_ETCD_URL is not the tests' to pause")?;
    let s = server.lock().unwrap_or_else(|e| e.into_inner());
    if pause {
        s.pause();
    } else {
        s.resume();
    }
    Ok(())
}

/// The server behind [`shared_url`] when this process started it
/// (`None` when `ANYKV_ETCD_URL` is set).
pub fn shared() -> Option<&'static Mutex<EtcdServer>> {
    match std::env::var("ANYKV_ETCD_URL") {
        Ok(url) if !url.is_empty() => None,
        _ => Some(shared_server()),
    }
}

fn shared_server() -> &'static Mutex<EtcdServer> {
    static SERVER: OnceLock<Mutex<EtcdServer>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = EtcdServer::start_new();
        remove_after_exit(server.dir());
        Mutex::new(server)
    })
}

/// A server in a `static` is never dropped: its process is stopped by the
/// watchdog, and its directory is removed by this one when the test
/// process exits.
fn remove_after_exit(dir: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg("while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; sleep 5; rm -rf -- \"$2\"")
        .arg("anykv-etcd-cleanup")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

fn make_client_certificate(dir: &Path) {
    crate::openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=root",
        ],
    );
    let _ = std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    );
    crate::openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.crt",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
}

/// Standard base64 with padding (the gateway's encoding of bytes).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The command that starts one etcd member `name` with its data in
/// `data`, serving clients at `urls.0` and peers at `urls.1`, in the
/// cluster `initial` (`name=peer-url,...`), logging with zap.
pub(crate) fn member_command(
    binary: &Path,
    name: &str,
    data: &Path,
    urls: (&str, &str),
    initial: &str,
) -> Command {
    let (client, peer) = urls;
    let mut cmd = Command::new(binary);
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data)
        .arg("--listen-client-urls")
        .arg(client)
        .arg("--advertise-client-urls")
        .arg(client)
        .arg("--listen-peer-urls")
        .arg(peer)
        .arg("--initial-advertise-peer-urls")
        .arg(peer)
        .arg("--initial-cluster")
        .arg(initial)
        .arg("--logger")
        .arg("zap");
    cmd
}

/// POSTs JSON to etcd's gRPC gateway at `127.0.0.1:port` and `path`, every
/// step bounded by `timeout`: the response body, or an error for a failed
/// connection or a status other than 200.
pub(crate) fn http_post(
    port: u16,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let status_ok = response.lines().next().is_some_and(|l| l.contains(" 200 "));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    if status_ok {
        Ok(body)
    } else {
        Err(response)
    }
}
