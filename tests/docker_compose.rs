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

#[test]
fn names_the_three_services_and_nothing_else() {
    let doc = compose();
    let services = doc["services"]
        .as_hash()
        .expect("docker-compose.yml has a services map");
    let mut names: Vec<String> = services.keys().map(|k| text(k, "a service name")).collect();
    names.sort();
    assert_eq!(names, ["etcd", "redis", "zookeeper"]);
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
