//! The store through MariaDB/MySQL's Unix socket (`socket=`). Required under CI=true; skipped
//! loudly elsewhere.

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::Store;
use sessionkit_mysql::MySqlStore;
use sqlx::Connection;

/// The server's socket (`SESSIONKIT_MYSQL_SOCKET`).
fn socket() -> String {
    std::env::var("SESSIONKIT_MYSQL_SOCKET").unwrap_or_else(|_| "/run/mysqld/mysqld.sock".into())
}

#[tokio::test]
async fn the_store_works_through_the_unix_socket() {
    let socket = socket();
    let table = sessionkit_testkit::scratch_table();
    let url = format!("mysql://root@localhost/test?socket={socket}&setup=true&table={table}");
    let store = match MySqlStore::open(&url).await {
        Ok(store) => store,
        Err(err) => {
            return server_unavailable("MariaDB's Unix socket", &socket, err).unwrap_or(());
        }
    };
    let key = fresh_key();
    store
        .create(&key, &record_with(&[("a", b"1")]))
        .await
        .expect("create");
    let loaded = store.load(&key).await.expect("load").expect("live");
    assert_eq!(loaded.data["a"], b"1");
    // The store's connection, idle in its pool, is a socket one: its host is "localhost", not
    // an address and port.
    let mut admin = sqlx::MySqlConnection::connect(&sessionkit_testkit::mysql_url())
        .await
        .expect("a plain client");
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER = 'root' AND HOST NOT LIKE '%:%'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("processlist");
    assert!(hosts.iter().any(|host| host == "localhost"), "{hosts:?}");
}
