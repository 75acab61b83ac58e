//! Every embedded store opens from its URL through the facade's registry.

use sessionkit::{ErrorKind, SessionManager, Store};

#[tokio::test]
async fn every_embedded_url_opens_a_working_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display();
    for (url, name) in [
        ("memory:".to_owned(), "memory"),
        (format!("sqlite://{root}/s.db?table=web_sessions"), "sqlite"),
        (format!("file://{root}/files"), "file"),
        (format!("redb://{root}/s.redb"), "redb"),
    ] {
        let store = sessionkit::open(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(store.name(), name);
        let manager = SessionManager::builder(store).build().expect("manager");
        let session = manager.session(None);
        session.insert("n", &1).await.expect("insert");
        let sessionkit::CookieUpdate::Set { id, .. } =
            session.commit().await.expect("commit").cookie
        else {
            panic!("{url}: no cookie")
        };
        let again = manager.session(Some(&id.expose()));
        assert_eq!(again.get::<i32>("n").await.expect("get"), Some(1), "{url}");
    }
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    for url in [
        "nosuch://x",
        "sqlite://",
        "sqlite://x.db?table=bad;name",
        "sqlite://x.db?bogus=1",
        "file://",
        "redb://",
    ] {
        let err = sessionkit::open(url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} opened"));
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
    }
}

/// The password in a store URL appears nowhere in what a failed open reports: not in the
/// error's message, its `Debug`, or any error in its source chain. Unreachable servers, wrong
/// passwords at the live test servers (TLS), bad options and unknown schemes.
#[cfg(all(feature = "postgres", feature = "mysql", feature = "redis"))]
#[tokio::test]
async fn no_password_appears_in_any_error() {
    const SECRET: &str = "Hunter2Secret";
    let ca = sessionkit_testkit::tls::file("ca.pem");
    for url in [
        format!("postgres://root:{SECRET}@127.0.0.1:1/test?acquire_timeout_ms=500"),
        format!(
            "postgres://sktest_scram:{SECRET}@localhost:5432/test?sslmode=verify-full&sslrootcert={ca}"
        ),
        format!("postgres://u:{SECRET}@127.0.0.1/db?sslmode=bogus"),
        format!("mysql://root:{SECRET}@127.0.0.1:1/test"),
        format!(
            "mysql://sktest_tls:{SECRET}@localhost:3306/test?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"
        ),
        format!("mysql://u:{SECRET}@127.0.0.1/db?bogus=1"),
        format!("redis://:{SECRET}@127.0.0.1:1?timeout_ms=500"),
        format!("rediss://sessionkit:{SECRET}@localhost:6380?tls_ca={ca}"),
        format!("redis://u:{SECRET}@127.0.0.1?bogus=1"),
        format!("redis+cluster://:{SECRET}@127.0.0.1:1?timeout_ms=500"),
        format!(
            "redis+sentinel://:{SECRET}@127.0.0.1:1/m?sentinel_password={SECRET}&timeout_ms=500"
        ),
        format!("redis+sentinel://:{SECRET}@127.0.0.1:26391/nosuchmaster?timeout_ms=500"),
        format!("redis+unix:///nonexistent/redis.sock?pass={SECRET}"),
        format!("nosuch://u:{SECRET}@host"),
        format!("sqlite://u:{SECRET}@/x.db?bogus=1"),
    ] {
        let Err(err) = sessionkit::open(&url).await else {
            panic!("{} opened", sessionkit::backend::redacted_url(&url));
        };
        assert!(
            url.starts_with("nosuch:") || !err.to_string().contains("no store for scheme"),
            "{err}"
        );
        let mut shown = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            shown.extend([cause.to_string(), format!("{cause:?}")]);
            source = cause.source();
        }
        for text in shown {
            assert!(
                !text.contains(SECRET),
                "{}: the password shows in {text}",
                sessionkit::backend::redacted_url(&url)
            );
        }
    }
}
