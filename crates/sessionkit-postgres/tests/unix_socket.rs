//! The store through PostgreSQL's Unix socket (`host=` a directory, as libpq). Required under
//! CI=true; skipped loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::Store;
use sessionkit_postgres::PostgresStore;

/// The directory of the server's socket (`SESSIONKIT_POSTGRES_SOCKET_DIR`).
fn socket_dir() -> String {
    std::env::var("SESSIONKIT_POSTGRES_SOCKET_DIR").unwrap_or_else(|_| "/var/run/postgresql".into())
}

#[tokio::test]
async fn the_store_works_through_the_unix_socket() {
    let dir = socket_dir();
    let table = sessionkit_testkit::scratch_table();
    let url = format!(
        "postgres:///test?host={dir}&user=root&setup=true&table={table}&application_name={table}"
    );
    let store = match PostgresStore::open(&url).await {
        Ok(store) => store,
        Err(err) => return server_unavailable("PostgreSQL's Unix socket", &dir, err).unwrap_or(()),
    };
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data["a"], b"1");
    let (admin, connection) =
        tokio_postgres::connect(&sessionkit_testkit::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("a plain client");
    tokio::spawn(connection);
    let addresses = admin
        .query(
            "SELECT client_addr::text FROM pg_stat_activity WHERE application_name = $1",
            &[&table],
        )
        .await
        .expect("pg_stat_activity");
    assert!(!addresses.is_empty());
    for row in addresses {
        let address: Option<String> = row.get(0);
        assert_eq!(
            address, None,
            "a Unix-socket connection has no client address"
        );
    }
}
