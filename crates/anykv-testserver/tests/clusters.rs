//! Each cluster fixture starts, finds its leader or primary, loses it, and
//! gets a new one within a bound. The measured times are printed (run with
//! `--nocapture` to see them); the bounds leave slack for a loaded machine.

use std::time::{Duration, Instant};

use anykv_testserver::etcd_cluster::EtcdCluster;
use anykv_testserver::redis_cluster::RedisCluster;
use anykv_testserver::redis_sentinel::RedisSentinel;
use anykv_testserver::zookeeper_ensemble::ZkEnsemble;

#[test]
fn etcd_cluster_elects_a_new_leader_after_the_leader_is_killed() {
    let t = Instant::now();
    let mut c = EtcdCluster::start();
    println!(
        "etcd cluster: started in {:?}, {} KiB RSS",
        t.elapsed(),
        c.rss_kib()
    );
    assert!(c.url("app").starts_with("etcd://127.0.0.1:"));
    assert_eq!(c.endpoints().len(), 3);
    let old = c.leader().expect("a started cluster has a leader");
    let t = Instant::now();
    c.kill(old);
    let new = c
        .wait_for_leader(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    println!("etcd cluster: leader {old} killed, member {new} leads after {took:?}");
    assert_ne!(new, old);
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    let t = Instant::now();
    c.restart(old);
    println!("etcd cluster: member {old} rejoined in {:?}", t.elapsed());
    let leader = c
        .wait_for_leader(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    c.pause(leader).unwrap_or_else(|e| panic!("{e}"));
    let next = c
        .wait_for_leader(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "etcd cluster: leader {leader} paused, member {next} leads after {:?}",
        t.elapsed()
    );
    assert_ne!(next, leader);
    c.resume(leader).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn zookeeper_ensemble_elects_a_new_leader_after_the_leader_is_killed() {
    let t = Instant::now();
    let mut z = ZkEnsemble::start();
    println!(
        "ZooKeeper ensemble: started in {:?}, {} KiB RSS",
        t.elapsed(),
        z.rss_kib()
    );
    assert!(z.url("app").starts_with("zk://127.0.0.1:"));
    let old = z.leader().expect("a started ensemble has a leader");
    let t = Instant::now();
    z.kill(old);
    let new = z
        .wait_for_leader(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    println!("ZooKeeper ensemble: leader {old} killed, server {new} leads after {took:?}");
    assert_ne!(new, old);
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    let t = Instant::now();
    z.restart(old);
    println!(
        "ZooKeeper ensemble: server {old} rejoined in {:?}",
        t.elapsed()
    );
    let leader = z
        .wait_for_leader(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    z.pause(leader).unwrap_or_else(|e| panic!("{e}"));
    let next = z
        .wait_for_leader(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "ZooKeeper ensemble: leader {leader} paused, server {next} leads after {:?}",
        t.elapsed()
    );
    assert_ne!(next, leader);
    z.resume(leader).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn redis_sentinels_promote_the_replica_after_the_primary_is_killed() {
    let t = Instant::now();
    let mut r = RedisSentinel::start();
    println!(
        "Redis Sentinel: started in {:?}, {} KiB RSS",
        t.elapsed(),
        r.rss_kib()
    );
    assert_eq!(r.sentinel_addrs().len(), 3);
    assert_eq!(r.master_name(), "anykv");
    let old = r.primary().expect("the Sentinels name a primary");
    assert_eq!(old, 0);
    let replica = 1 - old;
    // A write the replica never sees: it is cut off while the primary
    // acknowledges it.
    r.lag_replica(replica).unwrap_or_else(|e| panic!("{e}"));
    let set = r.command(old, &["SET", "acknowledged", "1"]);
    assert_eq!(
        set.as_ref().ok().and_then(|s| s.as_str()),
        Some("OK"),
        "{set:?}"
    );
    let behind = r.replication_offset(old).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    r.kill(old);
    r.resume(replica).unwrap_or_else(|e| panic!("{e}"));
    let lagged = r
        .replication_offset(replica)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lagged < behind,
        "the replica got the write: {lagged} >= {behind}"
    );
    let new = r
        .wait_for_failover(old, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    println!("Redis Sentinel: primary {old} killed, {new} promoted after {took:?}");
    assert_eq!(new, replica);
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    let lost = r.command(new, &["GET", "acknowledged"]);
    assert!(
        matches!(lost, Ok(anykv_testserver::resp::Reply::Bulk(None))),
        "{lost:?}"
    );
    let t = Instant::now();
    r.restart(old);
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.role(old).ok().as_deref() != Some("slave") {
        assert!(
            Instant::now() < deadline,
            "the old primary stays {:?}",
            r.role(old)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "Redis Sentinel: old primary {old} a replica again after {:?}",
        t.elapsed()
    );
}

#[test]
fn redis_cluster_promotes_a_replica_after_a_primary_is_killed() {
    let t = Instant::now();
    let mut c = RedisCluster::start();
    println!(
        "Redis Cluster: 3 primaries and 3 replicas started in {:?}, {} KiB RSS",
        t.elapsed(),
        c.rss_kib()
    );
    assert_eq!(c.addrs().len(), 6);
    assert_eq!(c.primaries(), [Some(0), Some(1), Some(2)]);
    let old = 0;
    let t = Instant::now();
    c.kill(old);
    let new = c
        .wait_for_failover(old, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    println!("Redis Cluster: primary {old} killed, node {new} serves its slots after {took:?}");
    assert_eq!(c.shard(new), c.shard(old));
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    let t = Instant::now();
    c.restart(old);
    c.wait_for_replica(old, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    c.wait_until_ok(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "Redis Cluster: node {old} a replica again after {:?}",
        t.elapsed()
    );
    assert_eq!(c.primary_of(c.shard(old)), Some(new));
    let t = Instant::now();
    drop(c);
    println!("Redis Cluster: stopped in {:?}", t.elapsed());
}
