//! `status`, `completions` and `exit-codes`: what a store is, and what
//! the tool itself offers.

use std::time::Duration;

use anykv::{Capabilities, StoreStatus};
use serde_json::{json, Map, Value};

use crate::cli::{CompletionsArgs, StatusArgs};
use crate::connect::{close_store, open_store};
use crate::exit::{CliError, UNAVAILABLE};
use crate::output::{self, Out};

/// `anykv status`: [`anykv::Store::status`] and the capabilities. Exits
/// with [`UNAVAILABLE`] when the store has servers and none answered.
pub async fn status(url: Option<String>, args: StatusArgs, out: Out) -> Result<(), CliError> {
    let url = crate::require_url(args.target.or(url))?;
    let store = open_store(&url).await?;
    let result = store.status().await;
    let caps = store.capabilities();
    close_store(&store).await;
    let status = result?;
    if out.json {
        out.json(&status_json(&status, caps))?;
    } else {
        for line in status_lines(&status, caps, out.table) {
            out.line(&line)?;
        }
    }
    if !status.servers.is_empty() && status.servers.iter().all(|s| s.error.is_some()) {
        return Err(CliError::new(
            UNAVAILABLE,
            "Unavailable",
            format!(
                "no server of {} answered",
                output::one_line(&anykv::redact_url(&url))
            ),
        ));
    }
    Ok(())
}

/// Capabilities as name and value, in the order `status` prints them.
pub fn capability_rows(caps: &Capabilities) -> Vec<(&'static str, String)> {
    vec![
        ("watch", caps.watch.to_string()),
        (
            "watch_every_revision",
            caps.watch_every_revision.to_string(),
        ),
        ("watch_resume", caps.watch_resume.to_string()),
        ("ttl", caps.ttl.to_string()),
        ("min_ttl", show(caps.min_ttl)),
        ("leases", caps.leases.to_string()),
        ("locks", caps.locks.to_string()),
        ("transactions", caps.transactions.to_string()),
        ("max_txn_ops", caps.max_txn_ops.to_string()),
        ("max_value_size", caps.max_value_size.to_string()),
    ]
}

fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_string()
    } else {
        crate::hold::show_duration(d)
    }
}

/// The text (or, with `table`, partly tabular) lines of `status`.
pub fn status_lines(status: &StoreStatus, caps: &Capabilities, table: bool) -> Vec<String> {
    let esc = |t: &str| output::escape(t.as_bytes());
    let mut lines = vec![format!("backend\t{}", status.backend)];
    lines.push(match status.revision {
        Some(r) => format!("revision\t{r}"),
        None => "revision\tunknown".to_string(),
    });
    let s = &status.stats;
    let stats = format!(
        "stats\twatches={} leases={} locks={} connections={}",
        s.watches, s.leases, s.locks, s.connections
    );
    if !table {
        for server in &status.servers {
            lines.push(match &server.error {
                Some(e) => format!("server\t{}\terror\t{}", esc(&server.address), esc(e)),
                None => format!(
                    "server\t{}\t{}\t{}",
                    esc(&server.address),
                    esc(server.version.as_deref().unwrap_or("-")),
                    esc(server.role.as_deref().unwrap_or("-"))
                ),
            });
        }
    }
    lines.push(stats);
    for (name, value) in &status.details {
        lines.push(format!("detail\t{}\t{}", esc(name), esc(value)));
    }
    for (name, value) in capability_rows(caps) {
        lines.push(format!("capability\t{name}\t{value}"));
    }
    if table && !status.servers.is_empty() {
        let rows: Vec<Vec<String>> = status
            .servers
            .iter()
            .map(|s| {
                vec![
                    esc(&s.address),
                    esc(s.version.as_deref().unwrap_or("-")),
                    esc(s.role.as_deref().unwrap_or("-")),
                    esc(s.error.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        lines.push(String::new());
        lines.extend(output::table(
            &["ADDRESS", "VERSION", "ROLE", "ERROR"],
            &rows,
        ));
    }
    lines
}

/// `status` as JSON.
pub fn status_json(status: &StoreStatus, caps: &Capabilities) -> Value {
    let servers: Vec<Value> = status
        .servers
        .iter()
        .map(|s| {
            json!({"address": s.address, "version": s.version, "role": s.role, "error": s.error})
        })
        .collect();
    let details: Map<String, Value> = status
        .details
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let s = &status.stats;
    json!({
        "backend": status.backend,
        "revision": status.revision,
        "servers": servers,
        "stats": {
            "watches": s.watches,
            "leases": s.leases,
            "locks": s.locks,
            "connections": s.connections,
        },
        "details": details,
        "capabilities": {
            "watch": caps.watch,
            "watch_every_revision": caps.watch_every_revision,
            "watch_resume": caps.watch_resume,
            "ttl": caps.ttl,
            "min_ttl_seconds": caps.min_ttl.as_secs_f64(),
            "leases": caps.leases,
            "locks": caps.locks,
            "transactions": caps.transactions,
            "max_txn_ops": caps.max_txn_ops,
            "max_value_size": caps.max_value_size,
        },
    })
}

/// `anykv completions SHELL`: the completion script on standard output.
pub fn completions(args: CompletionsArgs, out: Out) -> Result<(), CliError> {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "anykv", &mut script);
    out.raw(&script)
}

/// `anykv exit-codes`: the exit-code table.
pub fn exit_codes(out: Out) -> Result<(), CliError> {
    out.line(crate::exit::EXIT_CODES_HELP)
}
