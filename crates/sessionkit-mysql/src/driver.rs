//! What the store needs from sqlx beyond its queries: which errors are transient, how a
//! driver error maps to a store error, a first connection that reports a bad URL or password
//! at once, and SQL built from a validated table name.

use std::future::Future;
use std::sync::Arc;

use sessionkit_core::backend::retry_transient;
use sessionkit_core::backend::sql::SqlOptions;
use sessionkit_core::{Error, Result};

/// SQL built from a validated table name, shared by reference between connections.
pub(crate) type Sql = Arc<str>;

/// Wraps SQL built from a validated table name for sqlx (which refuses unchecked strings).
pub(crate) fn checked(sql: &Sql) -> sqlx::AssertSqlSafe<Sql> {
    sqlx::AssertSqlSafe(Arc::clone(sql))
}

/// Whether the database aborted the transaction and running it again may succeed.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    let Some(db) = err.as_database_error() else {
        return false;
    };
    // serialization_failure (40001, which InnoDB also reports for a deadlock), or
    // ER_LOCK_WAIT_TIMEOUT (1205)
    db.code().as_deref() == Some("40001")
        || db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1205)
}

/// Maps a driver error to the sessionkit kinds: connection trouble is `Unavailable` (503), a
/// duplicate key is `Conflict`, a missing table is `Config` (run setup), the rest `Backend`.
pub(crate) fn sql_error(context: &str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => Error::unavailable(context.to_owned(), err),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::conflict(format!("{context}: {db}"))
        }
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42S02")) => {
            Error::config_with(
                format!(
                    "{context}: the session schema is missing (run `sessionkit setup` or open with ?setup=true)"
                ),
                err,
            )
        }
        _ => Error::backend(context.to_owned(), err),
    }
}

/// Opens one direct connection and closes it: an unreachable server or a bad password is then
/// reported as the driver says it (connection refused, …), at once, rather than as a pool
/// timeout later.
pub(crate) async fn probe<C: sqlx::Connection>(options: &SqlOptions, server: &str) -> Result<()> {
    let connected = tokio::time::timeout(options.acquire_timeout, C::connect(&options.driver_url))
        .await
        .map_err(|elapsed| Error::unavailable(format!("connecting to {server}"), elapsed))?;
    match connected {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(e @ sqlx::Error::Configuration(_)) => {
            Err(Error::config_with(format!("invalid {server} URL"), e))
        }
        Err(e) => Err(Error::unavailable(format!("connecting to {server}"), e)),
    }
}

/// Runs `attempt` again while the database aborts it (deadlock, lock wait timeout).
pub(crate) async fn retry<T, F, Fut>(context: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
{
    retry_transient(context, is_transient, sql_error, attempt).await
}

/// Real deadlocks on a real server: the retry turns them into success.
#[cfg(test)]
mod deadlock_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use sqlx::{AssertSqlSafe, Executor};

    use super::retry;

    /// Two transactions lock two rows in opposite orders; the database kills one, the retry
    /// runs it again, and both end up committed.
    async fn opposite_order_updates(pool: sqlx::MySqlPool, table: &str) {
        let attempts = Arc::new(AtomicU32::new(0));
        let run = |first: i64, second: i64| {
            let (pool, attempts, table) = (pool.clone(), Arc::clone(&attempts), table.to_owned());
            tokio::spawn(async move {
                retry("deadlock test", || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let mut tx = pool.begin().await?;
                    for (i, id) in [first, second].into_iter().enumerate() {
                        let sql = format!("UPDATE {table} SET n = n + 1 WHERE id = {id}");
                        tx.execute(AssertSqlSafe(sql)).await?;
                        if i == 0 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                    tx.commit().await
                })
                .await
            })
        };
        let (a, b) = (run(1, 2), run(2, 1));
        a.await
            .expect("task")
            .expect("the first transaction committed");
        b.await
            .expect("task")
            .expect("the second transaction committed");
        assert!(
            attempts.load(Ordering::SeqCst) >= 3,
            "a deadlock happened and was retried"
        );
        let counts: Vec<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {table} ORDER BY id")))
                .fetch_all(&pool)
                .await
                .expect("read the counters");
        assert_eq!(counts, [2, 2], "both transactions applied exactly once");
        let _ = pool
            .execute(AssertSqlSafe(format!("DROP TABLE {table}")))
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_deadlocks_are_retried() {
        let url = sessionkit_testkit::mysql_url();
        let pool = match sqlx::MySqlPool::connect(&url).await {
            Ok(pool) => pool,
            Err(err) => {
                return sessionkit_conformance::server_unavailable("MariaDB/MySQL", &url, err)
                    .unwrap_or(());
            }
        };
        let table = sessionkit_testkit::scratch_table();
        pool.execute(AssertSqlSafe(format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB"
        )))
        .await
        .expect("table");
        pool.execute(AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES (1, 0), (2, 0)"
        )))
        .await
        .expect("rows");
        opposite_order_updates(pool, &table).await;
    }
}
