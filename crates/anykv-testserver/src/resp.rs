//! A minimal RESP2 client over a plain `TcpStream`, enough for the
//! fixtures to ask Redis and Sentinel about roles, replication and cluster
//! state without a Redis client dependency: one command per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A reply in RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and the like.
    Simple(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bulk string (lossily decoded as UTF-8), or `None` for `$-1`.
    Bulk(Option<String>),
    /// `*n` array, or `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string reply.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// In a flat `[field, value, field, value, ...]` array (what
    /// `SENTINEL replicas` gives for each replica), the value of `field`.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|pair| pair.first().and_then(Reply::as_str) == Some(field))
            .and_then(|pair| pair.get(1))
            .and_then(Reply::as_str)
    }
}

/// Sends one command to the server on `127.0.0.1:port` and reads its
/// reply; an error for a failed connection, a time-out (each of connect,
/// write and read is bounded by `timeout`) or a reply that is not RESP.
/// A server's `-ERR` reply is `Ok(Reply::Error(..))`.
pub fn command(port: u16, args: &[&str], timeout: Duration) -> Result<Reply, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        request.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        request.extend_from_slice(a.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&request)
        .map_err(|e| format!("send {args:?} to {addr}: {e}"))?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader).map_err(|e| format!("{args:?} to {addr}: {e}"))
}

/// Like [`command`], and a `-ERR` reply is an error too.
pub fn command_ok(port: u16, args: &[&str], timeout: Duration) -> Result<Reply, String> {
    match command(port, args, timeout)? {
        Reply::Error(e) => Err(format!("{args:?} to 127.0.0.1:{port}: {e}")),
        r => Ok(r),
    }
}

/// `INFO section` as `field:value` lines; the value of `field` in it.
pub fn info_field(port: u16, section: &str, field: &str, timeout: Duration) -> Option<String> {
    text_field(port, &["INFO", section], field, timeout)
}

/// The value of `field` in the `field:value` lines that a command such as
/// `CLUSTER INFO` answers with.
pub fn text_field(port: u16, args: &[&str], field: &str, timeout: Duration) -> Option<String> {
    let reply = command_ok(port, args, timeout).ok()?;
    let text = reply.as_str()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v.trim().to_owned())
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the connection closed before a reply".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || {
        rest.parse::<i64>()
            .map_err(|e| format!("bad length or number {rest:?}: {e}"))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        "*" => {
            let n = number()?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(format!("not a RESP reply: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let text = b"*3\r\n$4\r\nname\r\n$-1\r\n*2\r\n:7\r\n+OK\r\n".to_vec();
        let r = read_reply(&mut &text[..]).unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Bulk(Some("name".into())),
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Integer(7), Reply::Simple("OK".into())])),
            ]))
        );
        let flat = b"*4\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$4\r\n6380\r\n".to_vec();
        let r = read_reply(&mut &flat[..]).unwrap();
        assert_eq!(r.field("port"), Some("6380"));
        assert_eq!(r.field("flags"), None);
        assert!(
            read_reply(&mut &b"-ERR no\r\n"[..]).is_ok_and(|r| r == Reply::Error("ERR no".into()))
        );
        assert!(read_reply(&mut &b"?\r\n"[..]).is_err());
    }
}
