//! The conformance suite against a real etcd server: `cargo test -p
//! anykv-etcd --test conformance`.
//!
//! The suite uses the server at `ANYKV_ETCD_URL` if set, otherwise one the
//! tests start from the `etcd` binary on free loopback ports; the factory
//! (in `common`) offers the compact, restart, pause/resume and request
//! timeout hooks.

mod common;

anykv_conformance::conformance_tests!(common::factory());
