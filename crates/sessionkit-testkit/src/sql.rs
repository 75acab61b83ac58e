//! Where the SQL test servers are, scratch tables unique to the running process, dropping the
//! ones dead processes left, and what the schema upgrade tests check on either server.

use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit_core::{ApplyOutcome, Change, Error, Result, SessionKey, Store};

/// The environment variable naming the PostgreSQL test database.
pub const POSTGRES_ENV: &str = "SESSIONKIT_POSTGRES_URL";
/// The environment variable naming the MySQL/MariaDB test database.
pub const MYSQL_ENV: &str = "SESSIONKIT_MYSQL_URL";

/// The PostgreSQL test database (default `postgres://root@127.0.0.1:5432/test`).
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// The MySQL/MariaDB test database (default `mysql://root@127.0.0.1:3306/test`).
pub fn mysql_url() -> String {
    std::env::var(MYSQL_ENV).unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A table name no other test or process uses: `sk_<pid>_<n>`.
pub fn scratch_table() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sk_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn owner_is_gone(table: &str) -> bool {
    let Some(pid) = table
        .strip_prefix("sk_")
        .and_then(|rest| rest.split('_').next())
    else {
        return false;
    };
    pid.parse::<u32>().is_ok_and(|pid| {
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// Drops the PostgreSQL scratch tables whose process has exited (tests cannot drop their
/// own: there is no async drop). Call once per test process before creating tables.
///
/// # Errors
/// `Unavailable` when the server is down.
pub async fn drop_stale_postgres_tables(url: &str) -> Result<()> {
    let e = |e| Error::unavailable("dropping stale test tables", e);
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(e)?;
    let connection = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'sk\\_%\\_%'",
            &[],
        )
        .await
        .map_err(e)?;
    for row in &rows {
        let table: String = row.try_get(0).map_err(e)?;
        if !table.ends_with("_values") && owner_is_gone(&table) {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table}_values, {table} CASCADE"
                ))
                .await
                .map_err(e)?;
        }
    }
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// Drops the MySQL/MariaDB scratch tables whose process has exited.
///
/// # Errors
/// `Unavailable` when the server is down.
pub async fn drop_stale_mysql_tables(url: &str) -> Result<()> {
    use sqlx::{AssertSqlSafe, Connection, Executor};

    let e = |e| Error::unavailable("dropping stale test tables", e);
    let url = url.replacen("mariadb:", "mysql:", 1);
    let mut conn = sqlx::MySqlConnection::connect(&url).await.map_err(e)?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'sk\\_%\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(e)?;
    for table in tables
        .iter()
        .filter(|t| !t.ends_with("_values") && owner_is_gone(t))
    {
        conn.execute(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table}_values, {table}"
        )))
        .await
        .map_err(e)?;
    }
    Ok(())
}

/// What a session in a version-1 table holds before the upgrade test upgrades it: one small
/// value and one large.
pub fn upgrade_values() -> [(&'static str, Vec<u8>); 2] {
    [("small", b"\x01\x02".to_vec()), ("large", vec![9u8; 4096])]
}

/// Checks a session that a version-1 table held ([`upgrade_values`], version 3) after `setup`
/// upgraded the table: every value survived, and conditional changes see the values where
/// the old layout keeps them.
///
/// # Panics
/// When a check fails.
pub async fn check_upgraded(store: &dyn Store, key: &SessionKey) {
    let loaded = store.load(key).await.expect("load").expect("still live");
    for (name, value) in upgrade_values() {
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
