//! How `get` and `ls` print keys and values: escaped text, JSON, tables,
//! raw bytes to a pipe and escapes to a terminal, paging, and keys that
//! break the key rules. A `redb://` file keeps what one process wrote for
//! the next.

mod common;

use anykv_cli::output::unescape;
use common::{anykv, anykv_with_stdin, SHORT};
use serde_json::json;

/// A fresh `redb://` URL in its own directory (kept alive by the guard).
fn redb() -> (anykv_testserver::TempDir, String) {
    let dir = anykv_testserver::temp_dir("anykv-cli-output-");
    let url = format!("redb://{}/out.redb/app", dir.path().display());
    (dir, url)
}

fn put_bytes(url: &str, key: &str, value: &[u8]) -> u64 {
    let put = anykv_with_stdin(&["--url", url, "put", key, "-"], value);
    assert_eq!(put.code, Some(0), "{}", put.stderr);
    put.out().trim().parse().expect("a revision")
}

#[test]
fn ls_escapes_values_so_lines_split_and_decode() {
    let (_dir, url) = redb();
    let tricky: &[u8] = b"a\tb\nc\\d\x1b\xff";
    let r1 = put_bytes(&url, "k/1", tricky);
    let r2 = put_bytes(&url, "k/2", b"plain text");
    let ls = anykv(&["--url", &url, "ls", "k"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert_eq!(
        ls.out(),
        "k/1\ta\\tb\\nc\\\\d\\x1b\\xff\nk/2\tplain text\n".to_string()
    );
    let first = ls.lines()[0].clone();
    let (key, value) = first.split_once('\t').expect("one tab");
    assert_eq!(key, "k/1");
    assert_eq!(unescape(value), Some(tricky.to_vec()));

    let json = anykv(&["--url", &url, "ls", "k", "--output", "json"]);
    assert_eq!(
        json.json(),
        json!([
            {"key": "k/1", "value": "YQliCmNcZBv/", "encoding": "base64", "revision": r1},
            {"key": "k/2", "value": "plain text", "encoding": "utf8", "revision": r2},
        ])
    );

    let table = anykv(&["--url", &url, "-o", "table", "ls", "k"]);
    assert_eq!(
        table.lines(),
        vec![
            "KEY  REVISION  VALUE".to_string(),
            format!("k/1  {r1}         a\\tb\\nc\\\\d\\x1b\\xff"),
            format!("k/2  {r2}         plain text"),
        ]
    );
    let long = "x".repeat(100);
    put_bytes(&url, "long", long.as_bytes());
    let table = anykv(&["--url", &url, "-o", "table", "get", "long"]);
    let row = table.lines()[1].clone();
    assert!(row.ends_with(&format!("{}…", "x".repeat(39))), "{row:?}");
}

#[test]
fn get_writes_binary_values_exactly_to_a_pipe() {
    let (_dir, url) = redb();
    let binary: &[u8] = &[0, 1, 0xff, b'\n', 0x1b];
    put_bytes(&url, "bin", binary);
    let got = anykv(&["--url", &url, "get", "bin"]);
    assert_eq!((got.code, got.stdout.as_slice()), (Some(0), binary));
    let raw = anykv(&["--url", &url, "get", "bin", "--raw"]);
    assert_eq!(raw.stdout.as_slice(), binary);
    put_bytes(&url, "text", b"two\nlines");
    let text = anykv(&["--url", &url, "get", "text"]);
    assert_eq!(text.out(), "two\nlines\n");
    let json = anykv(&["--url", &url, "get", "bin", "--output", "json"]);
    assert_eq!(json.json()["encoding"], json!("base64"));
    assert_eq!(json.json()["value"], json!("AAH/Chs="));
}

/// `script` gives the command a terminal: the binary value is shown
/// escaped, with a note, instead of raw bytes.
#[test]
fn get_escapes_binary_values_to_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` command to give anykv a terminal");
        return;
    }
    let (_dir, url) = redb();
    put_bytes(&url, "bin", &[0, b'a', 0xff]);
    let line = format!("{} --url '{url}' get bin", common::BIN);
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let done = common::run(cmd, None, SHORT);
    assert_eq!(done.code, Some(0));
    let shown = String::from_utf8_lossy(&done.stdout).replace('\r', "");
    assert!(shown.starts_with("\\x00a\\xff\n"), "{shown:?}");
    assert!(
        shown.contains("anykv: the value is binary (3 bytes), shown escaped"),
        "{shown:?}"
    );
}

#[test]
fn ls_pages_with_limit_and_start_after() {
    let (_dir, url) = redb();
    for k in ["p/a", "p/b", "p/c", "p/d"] {
        put_bytes(&url, k, b"v");
    }
    let page = anykv(&["--url", &url, "ls", "p", "--keys-only", "--limit", "2"]);
    assert_eq!(page.out(), "p/a\np/b\n");
    let next = anykv(&[
        "--url",
        &url,
        "ls",
        "p",
        "--keys-only",
        "--limit",
        "2",
        "--start-after",
        "p/b",
    ]);
    assert_eq!(next.out(), "p/c\np/d\n");
    let keys = anykv(&[
        "--url",
        &url,
        "--json",
        "ls",
        "p",
        "--keys-only",
        "--limit",
        "1",
    ]);
    assert_eq!(keys.json(), json!([{"key": "p/a", "revision": 1}]));
    let zero = anykv(&["--url", &url, "ls", "--limit", "0"]);
    assert_eq!(zero.code, Some(2));
}

/// No client of the API can write a key that breaks the key rules, so the
/// CLI refuses one as an argument, with a clear message and 2.
#[test]
fn keys_that_break_the_rules_are_refused_as_arguments() {
    let (_dir, url) = redb();
    for args in [
        vec!["get", "a//b"],
        vec!["put", "a//b", "v"],
        vec!["rm", "a//b"],
        vec!["ls", "--start-after", "a//b"],
    ] {
        let mut full = vec!["--url", url.as_str()];
        full.extend(args.iter().copied());
        let done = anykv(&full);
        assert_eq!(done.code, Some(2), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains("a//b"), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains("empty"), "{args:?}: {}", done.stderr);
    }
}

/// A key another program wrote straight into the redb file, breaking the
/// key rules (`a//b`, a tab): `ls` lists it escaped and names it on
/// standard error; it cannot be addressed.
#[test]
fn ls_lists_foreign_keys_that_break_the_rules_escaped() {
    let (dir, url) = redb();
    let rev = put_bytes(&url, "a/ok", b"fine");
    // The redb backend's own layout: table `anykv_kv`, full key
    // `root/key`, value `[1][revision][deadline 0][lease 0][bytes]`.
    let kv: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("anykv_kv");
    let mut entry = vec![1u8];
    entry.extend_from_slice(&rev.to_le_bytes());
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry.extend_from_slice(b"odd");
    {
        let db = redb::Database::open(dir.path().join("out.redb")).expect("open the file");
        let txn = db.begin_write().expect("a write transaction");
        {
            let mut table = txn.open_table(kv).expect("the key table");
            table.insert("app/a//b", entry.as_slice()).expect("insert");
            table
                .insert("app/a/t\tab", entry.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let ls = anykv(&["--url", &url, "ls", "a"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert_eq!(ls.out(), "a//b\todd\na/ok\tfine\na/t\\tab\todd\n");
    assert_eq!(
        ls.stderr,
        "anykv: key a//b breaks anykv's key rules (another client wrote it): listed escaped; \
         get, put and rm cannot address it\n\
         anykv: key a/t\\tab breaks anykv's key rules (another client wrote it): listed \
         escaped; get, put and rm cannot address it\n"
    );
    let get = anykv(&["--url", &url, "get", "a//b"]);
    assert_eq!(get.code, Some(2));
}
