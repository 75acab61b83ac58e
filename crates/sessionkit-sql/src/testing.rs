//! Support for tests against real servers (this workspace's and yours): where the servers are,
//! scratch tables unique to the running process, and dropping the ones dead processes left.

use std::sync::atomic::{AtomicU32, Ordering};

use sessionkit_core::Result;

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

/// Drops scratch tables whose process has exited (tests cannot drop their own: there is no
/// async drop). Call once per test process before creating tables.
///
/// # Errors
/// The driver's errors (`Unavailable` when the server is down).
pub async fn drop_stale_tables(url: &str) -> Result<()> {
    if url.starts_with("postgres") {
        #[cfg(feature = "postgres")]
        {
            use crate::common::DriverError as _;
            let e =
                |e| crate::pg_conn::PgFailure::Db(e).into_store_error("dropping stale test tables");
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
        }
    } else {
        #[cfg(feature = "mysql")]
        {
            use sqlx::{AssertSqlSafe, Connection, Executor};

            use crate::common::sql_error;
            let e = |e| sql_error("dropping stale test tables", e);
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
        }
    }
    Ok(())
}
