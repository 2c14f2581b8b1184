//! A tour of anykv on any backend.
//!
//! ```text
//! cargo run --example quickstart                      # in-process store
//! cargo run --example quickstart -- memory://demo/app
//! ANYKV_URL=memory://demo cargo run --example quickstart
//! ```
//!
//! It shows put, get, list, a compare-and-swap, a watch, a key bound to a
//! lease vanishing, and a lock, saying what happens at each step. Every key
//! it writes is under `quickstart/`, which it empties first and last.

#[macro_use]
#[path = "support/say.rs"]
mod say;

use std::process::ExitCode;
use std::time::Duration;

use anykv::{ErrorKind, LockOptions, PutOptions, Store, WatchEvent, WatchOptions};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ANYKV_URL").ok())
        .unwrap_or_else(|| "memory://".to_string());
    let store = match anykv::open(&url).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("quickstart: cannot open {}: {e}", anykv::redact_url(&url));
            return ExitCode::from(2);
        }
    };
    println!(
        "Opened {} (backend: {}).",
        anykv::redact_url(&url),
        store.capabilities().backend
    );
    let result = tour(store.as_ref()).await;
    let _ = store.delete_tree("quickstart").await;
    let _ = store.close().await;
    match result {
        Ok(()) => {
            println!("Done: every step behaved as the contract says.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn tour(store: &dyn Store) -> Result<(), Box<dyn std::error::Error>> {
    store.delete_tree("quickstart").await?;

    // Put and get.
    let rev = store
        .put("quickstart/config/color", "blue".into(), PutOptions::new())
        .await?;
    println!("Put quickstart/config/color = blue at revision {rev}.");
    let pair = store
        .get("quickstart/config/color")
        .await?
        .ok_or("the key just written is missing")?;
    println!(
        "Got it back: {} = {} (revision {}).",
        pair.key,
        String::from_utf8_lossy(&pair.value),
        pair.revision
    );

    // List a prefix: every key under it, sorted.
    store
        .put("quickstart/config/size", "large".into(), PutOptions::new())
        .await?;
    store
        .put(
            "quickstart/configuration",
            "not under config/".into(),
            PutOptions::new(),
        )
        .await?;
    let keys: Vec<String> = store
        .list("quickstart/config")
        .await?
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    println!(
        "Listed quickstart/config: {keys:?} (quickstart/configuration is a sibling, not a child)."
    );

    // Compare-and-swap on the revision.
    let rev2 = store
        .atomic_put(
            "quickstart/config/color",
            "green".into(),
            Some(rev),
            PutOptions::new(),
        )
        .await?;
    println!("Swapped blue for green because the revision was still {rev}; new revision {rev2}.");
    match store
        .atomic_put(
            "quickstart/config/color",
            "red".into(),
            Some(rev),
            PutOptions::new(),
        )
        .await
    {
        Err(e) if e.kind() == ErrorKind::KeyModified => {
            println!("A second swap from revision {rev} was refused: {e}.")
        }
        other => return Err(format!("a stale swap should fail, got {other:?}").into()),
    }

    // A watch: the current state, Synced, then each change.
    let mut watch = store
        .watch_tree("quickstart/services", WatchOptions::new())
        .await?;
    match next(&mut watch).await? {
        WatchEvent::Synced { revision } => {
            println!("Watching quickstart/services: empty, in sync at revision {revision}.")
        }
        other => return Err(format!("expected Synced first, got {other:?}").into()),
    }

    // A key bound to a lease vanishes when the lease goes.
    let lease = store.grant_lease(Duration::from_secs(10)).await?;
    store
        .put(
            "quickstart/services/web-1",
            "127.0.0.1:8080".into(),
            PutOptions::new().with_lease(lease.id()),
        )
        .await?;
    if let WatchEvent::Put(kv) = next(&mut watch).await? {
        println!(
            "The watch saw {} = {} appear, bound to lease {}.",
            kv.key,
            String::from_utf8_lossy(&kv.value),
            lease.id()
        );
    }
    lease.revoke().await?;
    match next(&mut watch).await? {
        WatchEvent::Delete { key, .. } => {
            println!("Revoked the lease: the watch saw {key} vanish.")
        }
        other => return Err(format!("expected a Delete, got {other:?}").into()),
    }
    let gone = store.get("quickstart/services/web-1").await?.is_none();
    println!("And it is gone for readers too: {gone}.");

    // A lock with a fencing token.
    let guard = store
        .lock(
            "quickstart/nightly-job",
            LockOptions::new().with_timeout(WAIT),
        )
        .await?;
    println!(
        "Took the lock quickstart/nightly-job with fencing token {}.",
        guard.fencing_token()
    );
    let second = store
        .try_lock("quickstart/nightly-job", LockOptions::new())
        .await?;
    println!(
        "A second try while it is held: {}.",
        if second.is_some() {
            "taken (wrong!)"
        } else {
            "refused"
        }
    );
    guard.release().await?;
    let again = store
        .try_lock("quickstart/nightly-job", LockOptions::new())
        .await?
        .ok_or("the released lock could not be taken")?;
    println!(
        "Released it; taking it again gives a larger token: {}.",
        again.fencing_token()
    );
    again.release().await?;
    Ok(())
}

async fn next(watch: &mut anykv::WatchStream) -> Result<WatchEvent, Box<dyn std::error::Error>> {
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Err("the watch ended".into()),
        Err(_) => Err("no watch event within 10 s".into()),
    }
}
