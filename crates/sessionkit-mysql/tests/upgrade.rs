//! `setup` upgrades a table that an earlier sessionkit created (schema version 1: every value in
//! the values table) to version 2 (small values inline) in place, and its sessions keep every
//! value, and conditional changes see the values where the old layout keeps them. The
//! version-1 tables are written here as that release's DDL created them.

use sessionkit_conformance::{fresh_key, server_unavailable};
use sessionkit_core::{Store, Timestamp};
use sessionkit_mysql::MySqlStore;
use sessionkit_testkit::sql::{check_upgraded, drop_stale_mysql_tables, upgrade_values};
use sessionkit_testkit::{mysql_url, scratch_table};
use sqlx::{AssertSqlSafe, Connection, Executor};

#[tokio::test]
async fn version_1_tables_are_upgraded_in_place() {
    let base = mysql_url();
    if let Err(err) = drop_stale_mysql_tables(&base).await {
        return server_unavailable("MariaDB/MySQL", &base, err).unwrap_or(());
    }
    let t = scratch_table();
    let mut conn = sqlx::MySqlConnection::connect(&base)
        .await
        .expect("connect");
    let key = fresh_key();
    let expires = Timestamp::now().as_millis() + 3_600_000;
    for ddl in [
        format!(
            "CREATE TABLE {t} (`key` BINARY(32) NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, \
             expires_at BIGINT NOT NULL, owner VARCHAR(255) NULL, version BIGINT NOT NULL, \
             moved_to BINARY(32) NULL, INDEX {t}_expires (expires_at), INDEX {t}_owner (owner)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        format!(
            "CREATE TABLE {t}_values (session BINARY(32) NOT NULL, name VARCHAR(255) NOT NULL, \
             value LONGBLOB NOT NULL, PRIMARY KEY (session, name), \
             FOREIGN KEY (session) REFERENCES {t} (`key`) ON DELETE CASCADE) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        "CREATE TABLE IF NOT EXISTS sessionkit_schema (table_name VARCHAR(64) NOT NULL PRIMARY KEY, \
         version INT NOT NULL) ENGINE=InnoDB"
            .to_owned(),
        format!("INSERT INTO sessionkit_schema VALUES ('{t}', 1)"),
    ] {
        conn.execute(AssertSqlSafe(ddl))
            .await
            .expect("version-1 tables");
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} VALUES (?, 0, ?, NULL, 3, NULL)"
    )))
    .bind(key.as_bytes().as_slice())
    .bind(expires)
    .execute(&mut conn)
    .await
    .expect("a version-1 session");
    for (name, value) in upgrade_values() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {t}_values VALUES (?, ?, ?)"
        )))
        .bind(key.as_bytes().as_slice())
        .bind(name)
        .bind(value)
        .execute(&mut conn)
        .await
        .expect("its values");
    }
    let store = MySqlStore::open(&format!("{base}?table={t}&setup=true"))
        .await
        .expect("open and upgrade");
    check_upgraded(&store, &key).await;
    store.setup().await.expect("setup again is a no-op");
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = ?")
            .bind(&t)
            .fetch_one(&mut conn)
            .await
            .expect("schema version");
    assert_eq!(version, 2);
}
