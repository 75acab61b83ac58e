//! The conformance suite against two real Memcached servers (consistent hashing spreads every
//! test's sessions over both), each test in its own namespace; plus what only Memcached has.
//! Required under CI=true; skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{Change, ErrorKind, ListFilter, PageRequest, Store};
use sessionkit_memcached::MemcachedStore;
use sessionkit_testkit::{memcached, memcached_url, scratch_table};

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
        scratch_table()
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
