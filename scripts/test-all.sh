#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the tests — protoc and the
# protobuf well-known types (etcd-client's build), and etcd, Redis and
# ZooKeeper (the servers the tests start themselves) — asking for sudo
# when not run as root, then runs every test of the workspace, real
# servers and clusters included. Arguments go to `cargo test`.
#
#   scripts/test-all.sh                      # everything
#   scripts/test-all.sh --install-only       # just the packages
#   scripts/test-all.sh -- --test-threads 1  # cargo test's own options
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(protobuf-compiler libprotobuf-dev etcd-server redis-server zookeeper)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "test-all: missing ${missing[*]}, and this is not a Debian-like system: install them by hand" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test-all: installing ${missing[*]} needs root (or sudo)" >&2; exit 1; }
    sudo=(sudo)
    echo "test-all: installing ${missing[*]} (sudo asks for your password)"
  else
    echo "test-all: installing ${missing[*]}"
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi

command -v cargo >/dev/null || { echo "test-all: cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
exec cargo test --workspace --all-features "$@"
