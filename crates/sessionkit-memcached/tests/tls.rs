//! Memcached over TLS (`memcached+tls://`): the conformance suite against the TLS test server,
//! verifying its certificate with the test CA; and the failures, each a `Config` error that
//! says what is wrong: a certificate of another CA, of another host, expired, or a plain-text
//! port. Required under CI=true; skipped loudly elsewhere.

use sessionkit_conformance::fresh_key;
use sessionkit_core::{ErrorKind, Store};
use sessionkit_memcached::MemcachedStore;
use sessionkit_testkit::tls::{self, Before};

sessionkit_conformance::conformance_suite!(sessionkit_testkit::memcached_tls());

/// The error of the first request to `server` over TLS with the test CA (or `ca`).
async fn first_request_error(server: &str, ca: &str) -> sessionkit_core::Error {
    let url = format!("memcached+tls://{server}?tls_ca={}", tls::file(ca));
    let store = MemcachedStore::open(&url).await.expect("a valid URL");
    store
        .load(&fresh_key())
        .await
        .expect_err("the handshake fails")
}

#[track_caller]
fn assert_config(err: &sessionkit_core::Error, says: &str) {
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    let chain = format!("{err} {err:?}");
    assert!(chain.contains(says), "{says:?} in {chain}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    if sessionkit_testkit::memcached_tls().await.is_none() {
        return;
    }
    let err = first_request_error("localhost:11214", "other-ca.pem").await;
    assert_config(&err, "UnknownIssuer");
}

#[tokio::test]
async fn a_certificate_for_another_host_or_expired_is_refused() {
    for (certificate, says) in [("wrong-host", "NotValidForName"), ("expired", "Expired")] {
        let server = tls::presenting(certificate, Before::Nothing).await;
        let err = first_request_error(&server, "ca.pem").await;
        assert_config(&err, says);
    }
}

#[tokio::test]
async fn tls_to_a_plain_text_port_is_refused() {
    if sessionkit_testkit::memcached().await.is_none() {
        return;
    }
    let err = first_request_error("127.0.0.1:11211", "ca.pem").await;
    assert_config(&err, "does not speak TLS");
}

#[tokio::test]
async fn tls_options_need_the_tls_scheme() {
    let err = MemcachedStore::open(&format!(
        "memcached://127.0.0.1:11211?tls_ca={}",
        tls::file("ca.pem")
    ))
    .await
    .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
