//! The `anykv` command-line tool, in the style of `etcdctl` and
//! `redis-cli` but for every anykv backend, and the library behind it.
//!
//! ```text
//! anykv --url etcd://127.0.0.1:2379/app put config/color blue    # prints the new revision
//! anykv --url etcd://127.0.0.1:2379/app get config/color         # blue
//! export ANYKV_URL=redis://127.0.0.1:6379/0/app                  # or give the URL once
//! anykv ls config                                                # config/color<TAB>blue
//! anykv put config/color green --if-revision 7                   # compare-and-swap (5 on mismatch)
//! anykv watch --tree config                                      # every change as it happens
//! anykv txn --if 'rev(jobs/7) = 12' --then 'del jobs/7' --then 'put done/7 ok'  # all or nothing
//! anykv lock jobs/nightly -- ./nightly.sh                        # run while holding the lock
//! anykv lease --ttl 10s services/web/1=10.0.0.1:80 -- ./server   # register while it runs
//! anykv elect scheduler --ttl 5s -- ./scheduler                 # run only while leading
//! anykv services register web w1 10.0.0.1 8080 --meta zone=a    # hold a service instance
//! anykv services list web                                        # w1<TAB>10.0.0.1:8080<TAB>...
//! anykv conformance zk://127.0.0.1:2181/test                     # the conformance suite
//! anykv ls config --keys-only --limit 100 --start-after config/a # one page of keys
//! anykv -o table ls config                                       # KEY  REVISION  VALUE
//! anykv lease grant 10s --for 1m                                 # hold a lease for a minute
//! anykv put services/web/1 10.0.0.1:80 --lease-ttl 10s           # a key that lives while anykv runs
//! anykv status etcd://127.0.0.1:2379                             # servers, revision, capabilities
//! anykv -v put k v                                               # log each call's span
//! anykv completions bash > ~/.local/share/bash-completion/completions/anykv
//! ```
//!
//! # Decisions
//!
//! - **URL**: `--url`, else `ANYKV_URL` (its value is never shown in
//!   `--help`); neither is a usage error. `anykv conformance URL` also takes
//!   the URL as an argument. Passwords in URLs never appear in any message:
//!   every URL shown goes through [`anykv::redact_url`]. A `memory://` store
//!   lives only as long as one `anykv` process, so it suits trying commands,
//!   `lock`/`lease` around a command, and `conformance memory://`, which
//!   tests a fresh in-process store (a nameless `memory://` gets the name
//!   [`conformance::MEMORY_NAME`], since the suite's clients must share it).
//! - **URL schemes**: `memory://`, `etcd://` `etcds://`, `redis://`
//!   `rediss://` `redis+sentinel://` `redis+cluster://`, `zk://`, `redb://`
//!   (all listed in `anykv --help`).
//! - **Output**: text for people; `--json` (or `--output json`) for scripts
//!   (one JSON document, or one object per line for the streaming `watch`
//!   and `conformance`); `--output table` (`-o table`) prints aligned
//!   columns with a header for `get`, `ls` and `status` (KEY, REVISION,
//!   VALUE escaped and cut to [`output::TABLE_VALUE_WIDTH`] characters).
//!   Text lines with several fields separate them with a tab. In `ls`,
//!   `get` and `watch` lines keys and values go through [`output::escape`]
//!   (tab `\t`, newline `\n`, backslash `\\`, any other control character
//!   and every byte that is not UTF-8 `\xNN`), so a line splits at its tabs
//!   unambiguously and [`output::unescape`] gives back the exact bytes;
//!   this is documented in `anykv --help`. `get` prints a text value and a
//!   newline; a binary value ([`output::is_text`] is false) goes out as its
//!   exact bytes to a pipe or a file, and escaped with a note on standard
//!   error to a terminal (`std::io::IsTerminal`); `--raw` always writes the
//!   exact bytes. In JSON a value is UTF-8 text with `"encoding": "utf8"`,
//!   or its base64 with `"encoding": "base64"`. Every line is flushed as it
//!   is printed; a closed standard output (a pipe into `head`) ends the
//!   command quietly with status 0.
//! - **ls** lists with [`anykv::Store::list_with`]: `--keys-only` never
//!   fetches the values ([`anykv::ListOptions::keys_only`]), `--limit N` and
//!   `--start-after KEY` page. Keys that break anykv's key rules (`a//b`, a
//!   control character) can only come from another client writing straight
//!   into the server under the root: etcd and redb return them (etcd skips
//!   keys that are not UTF-8), Redis lists only keys in anykv's own index,
//!   ZooKeeper cannot hold an empty segment, the in-process store only
//!   holds keys written through anykv. `ls` lists such keys escaped and
//!   names each on standard error ([`commands::is_addressable`]); `get`,
//!   `put`, `rm` and `--start-after` refuse them as arguments with 2
//!   (`invalid key "a//b": it has an empty segment`).
//! - **Durations** (`--ttl`, `--timeout`, `--for`, `--grace`, URL
//!   parameters) go through [`anykv::parse_duration_param`]: `500us`,
//!   `250ms`, `1m30s`, `2h`; a bare `10` is refused with a hint to add a
//!   unit ([`cli::parse_duration`]).
//! - **Logging**: `-v` installs a `tracing-subscriber` on standard error
//!   showing anykv's per-call spans (target `anykv`, `op="put"`…), `-vv`
//!   debug logs of every anykv crate, `RUST_LOG` overrides both
//!   ([`init_logging`], [`log_filter`]). Without them only warnings print.
//! - **status** prints [`anykv::Store::status`] (backend, revision, each
//!   server's address, version and role or error, stats, details) and the
//!   capabilities ([`info::status`]); one silent server does not fail it,
//!   no server answering exits with 3.
//! - **completions** prints a `clap_complete` script for bash, zsh, fish,
//!   PowerShell or elvish; **exit-codes** prints the exit-code table, which
//!   otherwise appears only at the end of the top-level `anykv --help`.
//! - **Errors** print `anykv: <message>` on standard error and exit with a
//!   code from [`exit`] (0 ok, 1 failure, 2 usage or bad URL, 3 unreachable
//!   or timed out, 4 not found, 5 condition failed, 6 lock held by another
//!   client, 130 Ctrl-C); with
//!   `--json` the error is also printed on standard output as
//!   `{"error": {"kind", "message", "exit_code"}}`. Argument errors are
//!   reported by the argument parser, as text, with status 2.
//! - **Values** come from the argument, a file (`--file PATH`) or standard
//!   input (`-`), byte for byte: nothing is trimmed.
//! - **watch** prints the current state, then `anykv: in sync at revision
//!   N` on standard error (a `{"event": "synced"}` object with `--json`),
//!   then every change; `--count N` exits with 0 after N changes (the
//!   current state counts); Ctrl-C exits with 130. On an error it says from
//!   which revision to resume.
//! - **lock** and **lease** with a command after `--` run it (with
//!   `ANYKV_LOCK_TOKEN` / `ANYKV_LEASE_ID` in its environment), pass on
//!   SIGINT and SIGTERM, release or revoke when it ends and exit with its
//!   status; if what they hold is lost they stop the command with SIGTERM
//!   and exit with 1. Without a command they print the token or lease id and
//!   hold until Ctrl-C (130), or for `lease`, until `--for` has passed (0).
//!   `lock --timeout` expiring while another client holds the lock
//!   ([`anykv::ErrorKind::LockTimeout`]) exits with [`exit::LOCK_TIMEOUT`]
//!   (6), distinct from 3 (the server did not answer).
//! - **Leases** belong to the store, so to the process, that granted them,
//!   and die with it: `lease grant TTL` prints the id and keeps the lease
//!   alive until Ctrl-C or `--for`, then revokes it; `put KEY VALUE
//!   --lease-ttl TTL` writes a key bound to a lease of its own and holds it
//!   the same way. The Store API cannot keep alive, read the remaining time
//!   of, or revoke another process's lease by id, so there are no `lease
//!   keep-alive`, `time-to-live` or `revoke` commands: ending the holding
//!   process revokes its lease.
//! - **elect** campaigns with [`anykv::recipes::Election`] and, once
//!   leading, prints the fencing token (or `{"election", "fencing_token",
//!   "value"}` with `--json`). With a command after `--` it runs it while
//!   leading (`ANYKV_ELECTION_NAME`, `ANYKV_ELECTION_TOKEN` in its
//!   environment), passes on SIGINT and SIGTERM, resigns when it ends and
//!   exits with its status; if leadership is lost it sends SIGTERM, then
//!   SIGKILL after `--grace` (10 s), and exits with 1. Without a command it
//!   leads until Ctrl-C or SIGTERM, resigns and exits with 130 or 143. A
//!   killed `anykv elect` does not resign: the next candidate leads once its
//!   lease (`--ttl`, 10 s) expires.
//! - **services** uses [`anykv::recipes::Registry`] and
//!   [`anykv::recipes::Discovery`]: `register SERVICE ID ADDR PORT` holds an
//!   instance until a signal, printing each registry status change;
//!   `list SERVICE` prints one `ID<TAB>ADDR:PORT<TAB>weight=N<TAB>enabled`
//!   line per instance (an array with `--json`); `watch SERVICE` prints
//!   `ADD`, `UPDATE` and `REMOVE` lines until Ctrl-C.
//! - **txn** runs one [`anykv::Txn`] given by `--if` compares and
//!   `--then` / `--else` operations, or as JSON with `--json-in PATH` (`-`
//!   for standard input); the grammar and the schema are in
//!   [`txn::TXN_HELP`] (`anykv txn --help`). Everything is parsed and
//!   checked before anything is sent (2 on a malformed input). It prints
//!   `SUCCEEDED` or `FAILED<TAB>compare I<TAB>...`, the revision and one
//!   line per operation of the branch that ran, and exits with 0 when the
//!   compares held and 5 (a condition failed, as `put --if-revision`) when
//!   one did not.
//! - **conformance** prints one line per case as it finishes and a total,
//!   exits with 1 if any case failed, and runs under
//!   `anykv-conformance-<unique>` below the URL's root, deleted afterwards.
//!   Ctrl-C stops starting cases, lets the running ones finish (a second
//!   Ctrl-C abandons them), prints the partial total and exits with 130.
//!
//! # As a library
//!
//! [`run`] is the whole tool: parse a [`cli::Cli`] and hand it over.
//!
//! ```
//! use clap::Parser;
//! use anykv_cli::{cli::Cli, exit};
//!
//! // `memory://` lives only as long as one run, so a missing key is 4.
//! let cli = Cli::try_parse_from(["anykv", "--url", "memory://", "get", "nothing"]).unwrap();
//! assert_eq!(anykv_cli::run(cli), exit::NOT_FOUND);
//!
//! let cli = Cli::try_parse_from(["anykv", "--url", "nosuch://host/", "get", "k"]).unwrap();
//! assert_eq!(anykv_cli::run(cli), exit::USAGE);
//! ```
//!
//! # Testing a broken backend
//!
//! The example `anykv_with_broken` (`examples/anykv_with_broken/`) is
//! `anykv` plus `broken-memory://`, a deliberately broken backend, so the
//! CLI's own tests can show that `anykv conformance` fails it. `cargo test`
//! builds it; the `anykv` binary never has that backend (it refuses
//! `broken-memory://` as an unknown scheme).

#![deny(rustdoc::broken_intra_doc_links)]

use std::time::Duration;

pub mod cli;
pub mod commands;
pub mod conformance;
pub mod connect;
pub mod exit;
pub mod hold;
pub mod info;
pub mod output;
pub mod recipes;
pub mod signals;
pub mod txn;
pub mod txn_syntax;

use cli::{Cli, Command};
use exit::CliError;
use output::Out;
use signals::Interrupts;

/// Registers the built-in backends (a program embedding the CLI may
/// register more of its own before calling [`run`]).
pub fn register_backends() {
    anykv::register_builtin_backends();
}

/// Runs a parsed command line to the end on a runtime of its own, prints
/// any error, and returns the process's exit code (see [`exit`]).
pub fn run(cli: Cli) -> u8 {
    init_logging(cli.verbose);
    let out = cli.out();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return report(
                Err(CliError::new(
                    exit::FAILURE,
                    "Io",
                    format!("cannot start: {e}"),
                )),
                out,
            )
        }
    };
    let result = runtime.block_on(execute(cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    report(result, out)
}

/// What `-v` (1) and `-vv` (2 or more) log, when `RUST_LOG` is not set:
/// nothing but warnings, anykv's per-call spans (target `anykv`), or debug
/// logs of every anykv crate.
pub fn log_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "warn,anykv=debug",
        _ => {
            "warn,anykv=debug,anykv_core=debug,anykv_cli=debug,anykv_memory=debug,\
             anykv_etcd=debug,anykv_redis=debug,anykv_zookeeper=debug,anykv_redb=debug,\
             anykv_recipes=debug,anykv_conformance=debug"
        }
    }
}

/// Installs a log subscriber writing to standard error: `RUST_LOG` if set,
/// else [`log_filter`]. Does nothing when one is installed already.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(log_filter(verbose)),
    }
    .unwrap_or_else(|_| EnvFilter::new(log_filter(verbose)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .try_init();
}

/// Runs a parsed command line inside a Tokio runtime. Installs the Ctrl-C
/// handling first, so every command stops cleanly on SIGINT or SIGTERM.
pub async fn execute(cli: Cli) -> Result<(), CliError> {
    register_backends();
    let interrupts = Interrupts::install()
        .map_err(|e| CliError::new(exit::FAILURE, "Io", format!("cannot handle Ctrl-C: {e}")))?;
    let out = cli.out();
    let url = cli.url;
    match cli.command {
        Command::Conformance(args) => conformance::run(args, url, out, &interrupts).await,
        Command::Watch(args) => commands::watch(&require_url(url)?, args, out, &interrupts).await,
        Command::Lock(args) => hold::lock(&require_url(url)?, args, out, &interrupts).await,
        Command::Lease(args) => hold::lease(&require_url(url)?, args, out, &interrupts).await,
        Command::Put(args) if args.lease_ttl.is_some() => {
            commands::put_with_lease(&require_url(url)?, args, out, &interrupts).await
        }
        Command::Completions(args) => info::completions(args, out),
        Command::ExitCodes => info::exit_codes(out),
        Command::Status(args) => {
            let work = info::status(url, args, out);
            tokio::select! {
                r = work => r,
                signal = interrupts.first() => Err(CliError::interrupted(signal)),
            }
        }
        Command::Elect(args) => recipes::elect(&require_url(url)?, args, out, &interrupts).await,
        Command::Services(args) => {
            recipes::services(&require_url(url)?, args, out, &interrupts).await
        }
        short => {
            let url = require_url(url)?;
            let work = async {
                match short {
                    Command::Get(args) => commands::get(&url, args, out).await,
                    Command::Put(args) => commands::put(&url, args, out).await,
                    Command::Rm(args) => commands::rm(&url, args, out).await,
                    Command::Ls(args) => commands::ls(&url, args, out).await,
                    Command::Txn(args) => txn::txn(&url, args, out).await,
                    _ => Ok(()),
                }
            };
            tokio::select! {
                r = work => r,
                signal = interrupts.first() => Err(CliError::interrupted(signal)),
            }
        }
    }
}

/// The store URL of a command: `--url` or `ANYKV_URL`, or a usage error.
pub fn require_url(url: Option<String>) -> Result<String, CliError> {
    match url {
        Some(u) if !u.trim().is_empty() => Ok(u),
        _ => Err(CliError::usage(
            "no store URL: pass --url URL or set ANYKV_URL (for example memory:// or \
             etcd://127.0.0.1:2379/app)",
        )),
    }
}

/// Prints an error (`anykv: message` on standard error, and with `--json`
/// an error object on standard output) and returns the exit code.
pub fn report(result: Result<(), CliError>, out: Out) -> u8 {
    match result {
        Ok(()) => exit::OK,
        Err(e) if e.quiet => e.code,
        Err(e) => {
            if out.json {
                let _ = out.json(&output::error_json(&e));
            }
            output::progress(&output::one_line(&e.message));
            e.code
        }
    }
}
