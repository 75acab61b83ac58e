//! The conformance suite against Redis standalone and a real 3-master Redis Cluster, each test
//! in its own namespace. Required under CI=true; skipped loudly elsewhere.

use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit_conformance::server_unavailable;
use sessionkit_core::ErrorKind;
use sessionkit_redis::RedisStore;

/// The standalone test server (`SESSIONKIT_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The test cluster (`SESSIONKIT_REDIS_CLUSTER_URL`, default three masters on 7001-7003).
pub fn cluster_url() -> String {
    std::env::var("SESSIONKIT_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into())
}

fn namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sktest_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(server: &str, base: String) -> Option<RedisStore> {
    match RedisStore::open(&format!("{base}?namespace={}", namespace())).await {
        Ok(store) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => server_unavailable(server, &base, err),
        Err(err) => panic!("opening {server}: {err}"),
    }
}

mod standalone {
    use super::*;
    sessionkit_conformance::conformance_suite!(open("Redis", redis_url()));
}

mod cluster {
    use super::*;
    sessionkit_conformance::conformance_suite!(open("Redis Cluster", cluster_url()));
}
