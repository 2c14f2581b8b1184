//! `lock` and `lease`: hold something while a command runs, or until
//! Ctrl-C.

use std::ffi::OsString;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use anykv::{Bytes, Error, ErrorKind, LockOptions, PutOptions, Store};
use serde_json::json;

use crate::cli::{LeaseAction, LeaseArgs, LockArgs};
use crate::connect::{close_store, open_store};
use crate::exit::{CliError, COMMAND_NOT_EXECUTABLE, COMMAND_NOT_FOUND, FAILURE, LOCK_TIMEOUT, OK};
use crate::output::{self, Out};
use crate::signals::{Interrupts, SIGKILL, SIGTERM};

/// How a hold ended.
pub(crate) enum Ended {
    /// The command exited with this status (or the hold was otherwise
    /// done).
    Status(u8),
    /// A signal arrived (no command was running).
    Signal(i32),
    /// What was held was lost.
    Lost,
}

/// `anykv lock`.
pub async fn lock(
    url: &str,
    args: LockArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let store = open_store(url).await?;
    let result = lock_on(&store, args, out, interrupts).await;
    close_store(&store).await;
    result
}

async fn lock_on(
    store: &Arc<dyn Store>,
    args: LockArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let mut options = LockOptions::new().with_ttl(args.ttl);
    if let Some(t) = args.timeout {
        options = options.with_timeout(t);
    }
    let acquired = tokio::select! {
        r = store.lock(&args.name, options) => r,
        signal = interrupts.first() => return Err(CliError::interrupted(signal)),
    };
    let guard = match acquired {
        Ok(g) => g,
        Err(Error::LockTimeout { after, .. }) => return Err(lock_timeout(&args.name, after)),
        // A backend that still reports the lock's own wait as `Timeout`
        // (its `after` is the lock's timeout) means the same.
        Err(Error::Timeout { after, .. }) if Some(after) == args.timeout => {
            return Err(lock_timeout(&args.name, after))
        }
        Err(e) => return Err(e.into()),
    };
    let token = guard.fencing_token();
    let what = format!("lock {:?}", args.name);
    let ended = if args.command.is_empty() {
        if out.json {
            out.json(&json!({"lock": args.name, "fencing_token": token}))?;
        } else {
            out.line(&token.to_string())?;
            output::progress(&format!(
                "holding {what} (fencing token {token}); Ctrl-C to release"
            ));
        }
        hold_until_signal(guard.lost(), interrupts).await
    } else {
        let env = vec![
            ("ANYKV_LOCK_NAME".to_string(), args.name.clone()),
            ("ANYKV_LOCK_TOKEN".to_string(), token.to_string()),
        ];
        run_command(&args.command, env, guard.lost(), &what, interrupts, None).await
    };
    if let Err(e) = guard.release().await {
        if !matches!(ended, Ended::Lost) {
            output::progress(&format!("could not release {what}: {e}"));
        }
    }
    finish(ended, &what)
}

/// The error of `lock --timeout` running out while another client holds
/// the lock: exit code [`LOCK_TIMEOUT`].
fn lock_timeout(name: &str, after: std::time::Duration) -> CliError {
    CliError::new(
        LOCK_TIMEOUT,
        ErrorKind::LockTimeout.to_string(),
        format!(
            "lock {name:?} is held by another client: gave up after {}",
            show_duration(after)
        ),
    )
}

/// `anykv lease` and `anykv lease grant`.
pub async fn lease(
    url: &str,
    args: LeaseArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let hold = match args.action {
        Some(LeaseAction::Grant(g)) => LeaseHold {
            ttl: g.ttl,
            pairs: Vec::new(),
            for_: g.for_,
            command: Vec::new(),
            shown: Shown::Grant,
        },
        None => LeaseHold {
            ttl: args
                .ttl
                .ok_or_else(|| CliError::usage("lease needs --ttl DURATION"))?,
            pairs: args
                .pairs
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v.into_bytes())))
                .collect(),
            for_: args.for_,
            command: args.command,
            shown: Shown::Keys,
        },
    };
    hold_lease(url, hold, out, interrupts).await
}

/// What a held lease prints when it starts.
pub(crate) enum Shown {
    /// `lease grant`: the id (`{"lease", "ttl_seconds"}`).
    Grant,
    /// `lease --ttl K=V`: the id (`{"lease", "ttl_seconds", "keys"}`).
    Keys,
    /// `put --lease-ttl`: the revision (`{"key", "revision", "lease"}`).
    Put,
}

/// A lease to grant, keys to bind to it, and how long to hold it.
pub(crate) struct LeaseHold {
    /// The lease's TTL.
    pub ttl: std::time::Duration,
    /// The keys to write, bound to the lease.
    pub pairs: Vec<(String, Bytes)>,
    /// Without a command: revoke and exit with 0 after this long.
    pub for_: Option<std::time::Duration>,
    /// The command to run while the lease lives.
    pub command: Vec<OsString>,
    /// What to print.
    pub shown: Shown,
}

/// Grants a lease, writes the keys bound to it, holds it (while a command
/// runs, until a signal, or for `--for`) and revokes it.
pub(crate) async fn hold_lease(
    url: &str,
    hold: LeaseHold,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let store = open_store(url).await?;
    let result = lease_on(&store, hold, out, interrupts).await;
    close_store(&store).await;
    result
}

async fn lease_on(
    store: &Arc<dyn Store>,
    hold: LeaseHold,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let work = async {
        let lease = store.grant_lease(hold.ttl).await?;
        let mut written = Vec::new();
        for (key, value) in &hold.pairs {
            let put = store
                .put(key, value.clone(), PutOptions::new().with_lease(lease.id()))
                .await;
            match put {
                Ok(revision) => written.push((key.clone(), revision)),
                Err(e) => {
                    let _ = lease.revoke().await;
                    return Err(CliError::from(e));
                }
            }
        }
        Ok((lease, written))
    };
    let (lease, written) = tokio::select! {
        r = work => r?,
        signal = interrupts.first() => return Err(CliError::interrupted(signal)),
    };
    let id = lease.id().to_string();
    let what = format!("lease {id}");
    let ended = if hold.command.is_empty() {
        let keys: Vec<serde_json::Value> = written
            .iter()
            .map(|(k, r)| json!({"key": k, "revision": r}))
            .collect();
        match (&hold.shown, out.json) {
            (Shown::Put, true) => {
                let (key, revision) = written.first().cloned().unwrap_or_default();
                out.json(&json!({"key": key, "revision": revision, "lease": id}))?;
            }
            (Shown::Put, false) => {
                let revision = written.first().map(|(_, r)| *r).unwrap_or_default();
                out.line(&revision.to_string())?;
            }
            (Shown::Grant, true) => out.json(&json!({
                "lease": id,
                "ttl_seconds": lease.ttl().as_secs_f64(),
            }))?,
            (Shown::Keys, true) => out.json(&json!({
                "lease": id,
                "ttl_seconds": lease.ttl().as_secs_f64(),
                "keys": keys,
            }))?,
            (_, false) => out.line(&id)?,
        }
        if !out.json {
            let until = match hold.for_ {
                Some(d) => format!("revoking it in {} or on Ctrl-C", show_duration(d)),
                None => "Ctrl-C to revoke".to_string(),
            };
            let held = match hold.shown {
                Shown::Grant => format!("holding {what}"),
                _ => format!("{} bound to {what}", plural(hold.pairs.len(), "key")),
            };
            output::progress(&format!(
                "{held} (ttl {}); {until}",
                show_duration(lease.ttl())
            ));
        }
        match hold.for_ {
            Some(d) => tokio::select! {
                ended = hold_until_signal(lease.lost(), interrupts) => ended,
                () = tokio::time::sleep(d) => Ended::Status(OK),
            },
            None => hold_until_signal(lease.lost(), interrupts).await,
        }
    } else {
        let env = vec![("ANYKV_LEASE_ID".to_string(), id.clone())];
        run_command(&hold.command, env, lease.lost(), &what, interrupts, None).await
    };
    if let Err(e) = lease.revoke().await {
        if !matches!(ended, Ended::Lost) {
            output::progress(&format!("could not revoke {what}: {e}"));
        }
    }
    finish(ended, &what)
}

pub(crate) fn finish(ended: Ended, what: &str) -> Result<(), CliError> {
    match ended {
        Ended::Status(OK) => Ok(()),
        Ended::Status(code) => Err(CliError::quiet(code)),
        Ended::Signal(signal) => Err(CliError::interrupted(signal)),
        Ended::Lost => Err(CliError::new(
            FAILURE,
            "Lost",
            format!("{what} was lost before the end"),
        )),
    }
}

pub(crate) async fn hold_until_signal(
    lost: impl Future<Output = ()>,
    interrupts: &Interrupts,
) -> Ended {
    tokio::select! {
        () = lost => Ended::Lost,
        signal = interrupts.first() => Ended::Signal(signal),
    }
}

/// Runs `command` with `env` added to its environment until it exits,
/// passing on signals and stopping it with SIGTERM if `lost` completes
/// (then SIGKILL after `kill_after`, when given).
pub(crate) async fn run_command(
    command: &[OsString],
    env: Vec<(String, String)>,
    lost: impl Future<Output = ()>,
    what: &str,
    interrupts: &Interrupts,
    kill_after: Option<std::time::Duration>,
) -> Ended {
    let Some((program, rest)) = command.split_first() else {
        return Ended::Status(OK);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest).envs(env);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                COMMAND_NOT_FOUND
            } else {
                COMMAND_NOT_EXECUTABLE
            };
            output::progress(&format!("cannot run {:?}: {e}", program.to_string_lossy()));
            return Ended::Status(code);
        }
    };
    let mut lost = pin!(lost);
    let mut was_lost = false;
    let kill = tokio::time::sleep(std::time::Duration::MAX / 4);
    let mut kill = pin!(kill);
    let mut kill_armed = false;
    let mut signals_seen = interrupts.count();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = interrupts.wait(signals_seen + 1) => {
                signals_seen = interrupts.count();
                send_signal(child.id(), signal);
            }
            () = &mut lost, if !was_lost => {
                was_lost = true;
                output::progress(&format!("{what} was lost: stopping the command"));
                send_signal(child.id(), SIGTERM);
                if let Some(grace) = kill_after {
                    kill.as_mut().reset(tokio::time::Instant::now() + grace);
                    kill_armed = true;
                }
            }
            () = &mut kill, if kill_armed => {
                kill_armed = false;
                output::progress(&format!(
                    "the command outlived its grace of {}: killing it",
                    show_duration(kill_after.unwrap_or_default())
                ));
                send_signal(child.id(), SIGKILL);
            }
        }
    };
    if was_lost {
        return Ended::Lost;
    }
    match status {
        Ok(status) => Ended::Status(exit_code_of(status)),
        Err(e) => {
            output::progress(&format!("waiting for the command failed: {e}"));
            Ended::Status(FAILURE)
        }
    }
}

/// A child's exit status as a shell reports it: its code, or 128 + N when
/// signal N killed it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(FAILURE);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(FAILURE);
        }
    }
    FAILURE
}

#[cfg(unix)]
fn send_signal(pid: Option<u32>, signal: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (Some(pid), Ok(signal)) = (pid, Signal::try_from(signal)) else {
        return;
    };
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

#[cfg(not(unix))]
fn send_signal(_pid: Option<u32>, _signal: i32) {}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration as people write it: `1s`, `1.5s`, `250ms`, `2m`.
///
/// ```
/// use std::time::Duration;
/// use anykv_cli::hold::show_duration;
/// assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
/// assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(show_duration(Duration::from_secs(120)), "2m");
/// ```
pub fn show_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
