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
