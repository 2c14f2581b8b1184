//! The command line: every command, option and help text.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

const ABOUT: &str =
    "One key-value command line for etcd, Redis, ZooKeeper and the in-process store, \
chosen by URL.";

const LONG_ABOUT: &str = "\
One key-value command line for etcd, Redis, ZooKeeper and the in-process store, chosen by URL.

The store's URL comes from --url, or else from the ANYKV_URL environment variable:
  memory://[name][/root]                      the in-process store (lives only as long as
                                              one anykv command)
  etcd://[user:pass@]host:port[,host:port...]/root    etcds:// for TLS
  redis://[user:pass@]host:port/db[/root]             rediss:// for TLS
  zk://[user:pass@]host:port[,host:port...]/chroot
Every URL takes connect_timeout and request_timeout (250ms, 5s, 2m), which bound how long
a command waits for the server. Passwords in URLs are never printed.

Output: text for people by default; --json prints JSON on standard output (one object, or
for watch and conformance one object per line as things happen). Text lines that hold
several fields separate them with a tab; keys never contain tabs, and a value that is not
plain text is printed in double quotes with escapes. Errors print `anykv: <message>` on
standard error; with --json the error is also printed on standard output as
{\"error\": {\"kind\", \"message\", \"exit_code\"}}. Progress (watch in sync, conformance
header) goes to standard error.";

/// The `anykv` command line.
#[derive(Debug, Parser)]
#[command(
    name = "anykv",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// The store's URL (memory://, etcd://, etcds://, redis://, rediss://, zk://); default:
    /// the ANYKV_URL environment variable
    #[arg(
        long,
        global = true,
        env = "ANYKV_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub url: Option<String>,

    /// Print JSON on standard output instead of text (one object per line for watch and
    /// conformance)
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value
    #[command(
        long_about = "Print a key's value.\n\n\
            Text output is the value followed by a newline; --raw writes the value's bytes \
            exactly, with nothing added. --json prints {\"key\", \"value\", \"encoding\", \
            \"revision\"}: \"encoding\" is \"utf8\" when the value is UTF-8 text (\"value\" \
            is that text) and \"base64\" otherwise (\"value\" is the standard, padded base64 \
            of the bytes). A missing key exits with 4.",
        after_help = EXIT_CODES_HELP
    )]
    Get(GetArgs),

    /// Write a key; print its new revision
    #[command(
        long_about = "Write a key and print its new revision.\n\n\
            The value is the VALUE argument as text, the contents of --file PATH, or standard \
            input with `-` (as VALUE or as PATH). Values are stored byte for byte: nothing is \
            trimmed, so `echo x | anykv put k -` stores \"x\" and a newline (use printf).\n\n\
            --if-revision N writes only if the key is at revision N (compare-and-swap): 5 if \
            it is at another revision, 4 if it is absent. --create-only writes only if the \
            key is absent: 5 if it exists. --ttl makes the key vanish after that long unless \
            written again (raised to the backend's minimum TTL: 2 s on etcd). --json prints \
            {\"key\", \"revision\"}.",
        after_help = EXIT_CODES_HELP
    )]
    Put(PutArgs),

    /// Delete a key, or a whole tree with --tree
    #[command(
        long_about = "Delete a key, or with --tree a prefix and every key under it.\n\n\
            rm KEY prints nothing and exits with 4 when the key does not exist. \
            rm KEY --if-revision N deletes only at revision N (5 at another revision, 4 if \
            absent). rm --tree PREFIX deletes the key PREFIX and every key under PREFIX/ \
            (never PREFIXabc) and prints how many keys it deleted, 0 included; `rm --tree /` \
            empties the URL's root. --json prints {\"key\", \"deleted\": 1} or \
            {\"prefix\", \"deleted\": N}.",
        after_help = EXIT_CODES_HELP
    )]
    Rm(RmArgs),

    /// List the keys under a prefix
    #[command(
        long_about = "List every key under PREFIX/ at any depth, sorted (the key PREFIX itself \
            excluded; no prefix lists the whole root).\n\n\
            Text output is one `key<TAB>value` line per key, or just the key with \
            --keys-only. --json prints an array of {\"key\", \"value\", \"encoding\", \
            \"revision\"} (of {\"key\", \"revision\"} with --keys-only).",
        after_help = EXIT_CODES_HELP
    )]
    Ls(LsArgs),

    /// Watch a key or a tree and print every change as it happens
    #[command(
        long_about = "Watch a key (or with --tree every key under a prefix) and print each \
            event on its own line as it arrives.\n\n\
            First comes the current state (a PUT per existing key, in key order), then \
            `anykv: in sync at revision N` on standard error, then every change. Text lines: \
            `PUT<TAB>revision<TAB>key<TAB>value` and `DELETE<TAB>revision<TAB>key`. With \
            --json: {\"event\": \"put\", \"key\", \"value\", \"encoding\", \"revision\"}, \
            {\"event\": \"delete\", \"key\", \"revision\"}, and the sync point as \
            {\"event\": \"synced\", \"revision\"} on standard output.\n\n\
            --from-revision N resumes after revision N: every change after it, no current \
            state and no sync point (where the backend keeps history; ZooKeeper does not). \
            --count N exits with 0 after N PUT or DELETE events, current state included. \
            Ctrl-C stops the watch cleanly with 130. A watch that ends with an error (the \
            history is compacted, the consumer fell behind) exits with 1 and says from which \
            revision to resume.",
        after_help = EXIT_CODES_HELP
    )]
    Watch(WatchArgs),

    /// Take a lock; run a command while holding it, or hold it until Ctrl-C
    #[command(
        long_about = "Take the lock NAME (locks live in a namespace of their own: lock `a` is \
            not key `a`).\n\n\
            Without a command: print the lock's fencing token, hold the lock until Ctrl-C, \
            release it and exit with 130. With a command after `--`: run it while holding \
            the lock, with ANYKV_LOCK_NAME and ANYKV_LOCK_TOKEN (the fencing token) in its \
            environment, release the lock when it ends, and exit with its status; nothing is \
            printed, so the command's output is its own. A SIGINT or SIGTERM sent to anykv \
            is passed on to the command. If the lock is lost while held (its lease expired), \
            anykv says so, sends SIGTERM to the command and exits with 1.\n\n\
            --timeout bounds the wait: when it expires while another client holds the lock, \
            exit with 5. Without it, wait as long as it takes. --ttl is the lifetime of the \
            lease behind the lock, kept alive while anykv runs (default 15s). --json prints \
            {\"lock\", \"fencing_token\"} instead of the token.",
        after_help = EXIT_CODES_HELP
    )]
    Lock(LockArgs),

    /// Write keys bound to one lease, kept alive while a command runs or until Ctrl-C
    #[command(
        long_about = "Grant a lease of --ttl, write every KEY=VALUE bound to it, and keep it \
            alive; revoke it at the end, so the keys vanish. This is how a shell script \
            registers a service: `anykv lease --ttl 10s services/web/1=10.0.0.1:80 -- \
            ./server`.\n\n\
            Each pair is split at its first `=`: the key cannot contain `=`, the value can. \
            Without a command: print the lease's id, hold until Ctrl-C, revoke and exit with \
            130. With a command after `--`: run it with ANYKV_LEASE_ID in its environment, \
            revoke when it ends, and exit with its status. A SIGINT or SIGTERM sent to anykv \
            is passed on to the command. If anykv dies, the keys vanish within the TTL. If \
            the lease is lost (it could not be kept alive), anykv says so, sends SIGTERM to \
            the command and exits with 1. --json prints {\"lease\", \"ttl_seconds\", \
            \"keys\": [{\"key\", \"revision\"}]} instead of the id.",
        after_help = EXIT_CODES_HELP
    )]
    Lease(LeaseArgs),

    /// Campaign for leadership; run a command while leading, or lead until Ctrl-C
    #[command(
        long_about = "Campaign in the election NAME (anykv::recipes::Election, under \
            `elections/NAME`) and wait until this candidate leads.\n\n\
            Without a command: print the fencing token (one line; --json prints \
            {\"election\", \"fencing_token\", \"value\"}), lead until Ctrl-C or SIGTERM, \
            resign and exit with 130 (143 for SIGTERM). With a command after `--`: run it \
            while leading, with ANYKV_ELECTION_NAME and ANYKV_ELECTION_TOKEN (the fencing \
            token) in its environment, resign when it ends and exit with its status; a \
            SIGINT or SIGTERM sent to anykv is passed on to it. If leadership is lost (the \
            candidate's lease expired or its key vanished), anykv says so, sends SIGTERM to \
            the command, SIGKILL if it still runs after --grace, and exits with 1; without a \
            command it exits with 1 at once.\n\n\
            --value is what observers of the election see as the leader's value (an \
            address, say). --ttl is the lifetime of the candidate's lease, kept alive while \
            anykv runs: if anykv dies, the next candidate leads within about that long \
            (raised to the backend's minimum TTL: 2 s on etcd).",
        after_help = EXIT_CODES_HELP
    )]
    Elect(ElectArgs),

    /// Register service instances, list them, or watch them change
    #[command(
        long_about = "Service registry and discovery (anykv::recipes::Registry and \
            Discovery): instances live under `services/SERVICE/ID` as JSON \
            {\"service\", \"id\", \"address\", \"port\", \"metadata\", \"weight\", \
            \"enabled\"}, bound to the registering process's lease.\n\n\
            `services register SERVICE ID ADDR PORT` registers an instance and holds it \
            until Ctrl-C or SIGTERM (then deregisters and exits with 130 or 143), printing \
            each status change: `connecting`, `registered<TAB>lease N`, `retrying (...)`; \
            with --json one {\"state\", \"lease\", \"instances\", \"generation\", \
            \"repairs\", \"last_error\"} object per line. If anykv dies, the instance \
            vanishes within --ttl.\n\n\
            `services list SERVICE` prints one line per instance: \
            `ID<TAB>ADDRESS:PORT<TAB>weight=N<TAB>enabled|disabled`, then `<TAB>k=v` per \
            metadata entry; --json prints an array of instance objects.\n\n\
            `services watch SERVICE` prints the current instances as ADD lines, then \
            every change as `ADD<TAB>...`, `UPDATE<TAB>...` (same fields as list) or \
            `REMOVE<TAB>ID`, until Ctrl-C (130). With --json: {\"event\": \"add\"|\"update\"|\
            \"remove\", \"instance\"} per line and {\"event\": \"synced\"} after the current \
            instances.",
        after_help = EXIT_CODES_HELP
    )]
    Services(ServicesArgs),

    /// Run the conformance suite against a live server
    #[command(
        long_about = "Run the anykv conformance suite against the store a URL names, and print \
            one line per case as it finishes, then a total.\n\n\
            Lines: `pass        NAME (0.31 s)`, `FAIL        NAME (1.20 s): reason`, \
            `unsupported NAME (0.01 s): capability`, then `N cases: P passed, F failed, U \
            unsupported`. Exits with 0 when no case failed (unsupported cases are allowed: \
            the backend's capabilities rule them out), 1 otherwise. With --json, one \
            {\"case\", \"group\", \"outcome\": \"pass\"|\"fail\"|\"unsupported\", \"seconds\", \
            \"reason\"} object per case, then {\"cases\", \"run\", \"passed\", \"failed\", \
            \"unsupported\", \"interrupted\"}.\n\n\
            The cases run under URL's root in `anykv-conformance-<unique>`, which is deleted \
            afterwards; they write, watch, lock and compact there, so point it at a server \
            you may test against. `memory://` (no name) tests a fresh in-process store. \
            Ctrl-C stops starting cases, waits for the running ones (Ctrl-C again to stop at \
            once), prints the partial total as `interrupted: R of N cases run: P passed, F \
            failed, U unsupported`, deletes its keys and exits with 130.",
        after_help = EXIT_CODES_HELP
    )]
    Conformance(ConformanceArgs),

    /// Run a multi-key transaction: compares, then one of two branches, atomically
    #[command(long_about = crate::txn::TXN_HELP, after_help = EXIT_CODES_HELP)]
    Txn(TxnArgs),
}

/// `anykv txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A compare that must hold: rev(KEY) = N, absent(KEY), present(KEY), value(KEY) = VALUE
    #[arg(
        long = "if",
        value_name = "COMPARE",
        value_parser = crate::txn::parse_compare,
        allow_hyphen_values = true
    )]
    pub compares: Vec<anykv::Compare>,

    /// An operation to run when every compare holds: put [--ttl D] [--lease ID] KEY VALUE,
    /// del KEY, get KEY
    #[arg(
        long = "then",
        value_name = "OP",
        value_parser = crate::txn::parse_op,
        allow_hyphen_values = true
    )]
    pub success: Vec<anykv::TxnOp>,

    /// An operation to run when a compare does not hold (same grammar as --then)
    #[arg(
        long = "else",
        value_name = "OP",
        value_parser = crate::txn::parse_op,
        allow_hyphen_values = true
    )]
    pub failure: Vec<anykv::TxnOp>,

    /// Read the whole transaction as JSON from PATH (`-` for standard input) instead
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["compares", "success", "failure"]
    )]
    pub json_in: Option<PathBuf>,
}

/// `anykv get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key
    pub key: String,

    /// Write the value's bytes exactly, without a newline
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
}

/// `anykv put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key
    pub key: String,

    /// The value as text; `-` reads it from standard input
    #[arg(
        required_unless_present = "file",
        conflicts_with = "file",
        allow_hyphen_values = true
    )]
    pub value: Option<String>,

    /// Read the value from this file (`-` for standard input)
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// The key vanishes this long after the write unless written again (250ms, 10s, 2m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,

    /// Write only if the key is now at this revision (compare-and-swap)
    #[arg(long, value_name = "REVISION", conflicts_with = "create_only")]
    pub if_revision: Option<u64>,

    /// Write only if the key does not exist
    #[arg(long)]
    pub create_only: bool,
}

/// `anykv rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The key; with --tree, the prefix (`/` for the whole root)
    pub key: String,

    /// Delete the key and every key under it; print how many were deleted
    #[arg(long, conflicts_with = "if_revision")]
    pub tree: bool,

    /// Delete only if the key is now at this revision
    #[arg(long, value_name = "REVISION")]
    pub if_revision: Option<u64>,
}

/// `anykv ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The prefix (default: the whole root)
    #[arg(default_value = "")]
    pub prefix: String,

    /// Print only the keys
    #[arg(long)]
    pub keys_only: bool,
}

/// `anykv watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key; with --tree, the prefix (default: the whole root)
    #[arg(required_unless_present = "tree")]
    pub key: Option<String>,

    /// Watch every key under the prefix instead of one key
    #[arg(long)]
    pub tree: bool,

    /// Resume after this revision: print every change after it, without the current state
    #[arg(long, value_name = "REVISION")]
    pub from_revision: Option<u64>,

    /// Exit with 0 after this many PUT or DELETE events (the current state included)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// `anykv lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name (key rules apply)
    pub name: String,

    /// The lifetime of the lease behind the lock, kept alive while anykv runs
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15s")]
    pub ttl: Duration,

    /// Give up after waiting this long for another holder (exit 5); default: wait as long
    /// as it takes
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The command to run while holding the lock, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `anykv lease`.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// The lease's TTL: the keys vanish this long after anykv stops keeping it alive
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Duration,

    /// The keys to write, bound to the lease
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_pair)]
    pub pairs: Vec<(String, String)>,

    /// The command to run while the lease lives, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `anykv elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name (one key segment)
    pub name: String,

    /// The value observers see for this candidate while it leads (an address, say)
    #[arg(long, value_name = "VALUE")]
    pub value: Option<String>,

    /// The lifetime of the candidate's lease, kept alive while anykv runs
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,

    /// After leadership is lost, how long the command has between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub grace: Duration,

    /// The command to run while leading, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `anykv services`.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ServicesAction,
}

/// `anykv services` actions.
#[derive(Debug, Subcommand)]
pub enum ServicesAction {
    /// Register an instance and hold it until Ctrl-C, printing status changes
    Register(RegisterArgs),
    /// Print a service's instances, one per line
    List(ServiceArgs),
    /// Print a service's instances, then every change, until Ctrl-C
    Watch(ServiceArgs),
}

/// `anykv services register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The service's name (one key segment)
    pub service: String,
    /// The instance's id, unique within the service (one key segment)
    pub id: String,
    /// Host name or IP address
    pub address: String,
    /// Port
    pub port: u16,

    /// Metadata, repeatable: --meta zone=a --meta version=2
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub meta: Vec<(String, String)>,

    /// Relative share of traffic for weighted selection
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub weight: u32,

    /// Register the instance as disabled (draining or in maintenance)
    #[arg(long)]
    pub disabled: bool,

    /// The lifetime of the registry's lease, kept alive while anykv runs
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
}

/// `anykv services list` and `watch`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service's name
    pub service: String,
}

/// `anykv conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The URL to test; default: --url, then ANYKV_URL
    #[arg(value_name = "URL")]
    pub target: Option<String>,

    /// Run only the cases whose name contains this text
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,

    /// How many cases run at once
    #[arg(
        long,
        value_name = "N",
        default_value_t = anykv_conformance::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from)
    )]
    pub concurrency: usize,
}

/// Parses a duration argument: `250ms`, `10s`, `2m`, `1h`, `7d`, or a number of
/// seconds (`0.5`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(anykv_cli::cli::parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(anykv_cli::cli::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    anykv::parse_duration_param("duration", text)
        .map_err(|_| "not a positive duration such as 250ms, 10s, 2m or 1h".to_string())
}

/// Parses `KEY=VALUE`, splitting at the first `=`.
///
/// ```
/// assert_eq!(
///     anykv_cli::cli::parse_pair("svc/a=x=1"),
///     Ok(("svc/a".to_string(), "x=1".to_string()))
/// );
/// assert!(anykv_cli::cli::parse_pair("no-equals").is_err());
/// ```
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        let cli = Cli::try_parse_from([
            "anykv",
            "--url",
            "memory://",
            "put",
            "k",
            "--ttl",
            "10s",
            "-5",
        ])
        .unwrap();
        match cli.command {
            Command::Put(p) => {
                assert_eq!(p.value.as_deref(), Some("-5"));
                assert_eq!(p.ttl, Some(Duration::from_secs(10)));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "anykv",
            "lock",
            "l",
            "--timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "true",
        ])
        .unwrap();
        match cli.command {
            Command::Lock(l) => {
                assert_eq!(l.command, vec!["sh", "-c", "true"]);
                assert_eq!(l.ttl, Duration::from_secs(15));
                assert_eq!(l.timeout, Some(Duration::from_secs(1)));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["anykv", "put", "k"]).is_err());
        assert!(Cli::try_parse_from(["anykv", "watch"]).is_err());
        assert!(Cli::try_parse_from(["anykv", "watch", "--tree"]).is_ok());
        assert!(Cli::try_parse_from(["anykv", "lease", "--ttl", "5s"]).is_err());
        assert!(Cli::try_parse_from([
            "anykv",
            "put",
            "k",
            "v",
            "--if-revision",
            "1",
            "--create-only"
        ])
        .is_err());
    }
}
