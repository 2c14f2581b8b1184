//! `get`, `put`, `rm`, `ls` and `watch`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anykv::{Bytes, ErrorKind, KvPair, PutOptions, Store, WatchEvent, WatchOptions};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::{GetArgs, LsArgs, PutArgs, RmArgs, WatchArgs};
use crate::connect::{close_store, open_store, read_value};
use crate::exit::{CliError, FAILURE, NOT_FOUND};
use crate::output::{self, Out};
use crate::signals::Interrupts;

/// Runs `f` on the store `url` names and closes the store afterwards,
/// whatever `f` returned.
async fn with_store<T, F, Fut>(url: &str, f: F) -> Result<T, CliError>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let store = open_store(url).await?;
    let result = f(store.clone()).await;
    close_store(&store).await;
    result
}

/// The error for a key that is not there, worded like the library's
/// [`anykv::Error::KeyNotFound`].
fn not_found(store: &Arc<dyn Store>, key: &str) -> CliError {
    CliError::new(
        NOT_FOUND,
        ErrorKind::KeyNotFound.to_string(),
        format!("{}: key {key:?} not found", store.capabilities().backend),
    )
}

/// `anykv get`.
pub async fn get(url: &str, args: GetArgs, out: Out) -> Result<(), CliError> {
    with_store(url, |store| async move {
        let pair = store
            .get(&args.key)
            .await?
            .ok_or_else(|| not_found(&store, &args.key))?;
        if out.json {
            out.json(&output::pair_json(&pair))
        } else if args.raw {
            out.raw(&pair.value)
        } else if out.table {
            pair_table(std::slice::from_ref(&pair), false, out)
        } else if output::is_text(&pair.value) {
            let mut bytes = pair.value.to_vec();
            bytes.push(b'\n');
            out.raw(&bytes)
        } else if std::io::stdout().is_terminal() {
            out.line(&output::escape(&pair.value))?;
            output::progress(&format!(
                "the value is binary ({} bytes), shown escaped (\\t \\n \\\\ \\xNN); \
                 redirect the output or pass --raw for its exact bytes",
                pair.value.len()
            ));
            Ok(())
        } else {
            out.raw(&pair.value)
        }
    })
    .await
}

/// Prints pairs as a table: KEY, REVISION and VALUE (cut to
/// [`output::TABLE_VALUE_WIDTH`]), or KEY and REVISION.
fn pair_table(pairs: &[KvPair], keys_only: bool, out: Out) -> Result<(), CliError> {
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            let mut row = vec![output::escape(p.key.as_bytes()), p.revision.to_string()];
            if !keys_only {
                row.push(output::table_value(&p.value));
            }
            row
        })
        .collect();
    let header: &[&str] = if keys_only {
        &["KEY", "REVISION"]
    } else {
        &["KEY", "REVISION", "VALUE"]
    };
    for line in output::table(header, &rows) {
        out.line(&line)?;
    }
    Ok(())
}

/// The value of `anykv put`: the argument, a file or standard input.
async fn put_value(args: &PutArgs) -> Result<Bytes, CliError> {
    Ok(match (&args.value, &args.file) {
        (_, Some(path)) => read_value(path).await?,
        (Some(v), None) if v == "-" => read_value(Path::new("-")).await?,
        (Some(v), None) => Bytes::from(v.clone().into_bytes()),
        (None, None) => return Err(CliError::usage("put needs a VALUE, `-` or --file PATH")),
    })
}

/// `anykv put --lease-ttl`: the key bound to a lease of its own, held
/// until a signal or `--for`.
pub async fn put_with_lease(
    url: &str,
    args: PutArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    if args.create_only || args.if_revision.is_some() {
        return Err(CliError::usage(
            "--lease-ttl cannot be combined with --create-only or --if-revision (use txn \
             with put --lease ID)",
        ));
    }
    let value = put_value(&args).await?;
    let ttl = args
        .lease_ttl
        .ok_or_else(|| CliError::usage("--lease-ttl needs a duration"))?;
    let hold = crate::hold::LeaseHold {
        ttl,
        pairs: vec![(args.key, value)],
        for_: args.for_,
        command: Vec::new(),
        shown: crate::hold::Shown::Put,
    };
    crate::hold::hold_lease(url, hold, out, interrupts).await
}

/// `anykv put`.
pub async fn put(url: &str, args: PutArgs, out: Out) -> Result<(), CliError> {
    let value = put_value(&args).await?;
    let mut options = PutOptions::new();
    if let Some(ttl) = args.ttl {
        options = options.with_ttl(ttl);
    }
    with_store(url, |store| async move {
        let revision = if args.create_only {
            store.atomic_put(&args.key, value, None, options).await?
        } else if let Some(expected) = args.if_revision {
            store
                .atomic_put(&args.key, value, Some(expected), options)
                .await?
        } else {
            store.put(&args.key, value, options).await?
        };
        if out.json {
            out.json(&json!({"key": args.key, "revision": revision}))
        } else {
            out.line(&revision.to_string())
        }
    })
    .await
}

/// `anykv rm`.
pub async fn rm(url: &str, args: RmArgs, out: Out) -> Result<(), CliError> {
    with_store(url, |store| async move {
        if args.tree {
            let deleted = store.delete_tree(&args.key).await?;
            return if out.json {
                out.json(&json!({"prefix": args.key, "deleted": deleted}))
            } else {
                out.line(&deleted.to_string())
            };
        }
        match args.if_revision {
            Some(expected) => store.atomic_delete(&args.key, expected).await?,
            None => {
                if !store.delete(&args.key).await? {
                    return Err(not_found(&store, &args.key));
                }
            }
        }
        if out.json {
            out.json(&json!({"key": args.key, "deleted": 1}))
        } else {
            Ok(())
        }
    })
    .await
}

/// Whether a listed key keeps anykv's key rules (another client may have
/// written one that does not, such as `a//b` or a key with a tab): only
/// those can be given to `get`, `put` and `rm`.
pub fn is_addressable(key: &str) -> bool {
    anykv::key::canonical_key(key).is_ok_and(|k| k == key)
}

/// `anykv ls`.
pub async fn ls(url: &str, args: LsArgs, out: Out) -> Result<(), CliError> {
    if let Some(after) = &args.start_after {
        anykv::key::canonical_key(after).map_err(|e| CliError::from(e).context("--start-after"))?;
    }
    with_store(url, |store| async move {
        let mut options = anykv::ListOptions::new();
        if args.keys_only {
            // Keys only: the values are never fetched.
            options = options.keys_only();
        }
        if let Some(limit) = args.limit {
            options = options.with_limit(limit);
        }
        if let Some(after) = &args.start_after {
            options = options.start_after(after.clone());
        }
        let pairs = store.list_with(&args.prefix, options).await?;
        for p in pairs.iter().filter(|p| !is_addressable(&p.key)) {
            output::progress(&format!(
                "key {} breaks anykv's key rules (another client wrote it): listed escaped; \
                 get, put and rm cannot address it",
                output::escape(p.key.as_bytes())
            ));
        }
        if out.json {
            let items: Vec<Value> = pairs
                .iter()
                .map(|p| {
                    if args.keys_only {
                        json!({"key": p.key, "revision": p.revision})
                    } else {
                        output::pair_json(p)
                    }
                })
                .collect();
            return out.json(&Value::Array(items));
        }
        if out.table {
            return pair_table(&pairs, args.keys_only, out);
        }
        for p in &pairs {
            let key = output::escape(p.key.as_bytes());
            if args.keys_only {
                out.line(&key)?;
            } else {
                out.line(&format!("{key}\t{}", output::escape(&p.value)))?;
            }
        }
        Ok(())
    })
    .await
}

/// `anykv watch`.
pub async fn watch(
    url: &str,
    args: WatchArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let interrupts = interrupts.clone();
    let work = with_store(url, |store| async move {
        let options = match args.from_revision {
            Some(r) => WatchOptions::from_revision(r),
            None => WatchOptions::new(),
        };
        let target = args.key.clone().unwrap_or_default();
        let mut stream = if args.tree {
            store.watch_tree(&target, options).await?
        } else {
            store.watch(&target, options).await?
        };
        if let Some(r) = args.from_revision {
            if !out.json {
                output::progress(&format!("watching from revision {r}"));
            }
        }
        let mut changes = 0u64;
        let mut last_revision = args.from_revision;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                signal = interrupts.first() => return Err(CliError::interrupted(signal)),
            };
            let event = match item {
                None => {
                    return Err(CliError::new(
                        FAILURE,
                        "Closed",
                        "the watch ended: the store closed it",
                    ))
                }
                Some(Err(e)) => {
                    let hint = match last_revision {
                        Some(r) => format!("; resume with --from-revision {r}"),
                        None => String::new(),
                    };
                    let kind = e.kind();
                    let message = format!("the watch ended: {e}{hint}");
                    let code = match kind {
                        ErrorKind::Unavailable | ErrorKind::Timeout => crate::exit::UNAVAILABLE,
                        _ => FAILURE,
                    };
                    return Err(CliError::new(code, kind.to_string(), message));
                }
                Some(Ok(event)) => event,
            };
            last_revision = Some(event.revision());
            if out.json {
                out.json(&output::event_json(&event))?;
            } else if let Some(line) = output::event_line(&event) {
                out.line(&line)?;
            } else if let WatchEvent::Synced { revision } = event {
                output::progress(&format!("in sync at revision {revision}"));
            }
            if !matches!(event, WatchEvent::Synced { .. }) {
                changes += 1;
                if args.count.is_some_and(|n| changes >= n) {
                    return Ok(());
                }
            }
        }
    });
    work.await
}
