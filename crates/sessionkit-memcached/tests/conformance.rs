//! The conformance suite against two real Memcached servers (consistent hashing spreads every
//! test's sessions over both), each test in its own namespace; plus what only Memcached has.
//! Required under CI=true; skipped loudly elsewhere.

use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{Change, ErrorKind, ListFilter, PageRequest, Store};
use sessionkit_memcached::MemcachedStore;

/// The two test servers (`SESSIONKIT_MEMCACHED_URL`, default 11211 and 11212 on loopback).
pub fn memcached_url() -> String {
    std::env::var("SESSIONKIT_MEMCACHED_URL")
        .unwrap_or_else(|_| "memcached://127.0.0.1:11211,127.0.0.1:11212".into())
}

fn namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sktest_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store over both servers, or `None` (skip) when they are down outside CI.
pub async fn memcached() -> Option<MemcachedStore> {
    let base = memcached_url();
    let url = format!("{base}?namespace={}&max_item_bytes=4194304", namespace());
    let store = MemcachedStore::open(&url).await.expect("a valid URL");
    // Connections are made on first use: probe once so a down server is reported as such.
    match store.load(&fresh_key()).await {
        Ok(_) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => {
            server_unavailable("Memcached (two servers)", &base, err)
        }
        Err(err) => panic!("probing Memcached: {err}"),
    }
}

sessionkit_conformance::conformance_suite!(memcached());

#[tokio::test]
async fn listing_and_owner_operations_are_unsupported() {
    let Some(store) = memcached().await else {
        return;
    };
    let caps = store.capabilities();
    assert!(!caps.iterable && !caps.owner_index && caps.native_ttl && caps.multiprocess_safe);
    let err = store
        .list(&ListFilter::default(), PageRequest::first(10))
        .await
        .expect_err("no listing");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert_eq!(
        store
            .by_owner("a")
            .await
            .expect_err("no owner index")
            .kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        store
            .delete_by_owner("a")
            .await
            .expect_err("no owner index")
            .kind(),
        ErrorKind::Unsupported
    );
}

#[tokio::test]
async fn a_session_over_the_item_limit_is_refused_before_any_write() {
    let Some(_) = memcached().await else { return };
    let url = format!(
        "{}?namespace={}&max_item_bytes=65536",
        memcached_url(),
        namespace()
    );
    let store = MemcachedStore::open(&url).await.expect("open");
    let key = fresh_key();
    let big = vec![0u8; 70_000];
    let err = store
        .create(&key, &record_with(&[("big", &big)]))
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "nothing was written"
    );

    store
        .create(&key, &record_with(&[("small", b"x")]))
        .await
        .expect("create");
    let mut change = Change::default();
    change.set("big".into(), big);
    let err = store.apply(&key, &change).await.expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let kept = store
        .load(&key)
        .await
        .expect("load")
        .expect("the session is untouched");
    assert_eq!(kept.data.keys().collect::<Vec<_>>(), ["small"]);
}
