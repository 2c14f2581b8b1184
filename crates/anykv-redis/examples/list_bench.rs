//! Shows that `list` reads the sorted index, not the keyspace: the time of
//! `list` of 10 keys with an empty database and with 100,000 unrelated keys
//! in it. Not a timed test; it prints both figures.
//!
//! `cargo run -p anykv-redis --example list_bench --release` (uses
//! `ANYKV_REDIS_URL` if set, a database it may fill, else starts a
//! redis-server of its own).

use std::time::{Duration, Instant};

use anykv_core::{PutOptions, Store};
use anykv_redis::RedisStore;

const ROUNDS: u32 = 2000;
const UNRELATED: usize = 100_000;

async fn time_list(store: &RedisStore) -> Duration {
    for _ in 0..100 {
        let _ = store.list("svc").await;
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        match store.list("svc").await {
            Ok(l) if l.len() == 10 => {}
            other => {
                eprintln!("list returned {other:?}");
                std::process::exit(1);
            }
        }
    }
    start.elapsed() / ROUNDS
}

#[tokio::main]
async fn main() {
    let _server;
    let base = match std::env::var("ANYKV_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let s = anykv_testserver::redis::RedisServer::start_new();
            let u = s.url();
            _server = s;
            u
        }
    };
    let db = 9;
    let url = format!("{base}/{db}/list-bench?namespace=list-bench");
    let store = match RedisStore::open_url(&url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open {}: {e}", anykv_core::redact_url(&url));
            std::process::exit(1);
        }
    };
    let raw = redis::Client::open(format!("{base}/{db}"));
    let mut raw = match raw {
        Ok(c) => match c.get_multiplexed_async_connection().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot connect: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("bad URL: {e}");
            std::process::exit(1);
        }
    };
    let _ = store.delete_tree("").await;
    for i in 0..10 {
        if let Err(e) = store
            .put(&format!("svc/{i}"), "x".into(), PutOptions::new())
            .await
        {
            eprintln!("put failed: {e}");
            std::process::exit(1);
        }
    }
    let empty = time_list(&store).await;

    for chunk in 0..(UNRELATED / 1000) {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.set(format!("unrelated:svc/{}", chunk * 1000 + i), "y")
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut raw).await {
            eprintln!("filling the database failed: {e}");
            std::process::exit(1);
        }
    }
    let size: u64 = redis::cmd("DBSIZE")
        .query_async(&mut raw)
        .await
        .unwrap_or(0);
    let full = time_list(&store).await;
    println!("list of 10 keys, database otherwise empty:   {empty:?} per call");
    println!("list of 10 keys, {size} keys in the database: {full:?} per call");
    for chunk in 0..(UNRELATED / 1000) {
        let mut cmd = redis::cmd("UNLINK");
        for i in 0..1000 {
            cmd.arg(format!("unrelated:svc/{}", chunk * 1000 + i));
        }
        let _ = cmd.query_async::<()>(&mut raw).await;
    }
    let again = time_list(&store).await;
    println!("list of 10 keys, unrelated keys removed again: {again:?} per call");
    let _ = store.delete_tree("").await;
    let _ = store.close().await;
}
