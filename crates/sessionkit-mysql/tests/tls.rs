//! TLS and login failures against the live MariaDB/MySQL (and, for certificates the real
//! server does not have, a loopback server that greets as MySQL and presents them), each a
//! `Config` error that says what is wrong: a certificate of another CA, of another host under
//! `VERIFY_IDENTITY`, or expired; TLS required of a server that does not offer it; plain text
//! for a user that must use TLS; a wrong password; a missing client certificate. And what
//! works: `VERIFY_CA` ignores the host name, and a client certificate opens the X509 login.
//! Required under CI=true; skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{Error, ErrorKind, Store};
use sessionkit_mysql::MySqlStore;
use sessionkit_testkit::tls::{self, Before, MYSQL_TLS_USER, MYSQL_X509_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server_up() -> bool {
    match MySqlStore::open(&tls::mysql_url()).await {
        Ok(_) => true,
        Err(err) => server_unavailable::<()>("MariaDB over TLS", "localhost:3306", err).is_some(),
    }
}

fn url(user: (&str, &str), host: &str, options: &str) -> String {
    let (name, password) = user;
    format!("mysql://{name}:{password}@{host}/test?{options}")
}

fn ca(name: &str) -> String {
    format!("ssl-ca={}", tls::file(name))
}

#[track_caller]
fn config_error(opened: Result<MySqlStore, Error>, says: &str) -> String {
    let Err(err) = opened else {
        panic!("the open succeeded");
    };
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    let chain = format!("{err:?}");
    assert!(chain.contains(says), "{says:?} in {chain}");
    chain
}

#[tokio::test]
async fn an_unknown_url_option_is_refused_without_its_value() {
    // No server needed: the URL is checked before connecting.
    let opened = MySqlStore::open(
        "mysql://root@127.0.0.1:1/test?table=s&ssl_mode=VERIFY_IDENTITY&bogus=secret-value",
    )
    .await;
    let chain = config_error(opened, "unknown MySQL URL option(s)");
    assert!(
        chain.contains("ssl_mode") && chain.contains("bogus"),
        "{chain}"
    );
    assert!(!chain.contains("secret-value"), "{chain}");
    let known = MySqlStore::open("mysql://root@127.0.0.1:1/test?ssl-mode=DISABLED&charset=utf8mb4")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(known.kind(), ErrorKind::Unavailable, "{known:?}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    if !server_up().await {
        return;
    }
    let options = format!("ssl-mode=VERIFY_IDENTITY&{}", ca("other-ca.pem"));
    let opened = MySqlStore::open(&url(MYSQL_TLS_USER, "localhost:3306", &options)).await;
    config_error(opened, "UnknownIssuer");
}

#[tokio::test]
async fn verify_identity_checks_the_host_name_and_verify_ca_does_not() {
    let server = tls::presenting("wrong-host", Before::MysqlGreeting).await;
    let verify = |mode: &str| format!("ssl-mode={mode}&{}&acquire_timeout_ms=2000", ca("ca.pem"));
    let full = MySqlStore::open(&url(MYSQL_TLS_USER, &server, &verify("VERIFY_IDENTITY"))).await;
    config_error(full, "NotValidForName");
    // The certificate is accepted; the loopback server then closes, as a server that went away.
    let Err(err) = MySqlStore::open(&url(MYSQL_TLS_USER, &server, &verify("VERIFY_CA"))).await
    else {
        panic!("the loopback server does not log anyone in");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let server = tls::presenting("expired", Before::MysqlGreeting).await;
    let options = format!("ssl-mode=VERIFY_IDENTITY&{}", ca("ca.pem"));
    let opened = MySqlStore::open(&url(MYSQL_TLS_USER, &server, &options)).await;
    config_error(opened, "Expired");
}

/// A server whose greeting does not offer TLS, for `connections` connections: how many bytes
/// each client sent after the greeting (a login over plain text, if any).
async fn without_tls(connections: usize) -> (String, tokio::task::JoinHandle<Vec<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let sent = tokio::spawn(async move {
        let mut sent = Vec::new();
        for _ in 0..connections {
            let (mut socket, _) = listener.accept().await.expect("accept");
            socket
                .write_all(&tls::mysql_greeting(false))
                .await
                .expect("greeting");
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
    let modes = ["REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"];
    let (server, sent) = without_tls(modes.len()).await;
    for mode in modes {
        let options = format!("ssl-mode={mode}&{}&acquire_timeout_ms=2000", ca("ca.pem"));
        let opened = MySqlStore::open(&url(MYSQL_TLS_USER, &server, &options)).await;
        config_error(opened, "TLS");
    }
    assert_eq!(
        sent.await.expect("server"),
        [0, 0, 0],
        "no login over plain text"
    );
}

#[tokio::test]
async fn plain_text_for_a_user_that_must_use_tls_is_refused() {
    if !server_up().await {
        return;
    }
    let opened =
        MySqlStore::open(&url(MYSQL_TLS_USER, "127.0.0.1:3306", "ssl-mode=DISABLED")).await;
    config_error(opened, "refused the login");
}

#[tokio::test]
async fn a_wrong_password_is_a_config_error_that_says_so() {
    if !server_up().await {
        return;
    }
    let options = format!("ssl-mode=VERIFY_IDENTITY&{}", ca("ca.pem"));
    let wrong = (MYSQL_TLS_USER.0, "not-the-password");
    let chain = config_error(
        MySqlStore::open(&url(wrong, "localhost:3306", &options)).await,
        "Access denied",
    );
    assert!(!chain.contains("not-the-password"), "{chain}");
}

#[tokio::test]
async fn an_x509_user_needs_the_client_certificate() {
    if !server_up().await {
        return;
    }
    let options = format!("ssl-mode=VERIFY_IDENTITY&{}", ca("ca.pem"));
    let without = MySqlStore::open(&url(MYSQL_X509_USER, "localhost:3306", &options)).await;
    config_error(without, "refused the login");
    let with = format!(
        "{options}&ssl-cert={}&ssl-key={}&setup=true&table={}",
        tls::file("client.pem"),
        tls::file("client.key"),
        sessionkit_testkit::scratch_table()
    );
    let store = MySqlStore::open(&url(MYSQL_X509_USER, "localhost:3306", &with))
        .await
        .expect("the client certificate opens the login");
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    assert!(store.load(&key).await.expect("load").is_some());
}

/// A store built from sqlx connect options made in code (TLS verified with the test CA)
/// works; a driver option among sessionkit's options is refused.
#[tokio::test]
async fn connect_options_built_in_code_open_a_verified_store() {
    use sessionkit_mysql::sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
    if !server_up().await {
        return;
    }
    let (user, password) = MYSQL_TLS_USER;
    let connect = MySqlConnectOptions::new()
        .host("localhost")
        .port(3306)
        .username(user)
        .password(password)
        .database("test")
        .ssl_mode(MySqlSslMode::VerifyIdentity)
        .ssl_ca(tls::file("ca.pem"));
    let options = format!("table={}&setup=true", sessionkit_testkit::scratch_table());
    let store = MySqlStore::with_options(connect.clone(), &options)
        .await
        .expect("open");
    sessionkit_conformance::create_then_load(std::sync::Arc::new(store)).await;
    config_error(
        MySqlStore::with_options(connect, "ssl-mode=DISABLED").await,
        "not sessionkit options",
    );
}
