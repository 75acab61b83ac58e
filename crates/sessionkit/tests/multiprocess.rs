//! Two OS processes on one server-backed store, for every store that says it is
//! `multiprocess_safe`: writes of different keys all survive, and concurrent `update`s of one
//! list and one counter through the session API lose nothing (see
//! `sessionkit_conformance::multiprocess`). The embedded multi-process stores (SQLite, file)
//! run the same parent and child in their own crates. Servers as in the README; a server that
//! is down skips loudly, and fails under `CI=true`.
#![cfg(all(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "memcached"
))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit::{ErrorKind, Store};
use sessionkit_conformance::{fresh_key, multiprocess, server_unavailable};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A table or namespace of its own for each test, named like the SQL test kit's scratch
/// tables (`sk_<pid>_<n>`) so that a crashed run's leftovers are dropped by later runs.
fn scratch() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(100);
    format!(
        "sk_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(url: String) -> sessionkit::Result<Arc<dyn Store>> {
    sessionkit::open(&url).await
}

/// Runs the parent over `url` if the server answers.
fn run(server: &str, base: &str, url: String) {
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let store = sessionkit::open(&url).await?;
            assert!(store.capabilities().multiprocess_safe, "{server}");
            store.load(&fresh_key()).await
        });
    match probe {
        Ok(_) => multiprocess::run_parent("child", &url, 2, open),
        Err(err) if err.kind() == ErrorKind::Unavailable => {
            server_unavailable::<()>(server, base, err);
        }
        Err(err) => panic!("opening {server}: {err}"),
    }
}

#[test]
fn postgres_two_processes_lose_nothing() {
    let base = env_or(
        "SESSIONKIT_POSTGRES_URL",
        "postgres://root@127.0.0.1:5432/test",
    );
    let url = format!("{base}?table={}&setup=true", scratch());
    run("PostgreSQL", &base, url);
}

#[test]
fn mysql_two_processes_lose_nothing() {
    let base = env_or("SESSIONKIT_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let url = format!("{base}?table={}&setup=true", scratch());
    run("MySQL/MariaDB", &base, url);
}

#[test]
fn redis_two_processes_lose_nothing() {
    let base = env_or("SESSIONKIT_REDIS_URL", "redis://127.0.0.1:6379");
    let url = format!("{base}?namespace={}", scratch());
    run("Redis", &base, url);
}

#[test]
fn redis_cluster_two_processes_lose_nothing() {
    let base = env_or(
        "SESSIONKIT_REDIS_CLUSTER_URL",
        "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
    );
    let url = format!("{base}?namespace={}", scratch());
    run("Redis Cluster", &base, url);
}

#[test]
fn memcached_two_processes_lose_nothing() {
    let base = env_or(
        "SESSIONKIT_MEMCACHED_URL",
        "memcached://127.0.0.1:11211,127.0.0.1:11212",
    );
    let url = format!("{base}?namespace={}&max_item_bytes=4194304", scratch());
    run("Memcached (two servers)", &base, url);
}

#[test]
#[ignore = "a child process of the *_two_processes_lose_nothing tests"]
fn child() {
    multiprocess::run_child(open);
}
