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
  redis+sentinel://[user:pass@]sentinel[:port][,...]/master-name[/db[/root]]
  redis+cluster://[user:pass@]node[:port][,node[:port]...][/root]
                                              (rediss+sentinel://, rediss+cluster:// for TLS)
  zk://[user:pass@]host:port[,host:port...]/chroot
  redb:///abs/dir/file.redb[/root]            a local file (redb://./rel/file.redb for a
                                              relative path); one process at a time
Every URL takes connect_timeout and request_timeout (250ms, 5s, 1m30s: a unit is required),
which bound how long a command waits for the server. Passwords in URLs are never printed.

Durations (--ttl, --timeout, --for, ...) need a unit: 500us, 250ms, 10s, 1m30s, 2h, 7d; a
bare number such as 10 is refused.

Logging: -v prints anykv's per-call spans (target anykv: op, key, outcome, time) on standard
error, -vv debug logs of every anykv crate (backends' reconnects, keep-alives, watches);
RUST_LOG (for example RUST_LOG=anykv_etcd=trace) overrides both.

Output: text for people by default; --json (or --output json) prints JSON on standard
output (one object, or for watch and conformance one object per line as things happen);
--output table prints aligned columns with a header (get, ls, status). Text lines that hold
several fields separate them with a tab. In ls, get and watch lines, keys and values are
escaped so that lines split and decode unambiguously: a tab is printed as \\t, a newline as
\\n, a backslash as \\\\, any other control character and any byte that is not UTF-8 as
\\xNN (its hex value); everything else as it is. In JSON a value is {\"value\": text,
\"encoding\": \"utf8\"} when it is UTF-8 and {\"value\": base64, \"encoding\":
\"base64\"} otherwise. Errors print `anykv: <message>` on standard error; with --json the
error is also printed on standard output as {\"error\": {\"kind\", \"message\",
\"exit_code\"}}. Progress (watch in sync, conformance header) goes to standard error.";

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
    /// The store's URL (memory://, etcd://, etcds://, redis://, rediss://,
    /// redis+sentinel://, redis+cluster://, zk://, redb://); default: the ANYKV_URL
    /// environment variable
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

    /// Output format: text (tab-separated, escaped), json (as --json) or table (aligned
    /// columns; get, ls and status)
    #[arg(long, short = 'o', global = true, value_name = "FORMAT", value_enum)]
    pub output: Option<OutputFormat>,

    /// Log on standard error: -v anykv's per-call spans, -vv debug logs of every anykv
    /// crate (RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tab-separated text lines, keys and values escaped.
    Text,
    /// JSON, as `--json`.
    Json,
    /// Aligned columns with a header (`get`, `ls`, `status`).
    Table,
}

impl Cli {
    /// How this command line asks for its results to be printed.
    pub fn out(&self) -> crate::output::Out {
        crate::output::Out {
            json: self.json || self.output == Some(OutputFormat::Json),
            table: !self.json && self.output == Some(OutputFormat::Table),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a key's value
    #[command(long_about = "Print a key's value.\n\n\
            A text value (UTF-8 without control characters other than tab, newline and \
            carriage return) is printed followed by a newline. A binary value is written \
            as its exact bytes, with nothing added, when standard output is a pipe or a \
            file; to a terminal it is shown escaped (\\t, \\n, \\\\, \\xNN) with a note on \
            standard error. --raw always writes the exact bytes. --json prints {\"key\", \
            \"value\", \"encoding\", \"revision\"}: \"encoding\" is \"utf8\" when the value is \
            UTF-8 text (\"value\" is that text) and \"base64\" otherwise (\"value\" is the \
            standard, padded base64 of the bytes). --output table prints KEY, REVISION and \
            VALUE (escaped, cut to 40 characters). A missing key exits with 4.")]
    Get(GetArgs),

    /// Write a key; print its new revision
    #[command(long_about = "Write a key and print its new revision.\n\n\
            The value is the VALUE argument as text, the contents of --file PATH, or standard \
            input with `-` (as VALUE or as PATH). Values are stored byte for byte: nothing is \
            trimmed, so `echo x | anykv put k -` stores \"x\" and a newline (use printf).\n\n\
            --if-revision N writes only if the key is at revision N (compare-and-swap): 5 if \
            it is at another revision, 4 if it is absent. --create-only writes only if the \
            key is absent: 5 if it exists. --ttl makes the key vanish after that long unless \
            written again (raised to the backend's minimum TTL: 2 s on etcd). --json prints \
            {\"key\", \"revision\"}.")]
    Put(PutArgs),

    /// Delete a key, or a whole tree with --tree
    #[command(
        long_about = "Delete a key, or with --tree a prefix and every key under it.\n\n\
            rm KEY prints nothing and exits with 4 when the key does not exist. \
            rm KEY --if-revision N deletes only at revision N (5 at another revision, 4 if \
            absent). rm --tree PREFIX deletes the key PREFIX and every key under PREFIX/ \
            (never PREFIXabc) and prints how many keys it deleted, 0 included; `rm --tree /` \
            empties the URL's root. --json prints {\"key\", \"deleted\": 1} or \
            {\"prefix\", \"deleted\": N}."
    )]
    Rm(RmArgs),

    /// List the keys under a prefix
    #[command(
        long_about = "List every key under PREFIX/ at any depth, sorted (the key PREFIX itself \
            excluded; no prefix lists the whole root).\n\n\
            Text output is one `key<TAB>value` line per key, or just the key with \
            --keys-only (the values are then not fetched); keys and values are escaped \
            (\\t, \\n, \\\\, \\xNN), so every line splits at its one tab. --json prints an \
            array of {\"key\", \"value\", \"encoding\", \"revision\"} (of {\"key\", \
            \"revision\"} with --keys-only). --output table prints KEY, REVISION and VALUE \
            (escaped, cut to 40 characters).\n\n\
            --limit N prints at most N keys; --start-after KEY starts after KEY (pass the \
            last key of one page to get the next).\n\n\
            Keys that break anykv's key rules (an empty segment such as `a//b`, a control \
            character, a leading or trailing `/`) can only have been written by another \
            client straight into the server under the store's root. etcd and redb return \
            them: ls lists them escaped and names each on standard error; get, put and rm \
            refuse them (2), so delete them with the server's own tool. etcd skips keys \
            that are not UTF-8. Redis lists only keys in anykv's index, so a key set with \
            redis-cli alone is not listed. ZooKeeper cannot hold an empty segment. The \
            in-process store only holds keys written through anykv."
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
            revision to resume."
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
            exit with 6 (3 means the server did not answer). Without it, wait as long as it takes. --ttl is the lifetime of the \
            lease behind the lock, kept alive while anykv runs (default 15s). --json prints \
            {\"lock\", \"fencing_token\"} instead of the token."
    )]
    Lock(LockArgs),

    /// Grant a lease and keep it alive; write keys bound to it while a command runs
    #[command(
        long_about = "Grant a lease of --ttl, write every KEY=VALUE bound to it, and keep it \
            alive; revoke it at the end, so the keys vanish. This is how a shell script \
            registers a service: `anykv lease --ttl 10s services/web/1=10.0.0.1:80 -- \
            ./server`.\n\n\
            Each pair is split at its first `=`: the key cannot contain `=`, the value can. \
            Without a command: print the lease's id, hold until Ctrl-C (130) or until --for \
            has passed (0), then revoke. With a command after `--`: run it with \
            ANYKV_LEASE_ID in its environment, revoke when it ends, and exit with its \
            status. A SIGINT or SIGTERM sent to anykv is passed on to the command. If anykv \
            dies, the keys vanish within the TTL. If the lease is lost (it could not be kept \
            alive), anykv says so, sends SIGTERM to the command and exits with 1. --json \
            prints {\"lease\", \"ttl_seconds\", \"keys\": [{\"key\", \"revision\"}]} \
            instead of the id.\n\n\
            `anykv lease grant TTL` grants a lease with no keys, prints its id and keeps it \
            alive the same way (Ctrl-C or --for); `anykv put KEY VALUE --lease-ttl TTL` \
            writes one key bound to a lease of its own and holds it the same way.\n\n\
            A lease belongs to the store, so to the process, that granted it: it lives only \
            while that anykv keeps it alive, and the anykv Store API has no call that \
            keeps alive, reads the remaining time of, or revokes a lease by id for another \
            process. So there are no `lease keep-alive`, `lease time-to-live` or `lease \
            revoke` commands: the granting anykv keeps its lease alive itself, and ending \
            that process (Ctrl-C, SIGTERM, --for, the command after `--` exiting) revokes \
            it. An id printed by one anykv can be given to `txn --then 'put --lease ID K V'` \
            only while that anykv still holds the lease."
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
            (raised to the backend's minimum TTL: 2 s on etcd)."
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
            instances."
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
            failed, U unsupported`, deletes its keys and exits with 130."
    )]
    Conformance(ConformanceArgs),

    /// Run a multi-key transaction: compares, then one of two branches, atomically
    #[command(long_about = crate::txn_syntax::TXN_HELP)]
    Txn(TxnArgs),

    /// Print the store's servers, revision, stats and capabilities
    #[command(
        long_about = "Print Store::status() and the capabilities of the store a URL names \
            (`anykv status URL`, or --url / ANYKV_URL).\n\n\
            Text output: `backend<TAB>NAME`, `revision<TAB>N` (or `unknown`), one \
            `server<TAB>ADDRESS<TAB>VERSION<TAB>ROLE` line per server (`error<TAB>REASON` \
            in place of version and role when it did not answer), `stats<TAB>watches=N \
            leases=N locks=N connections=N`, one `detail<TAB>NAME<TAB>VALUE` line per \
            detail, then one `capability<TAB>NAME<TAB>VALUE` line each for watch, \
            watch_every_revision, watch_resume, ttl, min_ttl, leases, locks, \
            transactions, max_txn_ops and max_value_size. --output table prints the \
            servers as ADDRESS, VERSION, ROLE, ERROR columns after the rest. --json prints \
            {\"backend\", \"revision\", \"servers\": [{\"address\", \"version\", \"role\", \
            \"error\"}], \"stats\", \"details\": {NAME: VALUE}, \"capabilities\"}.\n\n\
            One server that does not answer is shown with its error and does not fail the \
            command; when no server answers, status exits with 3."
    )]
    Status(StatusArgs),

    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    #[command(
        long_about = "Print a completion script for a shell on standard output.\n\n\
            bash: `anykv completions bash > ~/.local/share/bash-completion/completions/anykv`\n\
            zsh: `anykv completions zsh > ~/.zfunc/_anykv` (with ~/.zfunc in fpath)\n\
            fish: `anykv completions fish > ~/.config/fish/completions/anykv.fish`\n\
            powershell: `anykv completions powershell | Out-String | Invoke-Expression`"
    )]
    Completions(CompletionsArgs),

    /// Print the exit codes and what they mean (also at the end of `anykv --help`)
    #[command(after_long_help = EXIT_CODES_HELP)]
    ExitCodes,
}

/// `anykv txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A compare that must hold: rev(KEY) = N, absent(KEY), present(KEY), value(KEY) = VALUE
    #[arg(
        long = "if",
        value_name = "COMPARE",
        value_parser = crate::txn_syntax::parse_compare,
        allow_hyphen_values = true
    )]
    pub compares: Vec<anykv::Compare>,

    /// An operation to run when every compare holds: put [--ttl D] [--lease ID] KEY VALUE,
    /// del KEY, get KEY
    #[arg(
        long = "then",
        value_name = "OP",
        value_parser = crate::txn_syntax::parse_op,
        allow_hyphen_values = true
    )]
    pub success: Vec<anykv::TxnOp>,

    /// An operation to run when a compare does not hold (same grammar as --then)
    #[arg(
        long = "else",
        value_name = "OP",
        value_parser = crate::txn_syntax::parse_op,
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

    /// The key vanishes this long after the write unless written again (250ms, 10s, 1m30s, 2h; a unit is required)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,

    /// Write only if the key is now at this revision (compare-and-swap)
    #[arg(long, value_name = "REVISION", conflicts_with = "create_only")]
    pub if_revision: Option<u64>,

    /// Write only if the key does not exist
    #[arg(long)]
    pub create_only: bool,

    /// Bind the key to a new lease of this TTL, print the revision and hold the lease until
    /// Ctrl-C or --for (the key vanishes when anykv stops)
    #[arg(long, value_name = "TTL", value_parser = parse_duration, conflicts_with = "ttl")]
    pub lease_ttl: Option<Duration>,

    /// With --lease-ttl: revoke the lease and exit with 0 after this long
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, requires = "lease_ttl")]
    pub for_: Option<Duration>,
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

    /// Print only the keys (the values are not fetched)
    #[arg(long)]
    pub keys_only: bool,

    /// Print at most N keys
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    pub limit: Option<usize>,

    /// Start after this key (the last key of the previous page)
    #[arg(long, value_name = "KEY")]
    pub start_after: Option<String>,
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

    /// Give up after waiting this long for another holder (exit 6); default: wait as long
    /// as it takes
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The command to run while holding the lock, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `anykv lease`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LeaseArgs {
    /// `grant`, instead of keys to write.
    #[command(subcommand)]
    pub action: Option<LeaseAction>,

    /// The lease's TTL: the keys vanish this long after anykv stops keeping it alive
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, required = true)]
    pub ttl: Option<Duration>,

    /// The keys to write, bound to the lease
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_pair)]
    pub pairs: Vec<(String, String)>,

    /// Without a command: revoke the lease and exit with 0 after this long
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,

    /// The command to run while the lease lives, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `anykv lease` actions.
#[derive(Debug, Subcommand)]
pub enum LeaseAction {
    /// Grant a lease, print its id and keep it alive until Ctrl-C or --for
    Grant(LeaseGrantArgs),
}

/// `anykv lease grant`.
#[derive(Debug, Args)]
pub struct LeaseGrantArgs {
    /// The lease's TTL (raised to the backend's minimum: 2s on etcd)
    #[arg(value_name = "TTL", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Revoke the lease and exit with 0 after this long (default: until Ctrl-C)
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
}

/// `anykv status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The store's URL; default: --url, then ANYKV_URL
    #[arg(value_name = "URL")]
    pub target: Option<String>,
}

/// `anykv completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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

/// Parses a duration argument with [`anykv::parse_duration_param`]
/// (humantime: `250ms`, `10s`, `1m30s`, `500us`, `2h`, `7d`). A bare number
/// is refused, with a hint to add a unit.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(anykv_cli::cli::parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert_eq!(anykv_cli::cli::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(anykv_cli::cli::parse_duration("500us"), Ok(Duration::from_micros(500)));
/// assert!(anykv_cli::cli::parse_duration("10").unwrap_err().contains("write 10s"));
/// assert!(anykv_cli::cli::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    anykv::parse_duration_param("duration", text).map_err(|e| {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            format!("{t:?} has no unit; write {t}s, {t}ms or another unit (ns, us, ms, s, m, h, d)")
        } else if let anykv::Error::Config(m) = &e {
            m.strip_prefix("parameter duration: ")
                .unwrap_or(m)
                .to_owned()
        } else {
            "not a duration such as 250ms, 10s, 1m30s or 500us".to_string()
        }
    })
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
