//! TLS and login failures against the live PostgreSQL, each a `Config` error that says what
//! is wrong (retrying does not help): a certificate of another CA, of another host under
//! `verify-full`, or expired; TLS required of a server that does not offer it; plain text to a
//! server that takes only TLS; a wrong password; a missing client certificate. And what works:
//! `verify-ca` ignores the host name, and a client certificate opens the mutual-TLS login.
//! Required under CI=true; skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{Error, ErrorKind, Store};
use sessionkit_postgres::PostgresStore;
use sessionkit_testkit::tls::{self, Before, POSTGRES_MTLS_USER, POSTGRES_TLS_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the TLS test server is up (a loud skip, or a failure under CI=true, if not).
async fn server_up() -> bool {
    match PostgresStore::open(&tls::postgres_url()).await {
        Ok(_) => true,
        Err(err) => {
            server_unavailable::<()>("PostgreSQL over TLS", "localhost:5432", err).is_some()
        }
    }
}

fn url(user: (&str, &str), host: &str, options: &str) -> String {
    let (name, password) = user;
    format!("postgres://{name}:{password}@{host}/test?{options}")
}

fn ca(name: &str) -> String {
    format!("sslrootcert={}", tls::file(name))
}

#[track_caller]
fn config_error(opened: Result<PostgresStore, Error>, says: &str) -> String {
    let Err(err) = opened else {
        panic!("the open succeeded");
    };
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    let chain = format!("{err:?}");
    assert!(chain.contains(says), "{says:?} in {chain}");
    chain
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    if !server_up().await {
        return;
    }
    let options = format!("sslmode=verify-full&{}", ca("other-ca.pem"));
    let opened = PostgresStore::open(&url(POSTGRES_TLS_USER, "localhost:5432", &options)).await;
    config_error(opened, "UnknownIssuer");
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    if !server_up().await {
        return;
    }
    // Connect to 127.0.0.1 but verify the certificate for a name it does not carry.
    let host = "wrong-host.invalid:5432";
    let verify = |mode: &str| format!("sslmode={mode}&{}&hostaddr=127.0.0.1", ca("ca.pem"));
    let full = PostgresStore::open(&url(POSTGRES_TLS_USER, host, &verify("verify-full"))).await;
    config_error(full, "NotValidForName");
    let store = PostgresStore::open(&url(POSTGRES_TLS_USER, host, &verify("verify-ca")))
        .await
        .expect("verify-ca: the chain is good, the name is not checked");
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect_err("no table: only the connection matters here");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let server = tls::presenting("expired", Before::PostgresSslRequest).await;
    let options = format!("sslmode=verify-full&{}", ca("ca.pem"));
    let opened = PostgresStore::open(&url(POSTGRES_TLS_USER, &server, &options)).await;
    config_error(opened, "Expired");
}

/// A server that answers PostgreSQL's `SSLRequest` with `N` (it does not do TLS), for
/// `connections` connections: how many bytes each client sent after that (a plain-text
/// startup message, if any).
async fn without_tls(connections: usize) -> (String, tokio::task::JoinHandle<Vec<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let sent = tokio::spawn(async move {
        let mut sent = Vec::new();
        for _ in 0..connections {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 8];
            socket.read_exact(&mut request).await.expect("SSLRequest");
            socket.write_all(b"N").await.expect("answer");
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
            sent.push(rest.len());
        }
        sent
    });
    (address, sent)
}

#[tokio::test]
async fn a_mode_that_requires_tls_never_falls_back_to_plain_text() {
    let modes = ["require", "verify-ca", "verify-full"];
    let (server, sent) = without_tls(modes.len()).await;
    for mode in modes {
        let options = format!("sslmode={mode}&{}&connect_timeout=2", ca("ca.pem"));
        let opened = PostgresStore::open(&url(POSTGRES_TLS_USER, &server, &options)).await;
        config_error(opened, "TLS");
    }
    assert_eq!(
        sent.await.expect("server"),
        [0, 0, 0],
        "no startup over plain text"
    );
}

#[tokio::test]
async fn plain_text_to_a_tls_only_login_is_refused() {
    if !server_up().await {
        return;
    }
    let opened =
        PostgresStore::open(&url(POSTGRES_TLS_USER, "localhost:5432", "sslmode=disable")).await;
    config_error(opened, "refused the login");
}

#[tokio::test]
async fn a_wrong_password_is_a_config_error_that_says_so() {
    if !server_up().await {
        return;
    }
    let options = format!("sslmode=verify-full&{}", ca("ca.pem"));
    let wrong = (POSTGRES_TLS_USER.0, "not-the-password");
    let chain = config_error(
        PostgresStore::open(&url(wrong, "localhost:5432", &options)).await,
        "password authentication failed",
    );
    assert!(!chain.contains("not-the-password"), "{chain}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    if !server_up().await {
        return;
    }
    let options = format!("sslmode=verify-full&{}", ca("ca.pem"));
    let without = PostgresStore::open(&url(POSTGRES_MTLS_USER, "localhost:5432", &options)).await;
    config_error(without, "certificate");
    let with = format!(
        "{options}&sslcert={}&sslkey={}&setup=true&table={}",
        tls::file("client.pem"),
        tls::file("client.key"),
        sessionkit_testkit::scratch_table()
    );
    let store = PostgresStore::open(&url(POSTGRES_MTLS_USER, "localhost:5432", &with))
        .await
        .expect("the client certificate opens the login");
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    assert!(store.load(&key).await.expect("load").is_some());
}

/// A store built from a driver configuration made in code: verified with the test CA it
/// works; with the system's roots (no TLS configuration given) the test CA is unknown, a
/// `Config` error; a driver option among sessionkit's options is refused.
#[tokio::test]
async fn a_config_built_in_code_opens_a_verified_store() {
    use sessionkit_core::backend::tls::{TlsFiles, Verify, client_config};
    use sessionkit_postgres::tokio_postgres::{Config, config::SslMode};
    if !server_up().await {
        return;
    }
    let (user, password) = POSTGRES_TLS_USER;
    let mut config = Config::new();
    config
        .host("localhost")
        .port(5432)
        .user(user)
        .password(password)
        .dbname("test")
        .ssl_mode(SslMode::Require);
    let files = TlsFiles {
        ca: Some(tls::file("ca.pem").into()),
        ..TlsFiles::default()
    };
    let verified = client_config(&files, Verify::Full).expect("TLS configuration");
    let options = format!("table={}&setup=true", sessionkit_testkit::scratch_table());
    let store = PostgresStore::with_config(config.clone(), Some(verified.clone()), &options)
        .await
        .expect("open");
    sessionkit_conformance::create_then_load(std::sync::Arc::new(store)).await;
    config_error(
        PostgresStore::with_config(config.clone(), None, &options).await,
        "UnknownIssuer",
    );
    config_error(
        PostgresStore::with_config(config, Some(verified), "sslmode=disable").await,
        "not sessionkit options",
    );
}
