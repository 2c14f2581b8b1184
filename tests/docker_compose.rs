//! `docker-compose.yml` stays valid and in step with the servers the tests
//! run: it parses, names etcd, ZooKeeper and Redis on their usual loopback
//! ports with health checks, carries the settings the backends need (the
//! test servers' own, from `anykv-testserver`), and pins the same
//! major.minor versions as the Debian packages the tests start.
//!
//! No container runs here; the file is for users with a Docker engine.

use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn compose() -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "docker-compose.yml holds one document");
    docs.remove(0)
}

fn service(name: &str) -> Yaml {
    let doc = compose();
    let s = doc["services"][name].clone();
    assert!(
        !s.is_badvalue(),
        "docker-compose.yml has no service {name:?}"
    );
    s
}

fn text(y: &Yaml, what: &str) -> String {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
        .to_owned()
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
        .iter()
        .map(|v| text(v, what))
        .collect()
}

/// The version in an image reference such as `redis:7.0.15` or
/// `quay.io/coreos/etcd:v3.4.23`, as major.minor.
fn image_minor(image: &str) -> String {
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    minor(tag.trim_start_matches('v'))
        .unwrap_or_else(|| panic!("image {image:?} does not pin a version"))
}

fn minor(version: &str) -> Option<String> {
    let mut parts = version.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

fn output_of(binary: &Path, arg: &str) -> String {
    let out = Command::new(binary)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The services of the `cluster` profile, by kind.
const ETCD_MEMBERS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];
const ZOOKEEPER_SERVERS: [&str; 3] = ["zookeeper1", "zookeeper2", "zookeeper3"];
const SENTINELS: [&str; 3] = ["sentinel1", "sentinel2", "sentinel3"];

#[test]
fn names_the_three_services_and_the_cluster_profile() {
    let doc = compose();
    let services = doc["services"]
        .as_hash()
        .expect("docker-compose.yml has a services map");
    let mut plain = Vec::new();
    let mut cluster = Vec::new();
    for (k, v) in services {
        let name = text(k, "a service name");
        if v["profiles"].is_badvalue() {
            plain.push(name);
        } else {
            assert_eq!(
                strings(&v["profiles"], "profiles"),
                ["cluster"],
                "{name}'s profiles"
            );
            assert_eq!(
                text(&v["network_mode"], "network_mode"),
                "host",
                "{name} uses the host network, so Sentinels hand out reachable addresses"
            );
            assert!(
                v["ports"].is_badvalue(),
                "{name} publishes no ports: it binds loopback on the host network"
            );
            let kind = ["etcd", "zookeeper"]
                .into_iter()
                .find(|k| name.starts_with(k))
                .unwrap_or("redis");
            assert_eq!(
                text(&v["image"], "image"),
                text(&doc["services"][kind]["image"], "image"),
                "{name} runs the image of the plain {kind} service"
            );
            cluster.push(name);
        }
    }
    plain.sort();
    cluster.sort();
    assert_eq!(plain, ["etcd", "redis", "zookeeper"]);
    let mut expected: Vec<&str> = ETCD_MEMBERS
        .iter()
        .chain(&ZOOKEEPER_SERVERS)
        .chain(&SENTINELS)
        .copied()
        .chain(["redis-primary", "redis-replica"])
        .collect();
    expected.sort();
    assert_eq!(cluster, expected);
}

/// The value of `--flag=value` in a command.
fn flag(command: &[String], flag: &str) -> String {
    let prefix = format!("{flag}=");
    command
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the command lacks {flag}: {command:?}"))
        .to_owned()
}

#[test]
fn the_etcd_cluster_has_three_members_on_loopback() {
    let mut initial = Vec::new();
    for (i, name) in ETCD_MEMBERS.iter().enumerate() {
        let command = strings(&service(name)["command"], "etcd command");
        let member = format!("e{}", i + 1);
        assert_eq!(flag(&command, "--name"), member);
        let client = flag(&command, "--listen-client-urls");
        assert!(client.starts_with("http://127.0.0.1:"), "{name}: {client}");
        assert_eq!(flag(&command, "--advertise-client-urls"), client);
        let peer = flag(&command, "--initial-advertise-peer-urls");
        assert_eq!(flag(&command, "--listen-peer-urls"), peer);
        initial.push(format!("{member}={peer}"));
        assert_eq!(flag(&command, "--initial-cluster-state"), "new");
        let check = strings(&service(name)["healthcheck"]["test"], "healthcheck");
        assert!(
            check.contains(&format!("--endpoints={client}")),
            "{name}'s health check asks its own endpoint: {check:?}"
        );
    }
    for name in ETCD_MEMBERS {
        let command = strings(&service(name)["command"], "etcd command");
        assert_eq!(flag(&command, "--initial-cluster"), initial.join(","));
    }
}

#[test]
fn the_zookeeper_ensemble_has_three_servers_with_the_test_settings() {
    use anykv_testserver::zookeeper::{CONTAINER_CHECK_FLAG, CONTAINER_RATE_FLAG};
    let first = service(ZOOKEEPER_SERVERS[0])["environment"].clone();
    let servers = text(&first["ZOO_SERVERS"], "ZOO_SERVERS");
    let lines: Vec<&str> = servers.split_whitespace().collect();
    assert_eq!(lines.len(), 3, "{servers}");
    for (i, name) in ZOOKEEPER_SERVERS.iter().enumerate() {
        let env = service(name)["environment"].clone();
        assert_eq!(text(&env["ZOO_MY_ID"], "ZOO_MY_ID"), (i + 1).to_string());
        assert_eq!(text(&env["ZOO_SERVERS"], "ZOO_SERVERS"), servers);
        assert!(
            lines[i].starts_with(&format!("server.{}=127.0.0.1:", i + 1))
                && lines[i].contains(";127.0.0.1:"),
            "server {} takes quorum and clients on loopback: {}",
            i + 1,
            lines[i]
        );
        let extra = text(&env["ZOO_CFG_EXTRA"], "ZOO_CFG_EXTRA");
        assert!(
            extra
                .split_whitespace()
                .any(|l| l == "extendedTypesEnabled=true"),
            "{name}: TTL nodes need extendedTypesEnabled=true"
        );
        let flags = text(&env["JVMFLAGS"], "JVMFLAGS");
        for f in [CONTAINER_CHECK_FLAG, CONTAINER_RATE_FLAG] {
            assert!(
                flags.split_whitespace().any(|x| x == f),
                "{name}: JVMFLAGS must carry {f}"
            );
        }
    }
}

#[test]
fn the_sentinels_watch_the_primary_and_the_replica_follows_it() {
    let primary = strings(&service("redis-primary")["command"], "command");
    let port_of = |command: &[String]| {
        let at = command
            .iter()
            .position(|c| c == "--port")
            .expect("a --port");
        command[at + 1].clone()
    };
    let primary_port = port_of(&primary);
    let replica = strings(&service("redis-replica")["command"], "command");
    let at = replica
        .iter()
        .position(|c| c == "--replicaof")
        .expect("the replica has --replicaof");
    assert_eq!(
        replica[at + 1..at + 3],
        ["127.0.0.1", primary_port.as_str()]
    );
    for command in [&primary, &replica] {
        for (directive, value) in anykv_testserver::redis::SETTINGS {
            let f = format!("--{directive}");
            let at = command
                .iter()
                .position(|c| *c == f)
                .unwrap_or_else(|| panic!("redis command lacks {f}: {command:?}"));
            assert_eq!(command.get(at + 1).map(String::as_str), Some(*value));
        }
        let bind = command.iter().position(|c| c == "--bind").expect("--bind");
        assert_eq!(command[bind + 1], "127.0.0.1");
    }
    let monitor = format!("sentinel monitor anykv 127.0.0.1 {primary_port} 2");
    for name in SENTINELS {
        let command = strings(&service(name)["command"], "sentinel command");
        let script = command.last().cloned().unwrap_or_default();
        assert!(
            script.contains(&monitor),
            "{name} monitors master anykv at the primary with quorum 2: {script}"
        );
        assert!(script.contains("bind 127.0.0.1"), "{name} binds loopback");
        assert!(script.contains("--sentinel"), "{name} runs as a Sentinel");
    }
}

#[test]
fn every_service_has_its_usual_loopback_port_a_health_check_and_a_volume() {
    for (name, port) in [("etcd", 2379), ("zookeeper", 2181), ("redis", 6379)] {
        let s = service(name);
        assert_eq!(
            strings(&s["ports"], "ports"),
            [format!("127.0.0.1:{port}:{port}")],
            "{name}'s ports"
        );
        let check = strings(&s["healthcheck"]["test"], "healthcheck.test");
        assert_eq!(check[0], "CMD", "{name}'s health check runs a command");
        assert!(check.len() >= 2, "{name}'s health check names a command");
        assert!(
            !strings(&s["volumes"], "volumes").is_empty(),
            "{name} keeps its data in a volume"
        );
        image_minor(&text(&s["image"], "image"));
    }
}

#[test]
fn zookeeper_has_ttl_nodes_and_the_test_servers_settings() {
    use anykv_testserver::zookeeper::{CONTAINER_CHECK_FLAG, CONTAINER_RATE_FLAG, SETTINGS};
    let env = service("zookeeper")["environment"].clone();
    let extra = text(&env["ZOO_CFG_EXTRA"], "ZOO_CFG_EXTRA");
    let mut lines: Vec<&str> = extra.split_whitespace().collect();
    let tick = text(&env["ZOO_TICK_TIME"], "ZOO_TICK_TIME");
    let tick_line = format!("tickTime={tick}");
    lines.push(&tick_line);
    assert!(
        lines.contains(&"extendedTypesEnabled=true"),
        "TTL nodes need extendedTypesEnabled=true: {lines:?}"
    );
    for (key, value) in SETTINGS {
        let line = format!("{key}={value}");
        assert!(
            lines.contains(&line.as_str()),
            "ZooKeeper's settings lack {line} (the test servers use it): {lines:?}"
        );
    }
    let flags = text(&env["JVMFLAGS"], "JVMFLAGS");
    assert!(
        flags.split_whitespace().any(|f| f == CONTAINER_CHECK_FLAG),
        "JVMFLAGS must carry {CONTAINER_CHECK_FLAG}: {flags:?}"
    );
    assert!(
        flags.split_whitespace().any(|f| f == CONTAINER_RATE_FLAG),
        "JVMFLAGS must carry {CONTAINER_RATE_FLAG}: {flags:?}"
    );
    let allowed = text(
        &env["ZOO_4LW_COMMANDS_WHITELIST"],
        "ZOO_4LW_COMMANDS_WHITELIST",
    );
    assert!(
        allowed.split(',').any(|c| c.trim() == "srvr"),
        "the health check (zkServer.sh status) needs the srvr command: {allowed:?}"
    );
}

#[test]
fn redis_has_the_test_servers_persistence() {
    let command = strings(&service("redis")["command"], "redis command");
    assert_eq!(command[0], "redis-server");
    for (directive, value) in anykv_testserver::redis::SETTINGS {
        let flag = format!("--{directive}");
        let at = command
            .iter()
            .position(|c| *c == flag)
            .unwrap_or_else(|| panic!("redis command lacks {flag}: {command:?}"));
        assert_eq!(
            command.get(at + 1).map(String::as_str),
            Some(*value),
            "{flag}'s value"
        );
    }
}

#[test]
fn etcd_serves_clients_on_2379_and_keeps_data_in_its_volume() {
    let s = service("etcd");
    let command = strings(&s["command"], "etcd command");
    for flag in [
        "--listen-client-urls=http://0.0.0.0:2379",
        "--advertise-client-urls=http://127.0.0.1:2379",
        "--data-dir=/etcd-data",
    ] {
        assert!(
            command.iter().any(|c| c == flag),
            "etcd command lacks {flag}"
        );
    }
    assert_eq!(strings(&s["volumes"], "volumes"), ["etcd-data:/etcd-data"]);
}

#[test]
fn images_pin_the_versions_the_tests_run() {
    let etcd = anykv_testserver::require_binary(
        "etcd",
        &["/usr/bin/etcd"],
        "etcd-server",
        "ANYKV_ETCD_URL",
    );
    let etcd_version = output_of(&etcd, "--version");
    let etcd_version = etcd_version
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .and_then(minor)
        .unwrap_or_else(|| panic!("cannot read etcd's version from {etcd_version:?}"));
    assert_eq!(
        image_minor(&text(&service("etcd")["image"], "image")),
        etcd_version
    );

    let redis = anykv_testserver::require_binary(
        "redis-server",
        &["/usr/bin/redis-server"],
        "redis-server",
        "ANYKV_REDIS_URL",
    );
    let redis_version = output_of(&redis, "--version");
    let redis_version = redis_version
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .and_then(minor)
        .unwrap_or_else(|| panic!("cannot read redis-server's version from {redis_version:?}"));
    assert_eq!(
        image_minor(&text(&service("redis")["image"], "image")),
        redis_version
    );

    let jars = std::fs::read_dir("/usr/share/java").unwrap_or_else(|e| {
        panic!(
            "ZooKeeper is not installed (/usr/share/java: {e}); `sudo apt-get install zookeeper`"
        )
    });
    let zk_version = jars
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("zookeeper-")?
                .strip_suffix(".jar")
                .and_then(minor)
        })
        .next()
        .unwrap_or_else(|| {
            panic!("ZooKeeper is not installed (no /usr/share/java/zookeeper-X.Y.Z.jar); `sudo apt-get install zookeeper`")
        });
    assert_eq!(
        image_minor(&text(&service("zookeeper")["image"], "image")),
        zk_version
    );
}
