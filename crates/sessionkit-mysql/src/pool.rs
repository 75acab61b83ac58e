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
}
