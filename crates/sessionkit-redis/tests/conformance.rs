//! The conformance suite against Redis standalone and a real 3-master Redis Cluster, each test
//! in its own namespace. Required under CI=true; skipped loudly elsewhere.

use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit_conformance::server_unavailable;
use sessionkit_core::{ErrorKind, Store};
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
    open_in(server, &base, &namespace()).await
}

async fn open_in(server: &str, base: &str, namespace: &str) -> Option<RedisStore> {
    match RedisStore::open(&format!("{base}?namespace={namespace}")).await {
        Ok(store) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => server_unavailable(server, base, err),
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

/// Hashes no sessionkit version wrote (edited by hand, or by another program sharing the
/// namespace) load as typed `Codec` errors, never as a panic or an empty session; a key
/// holding another type fails as a backend error.
#[tokio::test]
async fn corrupt_session_hashes_are_typed_errors() {
    let namespace = namespace();
    let url = redis_url();
    let Some(store) = open_in("Redis", &url, &namespace).await else {
        return;
    };
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let far = (sessionkit_core::Timestamp::now().as_millis() + 3_600_000).to_string();
    type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;
    let cases: [(&str, Fields); 4] = [
        (
            "a deadline that is not a number",
            vec![(b"__c", b"1"), (b"__e", b"soon"), (b"__v", b"1")],
        ),
        (
            "no creation time",
            vec![(b"__e", far.as_bytes()), (b"__v", b"1")],
        ),
        (
            "a data key that is not UTF-8",
            vec![
                (b"__c", b"1"),
                (b"__e", far.as_bytes()),
                (b"__v", b"1"),
                (b"d:\xff\xfe", b"x"),
            ],
        ),
        (
            "a negative version",
            vec![(b"__c", b"1"), (b"__e", far.as_bytes()), (b"__v", b"-3")],
        ),
    ];
    for (what, fields) in cases {
        let key = sessionkit_conformance::fresh_key();
        let mut hset = redis::cmd("HSET");
        hset.arg(format!("{namespace}:s:{{{}}}", key.to_hex()));
        for (name, value) in fields {
            hset.arg(name).arg(value);
        }
        let _: i64 = hset.query_async(&mut conn).await.expect("HSET");
        let err = store.load(&key).await.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Codec, "{what}: {err}");
    }
    let key = sessionkit_conformance::fresh_key();
    let () = redis::cmd("SET")
        .arg(format!("{namespace}:s:{{{}}}", key.to_hex()))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let err = store
        .load(&key)
        .await
        .expect_err("a string under a session key");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
}

/// A server that lost the store's scripts (a restart, `SCRIPT FLUSH`) is given them again by
/// the next call that needs one, which then succeeds.
#[tokio::test]
async fn scripts_the_server_lost_are_loaded_again() {
    let url = redis_url();
    let Some(store) = open_in("Redis", &url, &namespace()).await else {
        return;
    };
    let key = sessionkit_conformance::fresh_key();
    let record = sessionkit_conformance::record_with(&[("a", b"1")]);
    let flush = async || {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("SCRIPT FLUSH");
    };
    flush().await;
    store
        .create(&key, &record)
        .await
        .expect("create after a flush");
    flush().await;
    let mut change = sessionkit_core::Change::default();
    change.set("b".into(), b"2".to_vec());
    let outcome = store
        .apply(&key, &change)
        .await
        .expect("apply after a flush");
    assert!(matches!(
        outcome,
        sessionkit_core::ApplyOutcome::Applied { .. }
    ));
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data["b"], b"2");
}

/// More conditions than the script folds into its first `HMGET` (1,000): the rest are read
/// 1,000 at a time, and a failing condition in any chunk, `=` or `!`, is a `Conflict` that
/// writes nothing.
#[tokio::test]
async fn thousands_of_conditions_are_all_checked() {
    use sessionkit_core::{ApplyOutcome, Change};

    let url = redis_url();
    let Some(store) = open_in("Redis", &url, &namespace()).await else {
        return;
    };
    const KEYS: usize = 2_500;
    let names: Vec<String> = (0..KEYS).map(|i| format!("k{i:04}")).collect();
    // Even keys hold their index (odd multiples of 3 hold an empty value); odd keys are absent.
    let value = |i: usize| -> Option<Vec<u8>> {
        match i {
            _ if !i.is_multiple_of(2) => None,
            _ if i.is_multiple_of(3) => Some(Vec::new()),
            _ => Some(i.to_string().into_bytes()),
        }
    };
    let pairs: Vec<(String, Vec<u8>)> = (0..KEYS)
        .filter_map(|i| Some((names[i].clone(), value(i)?)))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let key = sessionkit_conformance::fresh_key();
    store
        .create(&key, &sessionkit_conformance::record_with(&borrowed))
        .await
        .expect("create");
    let all = |except: Option<usize>| {
        let mut change = Change::default();
        for (i, name) in names.iter().enumerate() {
            let mut seen = value(i);
            if Some(i) == except {
                seen = match seen {
                    None => Some(Vec::new()),
                    Some(v) if v.is_empty() => None,
                    Some(mut v) => {
                        v.push(b'!');
                        Some(v)
                    }
                };
            }
            change.expect(name, seen.as_deref());
            change.set(name.clone(), b"new".to_vec());
        }
        change
    };
    // One wrong condition in the first chunk, in later ones, of each kind.
    for wrong in [0, 999, 1000, 1001, 1998, 2001, 2499] {
        assert_eq!(
            store.apply(&key, &all(Some(wrong))).await.expect("apply"),
            ApplyOutcome::Conflict,
            "condition {wrong} is wrong"
        );
    }
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.version, 1, "a conflict wrote nothing");
    assert_eq!(loaded.data.len(), pairs.len());
    assert_eq!(
        store.apply(&key, &all(None)).await.expect("apply"),
        ApplyOutcome::Applied { version: 2 }
    );
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data.len(), KEYS);
    assert!(loaded.data.values().all(|v| v == b"new"));
}

/// A conditional apply that meets a session a cycle is moving waits, then checks its
/// conditions in the run that writes: a write that lands while it waits makes it a `Conflict`.
#[tokio::test]
async fn conditions_are_checked_again_after_waiting_for_a_move() {
    use sessionkit_core::{ApplyOutcome, Change, Timestamp};

    let namespace = namespace();
    let url = redis_url();
    let Some(store) = open_in("Redis", &url, &namespace).await else {
        return;
    };
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = sessionkit_conformance::fresh_key();
    let hash = format!("{namespace}:s:{{{}}}", key.to_hex());
    store
        .create(&key, &sessionkit_conformance::record_with(&[("n", b"1")]))
        .await
        .expect("create");
    let mut change = Change::default();
    change.expect("n", Some(b"1"));
    change.set("n".into(), b"2".to_vec());
    for (written, expected) in [
        (None, ApplyOutcome::Applied { version: 2 }),
        (Some("5"), ApplyOutcome::Conflict),
    ] {
        // A move in progress, as a cycle's first step leaves it; it ends when this test
        // removes its mark (the deadline is far enough that a slow machine never reaches it).
        let until = Timestamp::now().as_millis() + 4_000;
        let _: i64 = redis::cmd("HSET")
            .arg(&hash)
            .arg("__m")
            .arg("ab")
            .arg("__mu")
            .arg(until)
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let apply = tokio::spawn({
            let store = store.clone();
            let change = change.clone();
            async move { store.apply(&key, &change).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!apply.is_finished(), "the apply waits for the move");
        if let Some(value) = written {
            let _: i64 = redis::cmd("HSET")
                .arg(&hash)
                .arg("d:n")
                .arg(value)
                .query_async(&mut conn)
                .await
                .expect("HSET");
        }
        let _: i64 = redis::cmd("HDEL")
            .arg(&hash)
            .arg("__m")
            .arg("__mu")
            .query_async(&mut conn)
            .await
            .expect("HDEL");
        let outcome = apply.await.expect("task").expect("apply");
        assert_eq!(outcome, expected, "written meanwhile: {written:?}");
        let _: i64 = redis::cmd("HSET")
            .arg(&hash)
            .arg("d:n")
            .arg("1")
            .query_async(&mut conn)
            .await
            .expect("HSET");
    }
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.version, 2, "the conflict wrote nothing");
}
