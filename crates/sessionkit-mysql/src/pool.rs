//! A small pool of sqlx connections for the MySQL/MariaDB store.
//!
//! Why not sqlx's `Pool`: under 64 concurrent requests on two cores, its acquire and release
//! (a ping before every acquire by default, a task spawned per release, a fair wait queue with
//! timers) cost more CPU per query than the query itself costs the client. This pool is a
//! semaphore and a stack of idle connections under a mutex that is never held across an await
//! (`docs/BENCHMARKS.md`, "Connection pool", has the measurements).
//!
//! What it keeps from a production pool: a bound on connections, an acquire timeout, lazy
//! connects, a liveness check of connections that sat idle (instead of one before every use),
//! and never handing out a connection that failed or whose query was abandoned half-way: those
//! are closed, and the next caller connects afresh, so the pool heals by itself after a server
//! restart or a network cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Runs one expression that uses a lent connection (`c`, a `&mut` connection) and yields a
/// future of `Result<_, sqlx::Error>`; settles the connection with its result:
/// `with_conn!(self.pool, |c| sqlx::query(…).execute(c)).await`.
macro_rules! with_conn {
    ($pool:expr, |$c:ident| $body:expr) => {
        async {
            let mut lent = $pool.acquire().await?;
            let result = {
                let $c = &mut *lent;
                $body.await
            };
            lent.settle(result).await
        }
    };
}
pub(crate) use with_conn;

/// Connections idle longer than this are pinged before they are handed out.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(30);
/// Connections idle longer than this are closed instead of pinged.
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(600);

/// Runs on every new connection before its first use (session settings).
pub(crate) type OnConnect<C> = Arc<
    dyn for<'c> Fn(&'c mut C) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>
        + Send
        + Sync,
>;

struct Idle<C> {
    conn: C,
    since: Instant,
}

struct Shared<C: sqlx::Connection> {
    options: <C as sqlx::Connection>::Options,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle<C>>>,
    acquire_timeout: Duration,
    on_connect: Option<OnConnect<C>>,
}

/// A bounded pool of sqlx connections; cloning shares it.
pub(crate) struct ConnPool<C: sqlx::Connection> {
    shared: Arc<Shared<C>>,
}

impl<C: sqlx::Connection> Clone for ConnPool<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A connection lent by the pool. It goes back when dropped if [`Lent::settle`] found it
/// healthy; otherwise (it failed, or its query was abandoned half-way) it is closed.
pub(crate) struct Lent<C: sqlx::Connection> {
    conn: Option<C>,
    healthy: bool,
    shared: Arc<Shared<C>>,
    _permit: OwnedSemaphorePermit,
}

impl<C: sqlx::Connection> Lent<C> {
    /// Passes on the result of the work done on this connection, and marks the connection fit
    /// to go back to the pool unless the error broke it.
    ///
    /// A transaction dropped without commit (an early return, a `?`) leaves its `ROLLBACK`
    /// queued in the connection until its next use, and its locks held until then: an idle
    /// connection must not sit on them while the caller retries on another connection, so the
    /// queue is flushed here with a ping (sqlx's own pool pings on every release for this).
    pub(crate) async fn settle<T>(
        mut self,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        self.healthy = match &result {
            Ok(_) => true,
            Err(err) => connection_survives(err),
        };
        if self.healthy
            && let Some(conn) = self.conn.as_mut()
            && conn.should_flush()
        {
            self.healthy = conn.ping().await.is_ok();
        }
        result
    }
}

impl<C: sqlx::Connection> std::ops::Deref for Lent<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn
            .as_ref()
            .expect("a lent connection is present until dropped")
    }
}

impl<C: sqlx::Connection> std::ops::DerefMut for Lent<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("a lent connection is present until dropped")
    }
}

impl<C: sqlx::Connection> Drop for Lent<C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.healthy
            && let Ok(mut idle) = self.shared.idle.lock()
        {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        // An unhealthy connection is dropped here, which closes its socket; its permit is
        // released with `_permit`, so the next caller may open a new one.
    }
}

/// Whether the connection is still usable after this error (the database refused a statement,
/// or a row did not decode) or must be closed (the socket or the protocol broke, or the server
/// said it is ending the connection: SQLSTATE class 08 "connection exception" and 57 "operator
/// intervention", as when an administrator terminates the backend or the server shuts down).
fn connection_survives(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => !db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

impl<C: sqlx::Connection> ConnPool<C> {
    /// A pool of at most `max_connections`, connecting lazily with `options`.
    pub(crate) fn new(
        options: <C as sqlx::Connection>::Options,
        max_connections: u32,
        acquire_timeout: Duration,
        on_connect: Option<OnConnect<C>>,
    ) -> Self {
        let max = usize::try_from(max_connections.max(1)).unwrap_or(1);
        Self {
            shared: Arc::new(Shared {
                options,
                permits: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::with_capacity(max)),
                acquire_timeout,
                on_connect,
            }),
        }
    }

    /// Lends a connection, waiting at most the acquire timeout. Hand the result of what you
    /// ran on it to [`Lent::settle`]; a connection dropped without that (a failure, a future
    /// abandoned half-way) is closed rather than returned.
    ///
    /// # Errors
    /// `PoolTimedOut` when no connection could be had within the acquire timeout, or the
    /// connect error.
    pub(crate) async fn acquire(&self) -> Result<Lent<C>, sqlx::Error> {
        tokio::time::timeout(self.shared.acquire_timeout, self.lend())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn lend(&self) -> Result<Lent<C>, sqlx::Error> {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut lent = Lent {
            conn: None,
            healthy: false,
            shared: Arc::clone(&self.shared),
            _permit: permit,
        };
        loop {
            let idle = self.shared.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(Idle { mut conn, since }) = idle else {
                break;
            };
            let idle_for = since.elapsed();
            if idle_for < CHECK_AFTER_IDLE
                || (idle_for < CLOSE_AFTER_IDLE && conn.ping().await.is_ok())
            {
                lent.conn = Some(conn);
                return Ok(lent);
            }
            let _ = conn.close().await;
        }
        let mut conn = C::connect_with(&self.shared.options).await?;
        if let Some(on_connect) = &self.shared.on_connect {
            on_connect(&mut conn).await?;
        }
        lent.conn = Some(conn);
        Ok(lent)
    }

    /// Connections open right now (lent out or idle): for tests.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.shared.idle.lock().map_or(0, |idle| idle.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::mysql::MySqlConnectOptions;

    use super::ConnPool;

    type Pool = ConnPool<sqlx::MySqlConnection>;

    async fn pool(max: u32) -> Option<Pool> {
        let url = sessionkit_testkit::mysql_url();
        let options: MySqlConnectOptions = url.parse().ok()?;
        let pool: Pool = ConnPool::new(options, max, Duration::from_millis(300), None);
        match with_conn!(pool, |c| sqlx::query("SELECT 1").execute(c)).await {
            Ok(_) => Some(pool),
            Err(err) => sessionkit_conformance::server_unavailable("MariaDB/MySQL", &url, err),
        }
    }

    async fn backend_pid(pool: &Pool) -> Result<u64, sqlx::Error> {
        with_conn!(pool, |c| sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(c))
        .await
    }

    #[tokio::test]
    async fn a_full_pool_times_out_and_a_returned_connection_is_reused() {
        let Some(pool) = pool(1).await else { return };
        assert_eq!(pool.idle_count(), 1, "the probe's connection went back");
        let first = backend_pid(&pool).await.expect("pid");
        let held = pool.clone();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn(async move {
            with_conn!(held, |c| async {
                let _ = started_tx.send(());
                sqlx::query("SELECT SLEEP(0.6)").execute(c).await
            })
            .await
        });
        started.await.expect("holder started");
        let err = backend_pid(&pool)
            .await
            .expect_err("no connection within the timeout");
        assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err:?}");
        holder.await.expect("task").expect("the holder's query");
        assert_eq!(
            backend_pid(&pool).await.expect("the connection is back"),
            first,
            "the same connection, reused"
        );
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_statement_error_keeps_the_connection() {
        let Some(pool) = pool(1).await else { return };
        let first = backend_pid(&pool).await.expect("pid");
        let err = with_conn!(pool, |c| sqlx::query("SELECT * FROM no_such_table")
            .execute(c))
        .await
        .expect_err("a database error");
        assert!(matches!(err, sqlx::Error::Database(_)), "{err:?}");
        assert_eq!(backend_pid(&pool).await.expect("pid"), first);
    }

    #[tokio::test]
    async fn an_abandoned_query_closes_its_connection_and_the_pool_heals() {
        let Some(pool) = pool(1).await else { return };
        let first = backend_pid(&pool).await.expect("pid");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            with_conn!(pool, |c| sqlx::query("SELECT SLEEP(1)").execute(c)),
        )
        .await;
        assert!(abandoned.is_err(), "the query was dropped half-way");
        assert_eq!(
            pool.idle_count(),
            0,
            "the half-used connection was not returned"
        );
        let next = backend_pid(&pool).await.expect("a fresh connection");
        assert_ne!(first, next);
    }

    #[tokio::test]
    async fn a_killed_connection_is_replaced() {
        let Some(pool) = pool(1).await else { return };
        let first = backend_pid(&pool).await.expect("pid");
        let Some(killer) = self::pool(1).await else {
            return;
        };
        let kill = format!("KILL {first}");
        with_conn!(killer, |c| sqlx::raw_sql(sqlx::AssertSqlSafe(kill))
            .execute(c))
        .await
        .expect("terminate");
        // The first use finds the socket closed: an error, and the connection is dropped.
        let broken = with_conn!(pool, |c| sqlx::query("SELECT 1").execute(c)).await;
        assert!(broken.is_err(), "the dead connection fails once");
        let next = backend_pid(&pool)
            .await
            .expect("the next use connects afresh");
        assert_ne!(first, next);
    }

    /// A transaction dropped without commit must not keep its locks while its connection sits
    /// idle in the pool (found by the conformance suite on MariaDB: a retry waited on the
    /// locks of its own first attempt until the lock wait timeout).
    #[tokio::test]
    async fn a_dropped_transaction_releases_its_locks_when_its_connection_goes_back() {
        use sqlx::Connection;
        let Some(pool) = pool(2).await else { return };
        let table = sessionkit_testkit::scratch_table();
        let ddl = format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, n INT) ENGINE=InnoDB; INSERT INTO {table} VALUES (1, 0)"
        );
        with_conn!(pool, |c| sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(c))
            .await
            .expect("table");
        let update = format!("UPDATE {table} SET n = n + 1 WHERE id = 1");
        let abandoned: Result<(), sqlx::Error> = with_conn!(pool, |c| async {
            let mut tx = c.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .execute(&mut *tx)
                .await?;
            Ok(()) // an early return: no commit, no rollback
        })
        .await;
        abandoned.expect("the first transaction");
        // Take both connections, so the second one must be the other (fresh) connection.
        let other = pool.acquire().await.expect("one");
        let retried = with_conn!(pool, |c| async {
            sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
                .execute(&mut *c)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .execute(&mut *c)
                .await
        })
        .await;
        drop(other);
        let _ = with_conn!(pool, |c| sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE {table}"
        )))
        .execute(c))
        .await;
        retried.expect("the row is not locked by the abandoned transaction");
    }
}
