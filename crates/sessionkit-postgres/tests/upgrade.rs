//! `setup` upgrades a table that an earlier sessionkit created (schema version 1: every value in
//! the values table) to version 2 (small values inline) in place, and its sessions keep every
//! value, and conditional changes see the values where the old layout keeps them. The
//! version-1 tables are written here as that release's DDL created them.

use sessionkit_conformance::{fresh_key, server_unavailable};
use sessionkit_core::Timestamp;
use sessionkit_postgres::PostgresStore;
use sessionkit_testkit::sql::{check_upgraded, drop_stale_postgres_tables, upgrade_values};
use sessionkit_testkit::{postgres_url, scratch_table};

#[tokio::test]
async fn version_1_tables_are_upgraded_in_place() {
    let base = postgres_url();
    if let Err(err) = drop_stale_postgres_tables(&base).await {
        return server_unavailable("PostgreSQL", &base, err).unwrap_or(());
    }
    let t = scratch_table();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let key = fresh_key();
    let expires = Timestamp::now().as_millis() + 3_600_000;
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (key BYTEA NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, \
             expires_at BIGINT NOT NULL, owner TEXT, version BIGINT NOT NULL, moved_to BYTEA); \
             CREATE INDEX {t}_expires ON {t} (expires_at); \
             CREATE TABLE {t}_values (session BYTEA NOT NULL REFERENCES {t} (key) ON DELETE CASCADE, \
             name TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (session, name)); \
             CREATE TABLE IF NOT EXISTS sessionkit_schema (table_name TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL); \
             INSERT INTO sessionkit_schema VALUES ('{t}', 1)"
        ))
        .await
        .expect("version-1 tables");
    let key_bytes = key.as_bytes().as_slice();
    client
        .execute(
            &format!("INSERT INTO {t} VALUES ($1, 0, $2, NULL, 3, NULL)"),
            &[&key_bytes, &expires],
        )
        .await
        .expect("a version-1 session");
    for (name, value) in upgrade_values() {
        client
            .execute(
                &format!("INSERT INTO {t}_values VALUES ($1, $2, $3)"),
                &[&key_bytes, &name, &value],
            )
            .await
            .expect("its values");
    }
    let store = PostgresStore::open(&format!("{base}?table={t}&setup=true"))
        .await
        .expect("open and upgrade");
    check_upgraded(&store, &key).await;
    let version: i32 = client
        .query_one(
            "SELECT version FROM sessionkit_schema WHERE table_name = $1",
            &[&t],
        )
        .await
        .expect("schema version")
        .get(0);
    assert_eq!(version, 2);
}
