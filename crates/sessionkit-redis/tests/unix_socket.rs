//! The store through a Redis Unix socket (`redis+unix://`), as an ACL user with a password
//! (`user=`, `pass=`) in database 3 (`db=`): the session lands there. Required under CI=true;
//! skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::Store;
use sessionkit_redis::RedisStore;
use sessionkit_testkit::tls::{REDIS_TLS_USER, redis_socket};

#[tokio::test]
async fn the_store_works_through_the_unix_socket() {
    let socket = redis_socket();
    let (user, password) = REDIS_TLS_USER;
    let namespace = sessionkit_testkit::scratch_table();
    let url =
        format!("redis+unix://{socket}?db=3&user={user}&pass={password}&namespace={namespace}");
    let store = match RedisStore::open(&url).await {
        Ok(store) => store,
        Err(err) => return server_unavailable("Redis's Unix socket", &socket, err).unwrap_or(()),
    };
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data["a"], b"1");
    // Seen from a second client on the socket: the session's hash is in database 3.
    let admin = redis::Client::open(format!(
        "redis+unix://{socket}?db=3&user={user}&pass={password}"
    ))
    .expect("url");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("a second client");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(&mut admin)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    store.delete(&key).await.expect("delete");
}
