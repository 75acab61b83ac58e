//! `setup` upgrades a table that an earlier sessionkit created (schema version 1: every value in
//! the values table) to version 2 (small values inline) in place, and its sessions keep every
//! value, and conditional changes see the values where the old layout keeps them. The
//! version-1 tables are written here as that release's DDL created them.

use sessionkit_conformance::{fresh_key, server_unavailable};
use sessionkit_core::{ApplyOutcome, Change, Store, Timestamp};
use sessionkit_sql::testing::{drop_stale_tables, mysql_url, postgres_url, scratch_table};
use sessionkit_sql::{MySqlStore, PostgresStore};
use sqlx::{AssertSqlSafe, Connection, Executor};

/// What an upgraded session must still hold: one small value and one large.
fn values() -> [(&'static str, Vec<u8>); 2] {
    [("small", b"\x01\x02".to_vec()), ("large", vec![9u8; 4096])]
}

async fn check_upgraded(store: &dyn Store, key: &sessionkit_core::SessionKey) {
    let loaded = store.load(key).await.expect("load").expect("still live");
    for (name, value) in values() {
        assert_eq!(loaded.data.get(name), Some(&value), "{name} survived");
    }
    assert_eq!(loaded.version, 3);
    // Conditions are checked against the values where the old layout left them: a small
    // value in the values table is present, with its bytes.
    for (what, seen) in [
        ("a stale small value", Some(&b"\x01"[..])),
        ("a small value expected absent", None),
    ] {
        let mut stale = Change::default();
        stale.expect("small", seen);
        stale.set("small".into(), b"stale".to_vec());
        stale.set("added".into(), b"stale".to_vec());
        assert_eq!(
            store.apply(key, &stale).await.expect("apply"),
            ApplyOutcome::Conflict,
            "{what}"
        );
    }
    let mut stale = Change::default();
    stale.expect("large", Some(&[9u8; 4095]));
    stale.remove("large");
    assert_eq!(
        store.apply(key, &stale).await.expect("apply"),
        ApplyOutcome::Conflict,
        "a stale large value"
    );
    assert_eq!(
        store.load(key).await.expect("load").expect("live"),
        loaded,
        "a conflict writes nothing"
    );
    let mut change = Change::default();
    change.expect("small", Some(b"\x01\x02"));
    change.expect("added", None);
    change.set("added".into(), b"new".to_vec());
    change.set("small".into(), b"changed".to_vec());
    assert!(matches!(
        store.apply(key, &change).await.expect("apply"),
        ApplyOutcome::Applied { version: 4 }
    ));
    let after = store.load(key).await.expect("load").expect("live");
    assert_eq!(after.data.len(), 3);
    assert_eq!(after.data["small"], b"changed");
    assert_eq!(after.data["large"], vec![9u8; 4096]);
    assert_eq!(after.data["added"], b"new");
    let partial = store
        .load_keys(key, &["small", "large"])
        .await
        .expect("load_keys")
        .expect("live");
    assert_eq!(partial.data.len(), 2);
}

#[tokio::test]
async fn postgres_version_1_tables_are_upgraded_in_place() {
    let base = postgres_url();
    if let Err(err) = drop_stale_tables(&base).await {
        return server_unavailable("PostgreSQL", &base, err).unwrap_or(());
    }
    let t = scratch_table();
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
    let key = fresh_key();
    let expires = Timestamp::now().as_millis() + 3_600_000;
    conn.execute(AssertSqlSafe(format!(
        "CREATE TABLE {t} (key BYTEA NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, \
         expires_at BIGINT NOT NULL, owner TEXT, version BIGINT NOT NULL, moved_to BYTEA); \
         CREATE INDEX {t}_expires ON {t} (expires_at); \
         CREATE TABLE {t}_values (session BYTEA NOT NULL REFERENCES {t} (key) ON DELETE CASCADE, \
         name TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (session, name)); \
         CREATE TABLE IF NOT EXISTS sessionkit_schema (table_name TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL); \
         INSERT INTO sessionkit_schema VALUES ('{t}', 1)"
    )))
    .await
    .expect("version-1 tables");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} VALUES ($1, 0, $2, NULL, 3, NULL)"
    )))
    .bind(key.as_bytes().as_slice())
    .bind(expires)
    .execute(&mut conn)
    .await
    .expect("a version-1 session");
    for (name, value) in values() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {t}_values VALUES ($1, $2, $3)"
        )))
        .bind(key.as_bytes().as_slice())
        .bind(name)
        .bind(value)
        .execute(&mut conn)
        .await
        .expect("its values");
    }
    let store = PostgresStore::open(&format!("{base}?table={t}&setup=true"))
        .await
        .expect("open and upgrade");
    check_upgraded(&store, &key).await;
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = $1")
            .bind(&t)
            .fetch_one(&mut conn)
            .await
            .expect("schema version");
    assert_eq!(version, 2);
}

#[tokio::test]
async fn mysql_version_1_tables_are_upgraded_in_place() {
    let base = mysql_url();
    if let Err(err) = drop_stale_tables(&base).await {
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
    for (name, value) in values() {
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
