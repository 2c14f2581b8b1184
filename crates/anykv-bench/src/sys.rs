//! What the process uses: resident memory and TCP connections, read from
//! `/proc` (Linux). Elsewhere both read as `None`.

use std::collections::HashSet;

/// The process's resident set size in bytes (`VmRSS` of
/// `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How many TCP connections this process has open to remote port `port`
/// (its socket descriptors matched against `/proc/net/tcp` and `tcp6`).
pub fn tcp_connections_to(port: u16) -> Option<usize> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            // cols[2] is the remote address `hex-ip:hex-port`, cols[3] the
            // state (01 = established), cols[9] the inode.
            let remote_port = cols[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let inode = cols[9].parse::<u64>().ok();
            if remote_port == Some(port)
                && cols[3] == "01"
                && inode.is_some_and(|i| inodes.contains(&i))
            {
                count += 1;
            }
        }
    }
    Some(count)
}
