//! The standalone connection's failure paths, against a loopback server whose first connection
//! misbehaves and whose later ones are passed through to the real test Redis: a silent server
//! times out as `Unavailable`, a reply that is not RESP2 is a typed error, and either way the
//! next request opens a new connection and works; and the handshake uses the URL's
//! credentials and database. Required under CI=true; skipped loudly elsewhere.

use std::time::{Duration, Instant};

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{ErrorKind, Store};
use sessionkit_redis::RedisStore;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const REDIS: &str = "127.0.0.1:6379";

/// A loopback address whose first connection `first` serves; later ones reach the real Redis.
async fn misbehaving_then_real<F, Fut>(first: F) -> Option<String>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Err(err) = TcpStream::connect(REDIS).await {
        return server_unavailable("Redis", REDIS, err);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(first(socket));
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(REDIS).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    Some(address)
}

async fn open(address: &str) -> RedisStore {
    let namespace = format!("sktest_conn_{}", std::process::id());
    RedisStore::open(&format!(
        "redis://{address}?namespace={namespace}&timeout_ms=300"
    ))
    .await
    .expect("the first connection opens (no handshake without a password)")
}

/// The first request through `address` fails with `kind`; the next one reconnects and the
/// store works as before. Returns how long the failing request took.
async fn fails_then_recovers(address: &str, kind: ErrorKind) -> Duration {
    let store = open(address).await;
    let started = Instant::now();
    let err = store
        .load(&fresh_key())
        .await
        .expect_err("the misbehaving connection fails the request");
    let took = started.elapsed();
    assert_eq!(err.kind(), kind, "{err}");
    works_again(&store).await;
    took
}

/// The next request after a failure reconnects, and the store works as before.
async fn works_again(store: &RedisStore) {
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create after reconnecting");
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data["a"], b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_unavailable_after_the_timeout_then_replaced() {
    let Some(address) = misbehaving_then_real(|mut socket| async move {
        let mut sink = [0u8; 1024];
        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {} // never answers
    })
    .await
    else {
        return;
    };
    let waited = fails_then_recovers(&address, ErrorKind::Unavailable).await;
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "failed after {waited:?}, not after its 300 ms timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_resp_is_a_typed_error_then_replaced() {
    let Some(address) = misbehaving_then_real(|mut socket| async move {
        let mut request = [0u8; 1024];
        if socket.read(&mut request).await.is_ok() {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"?this is not RESP\r\n").await;
        }
        let mut sink = [0u8; 1024];
        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await
    else {
        return;
    };
    fails_then_recovers(&address, ErrorKind::Backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_fails_its_requests_then_is_replaced() {
    let Some(address) = misbehaving_then_real(|mut socket| async move {
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await; // then drop: the connection closes
    })
    .await
    else {
        return;
    };
    fails_then_recovers(&address, ErrorKind::Unavailable).await;
}

#[tokio::test]
async fn bad_timeouts_and_unknown_options_are_config_errors() {
    for url in [
        "redis://127.0.0.1:6379?timeout_ms=0",
        "redis://127.0.0.1:6379?timeout_ms=soon",
        "redis://127.0.0.1:6379?timeout_ms=18446744073709551615",
        "redis://127.0.0.1:6379?tls_ca=/etc/ssl/ca.pem",
        "redis://127.0.0.1:6379?pass=secret",
        "redis://127.0.0.1:6379?no_such_option=1",
    ] {
        let err = RedisStore::open(url).await.expect_err(url);
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
    }
}

/// The URL's user, password and database number reach the server: the handshake sends `AUTH`
/// and `SELECT`, the sessions land in that database, and a wrong password fails the open.
#[tokio::test]
async fn the_urls_credentials_and_database_are_used() {
    let admin = async |db: u8| {
        let client = redis::Client::open(format!("redis://{REDIS}/{db}")).expect("url");
        client.get_multiplexed_async_connection().await
    };
    let (mut db0, mut db5) = match (admin(0).await, admin(5).await) {
        (Ok(db0), Ok(db5)) => (db0, db5),
        (Err(err), _) | (_, Err(err)) => {
            return server_unavailable("Redis", REDIS, err).unwrap_or(());
        }
    };
    let user = format!("sktest_user_{}", std::process::id());
    let () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">s3cret", "~*", "&*", "+@all"])
        .query_async(&mut db0)
        .await
        .expect("ACL SETUSER");
    let namespace = format!("sktest_db_{}", std::process::id());
    let opened = RedisStore::open(&format!(
        "redis://{user}:s3cret@{REDIS}/5?namespace={namespace}"
    ))
    .await;
    let wrong = RedisStore::open(&format!("redis://{user}:wrong@{REDIS}/5")).await;
    let mut created = None;
    if let Ok(store) = &opened {
        created = Some(
            store
                .create(&fresh_key(), &record_with(&[("a", b"1")]))
                .await,
        );
    }
    let pattern = format!("{namespace}:*");
    let keys = async |conn: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(conn)
            .await
            .expect("KEYS")
    };
    let (in_0, in_5) = (keys(&mut db0).await, keys(&mut db5).await);
    // Clean up before asserting, so a failure leaves neither the user nor the keys behind.
    for key in &in_5 {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query_async(&mut db5).await;
    }
    let _: redis::RedisResult<()> = redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query_async(&mut db0)
        .await;
    opened.expect("open with a user, a password and database 5");
    created.expect("opened").expect("create");
    assert_eq!(
        in_5.len(),
        1,
        "the session's hash is in database 5: {in_5:?}"
    );
    assert!(in_0.is_empty(), "and not in database 0: {in_0:?}");
    // The server refused the login: a configuration error, with the server's reply as source.
    let err = wrong.expect_err("a wrong password fails the open");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("refused the login"), "{err}");
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.as_deref().is_some_and(|s| s.contains("WRONGPASS")),
        "{source:?}"
    );
}
