//! TLS and login against the TLS-only test Redis (and, for certificates it does not have, a
//! loopback server that presents them): a certificate of another CA, of another host, or
//! expired, and a wrong password are `Config` errors that say what is wrong; TLS to a
//! plain-text port times out with the likely cause; plain text to the TLS port fails at once;
//! a client certificate is sent when the URL names one. Required under CI=true; skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{Error, ErrorKind, Store};
use sessionkit_redis::RedisStore;
use sessionkit_testkit::tls::{self, Before, REDIS_TLS_USER};

async fn server_up() -> bool {
    match RedisStore::open(&tls::redis_url()).await {
        Ok(_) => true,
        Err(err) => server_unavailable::<()>("Redis over TLS", "localhost:6380", err).is_some(),
    }
}

fn url(user: (&str, &str), host: &str, options: &str) -> String {
    let (name, password) = user;
    format!("rediss://{name}:{password}@{host}?timeout_ms=2000&{options}")
}

fn ca(name: &str) -> String {
    format!("tls_ca={}", tls::file(name))
}

#[track_caller]
fn error_of(opened: Result<RedisStore, Error>, kind: ErrorKind, says: &str) -> String {
    let Err(err) = opened else {
        panic!("the open succeeded");
    };
    assert_eq!(err.kind(), kind, "{err:?}");
    let chain = format!("{err} {err:?}");
    assert!(chain.contains(says), "{says:?} in {chain}");
    chain
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    if !server_up().await {
        return;
    }
    let opened =
        RedisStore::open(&url(REDIS_TLS_USER, "localhost:6380", &ca("other-ca.pem"))).await;
    error_of(opened, ErrorKind::Config, "UnknownIssuer");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    let server = tls::presenting("wrong-host", Before::Nothing).await;
    let opened = RedisStore::open(&url(REDIS_TLS_USER, &server, &ca("ca.pem"))).await;
    error_of(opened, ErrorKind::Config, "not valid for name");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let server = tls::presenting("expired", Before::Nothing).await;
    let opened = RedisStore::open(&url(REDIS_TLS_USER, &server, &ca("ca.pem"))).await;
    error_of(opened, ErrorKind::Config, "certificate expired");
}

/// A plain-text Redis never answers the handshake: after the timeout, the error says what the
/// likely cause is. The store never falls back to plain text.
#[tokio::test]
async fn tls_to_a_plain_text_port_times_out_and_says_why() {
    let plain = "127.0.0.1:6379";
    if let Err(err) = tokio::net::TcpStream::connect(plain).await {
        return server_unavailable("Redis", plain, err).unwrap_or(());
    }
    let (user, password) = REDIS_TLS_USER;
    let opened = RedisStore::open(&format!(
        "rediss://{user}:{password}@{plain}?timeout_ms=300&{}",
        ca("ca.pem")
    ))
    .await;
    error_of(opened, ErrorKind::Unavailable, "is that port a TLS port?");
}

#[tokio::test]
async fn plain_text_to_the_tls_port_fails_at_once() {
    if !server_up().await {
        return;
    }
    let (user, password) = REDIS_TLS_USER;
    let started = std::time::Instant::now();
    let opened = RedisStore::open(&format!(
        "redis://{user}:{password}@localhost:6380?timeout_ms=5000"
    ))
    .await;
    let chain = error_of(opened, ErrorKind::Unavailable, "connecting to Redis");
    assert!(!chain.contains("timed out"), "{chain}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the server closes the connection; the store does not wait for its timeout"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_config_error_that_says_so() {
    if !server_up().await {
        return;
    }
    let wrong = (REDIS_TLS_USER.0, "not-the-password");
    let chain = error_of(
        RedisStore::open(&url(wrong, "localhost:6380", &ca("ca.pem"))).await,
        ErrorKind::Config,
        "refused the login",
    );
    assert!(!chain.contains("not-the-password"), "{chain}");
}

#[tokio::test]
async fn a_client_certificate_is_sent_when_the_url_names_one() {
    if !server_up().await {
        return;
    }
    let half = format!("{}&tls_cert={}", ca("ca.pem"), tls::file("client.pem"));
    let opened = RedisStore::open(&url(REDIS_TLS_USER, "localhost:6380", &half)).await;
    error_of(opened, ErrorKind::Config, "both");
    let options = format!(
        "{}&tls_cert={}&tls_key={}",
        ca("ca.pem"),
        tls::file("client.pem"),
        tls::file("client.key")
    );
    let store = RedisStore::open(&url(REDIS_TLS_USER, "localhost:6380", &options))
        .await
        .expect("open with a client certificate");
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    assert!(store.load(&key).await.expect("load").is_some());
    store.delete(&key).await.expect("delete");
}
