//! PostgreSQL connections on tokio-postgres: a few pipelined connections shared by every
//! single-statement operation, and exclusive ones for the rare transactions.
//!
//! Why not a pool of sqlx connections (as the MySQL store has): on PostgreSQL the protocol
//! lets many queries share one connection in flight, and tokio-postgres writes the queries of
//! concurrent requests to the socket together. Under 64 concurrent requests on two cores that
//! is fewer system calls and wake-ups per query, which is where the time goes once the pool
//! itself is cheap (`docs/BENCHMARKS.md`, "Connection pool", has the comparison). Every
//! statement is prepared once per connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{MappedMutexGuard, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// SQL built from a validated table name, shared by reference between connections.
pub(crate) type Sql = Arc<str>;

/// Why a PostgreSQL operation failed.
#[derive(Debug)]
pub(crate) enum PgFailure {
    /// The driver or the server said so.
    Db(tokio_postgres::Error),
    /// No connection within the acquire timeout.
    TimedOut,
}

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Db(err) => err.fmt(f),
            Self::TimedOut => f.write_str("no PostgreSQL connection within the acquire timeout"),
        }
    }
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Db(err)
    }
}

impl PgFailure {
    /// The server's SQLSTATE, if the server reported the failure.
    pub(crate) fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Db(err) => err.code(),
            Self::TimedOut => None,
        }
    }
}

/// Parameters of one statement.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// One connection and the statements prepared on it.
pub(crate) struct PgClient {
    client: Client,
    prepared: Mutex<HashMap<Sql, Statement>>,
}

impl PgClient {
    /// The statement prepared for `sql` on this connection (prepared now if it is not yet), for
    /// a transaction on this connection to run.
    pub(crate) async fn statement(&self, sql: &Sql) -> Result<Statement, PgFailure> {
        let cached = self
            .prepared
            .lock()
            .ok()
            .and_then(|prepared| prepared.get(sql).cloned());
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.insert(Arc::clone(sql), statement.clone());
        }
        Ok(statement)
    }

    /// Runs a prepared statement; its rows.
    pub(crate) async fn query(
        &self,
        sql: &Sql,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, PgFailure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    /// Runs a prepared statement; its one row or none.
    pub(crate) async fn query_opt(
        &self,
        sql: &Sql,
        params: &Params<'_>,
    ) -> Result<Option<Row>, PgFailure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    /// Runs a prepared statement; the number of rows it changed.
    pub(crate) async fn execute(&self, sql: &Sql, params: &Params<'_>) -> Result<u64, PgFailure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }

    /// Runs a one-off statement without preparing it for reuse; its rows.
    pub(crate) async fn query_unprepared(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, PgFailure> {
        Ok(self.client.query(sql, params).await?)
    }

    /// The connection itself, for transactions and one-off statements.
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The store's connections; cloning shares them.
#[derive(Clone)]
pub(crate) struct PgConnections {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    tls: MakeRustlsConnect,
    timeout: Duration,
    shared: Vec<Mutex<Option<Arc<PgClient>>>>,
    /// Held while a shared slot connects, so concurrent requests wait for one connect.
    connecting: Vec<tokio::sync::Mutex<()>>,
    next_shared: AtomicUsize,
    exclusive: Vec<tokio::sync::Mutex<Option<PgClient>>>,
    /// One permit per exclusive slot: a fair queue for them.
    lendable: tokio::sync::Semaphore,
    next_exclusive: AtomicUsize,
}

/// How many of `max_connections` are shared (pipelined), unless the URL says: half the CPUs,
/// at least one, and never more than half the connections. Measured on 2 cores (wrk, the app
/// and PostgreSQL sharing them): one shared connection served 50k reads/s with a p99 of
/// 3.7 ms, two 45k/s and 6.6 ms, four 41–44k/s and 10.6 ms, eight 32k/s and 14.7 ms: each
/// server backend is one process, and every extra one competing for the cores stalls the
/// queries pipelined behind it when it is descheduled.
fn shared_count(max_connections: u32, asked: Option<u32>) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let most = usize::try_from(max_connections / 2).unwrap_or(1).max(1);
    asked
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(cpus / 2)
        .clamp(1, most)
}

impl PgConnections {
    pub(crate) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        max_connections: u32,
        shared_connections: Option<u32>,
        timeout: Duration,
    ) -> Self {
        let shared = shared_count(max_connections, shared_connections);
        let exclusive = usize::try_from(max_connections)
            .unwrap_or(1)
            .saturating_sub(shared)
            .max(1);
        Self {
            inner: Arc::new(Inner {
                config,
                tls,
                timeout,
                shared: (0..shared).map(|_| Mutex::new(None)).collect(),
                connecting: (0..shared).map(|_| tokio::sync::Mutex::new(())).collect(),
                next_shared: AtomicUsize::new(0),
                exclusive: (0..exclusive)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                lendable: tokio::sync::Semaphore::new(exclusive),
                next_exclusive: AtomicUsize::new(0),
            }),
        }
    }

    async fn connect(&self) -> Result<PgClient, PgFailure> {
        let (client, connection) = tokio::time::timeout(
            self.inner.timeout,
            self.inner.config.connect(self.inner.tls.clone()),
        )
        .await
        .map_err(|_| PgFailure::TimedOut)??;
        // The connection task ends when the socket closes; the client then reports
        // `is_closed`, and the slot connects afresh on its next use.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "a PostgreSQL connection ended");
            }
        });
        Ok(PgClient {
            client,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    fn live_shared(&self, slot: usize) -> Option<Arc<PgClient>> {
        self.inner.shared[slot]
            .lock()
            .ok()
            .and_then(|client| client.clone())
            .filter(|client| !client.client.is_closed())
    }

    /// A shared connection for one statement (many requests use it at once).
    ///
    /// # Errors
    /// The connect error, or `TimedOut`.
    pub(crate) async fn shared(&self) -> Result<Arc<PgClient>, PgFailure> {
        let slot = self.inner.next_shared.fetch_add(1, Ordering::Relaxed) % self.inner.shared.len();
        if let Some(client) = self.live_shared(slot) {
            return Ok(client);
        }
        let _connecting =
            tokio::time::timeout(self.inner.timeout, self.inner.connecting[slot].lock())
                .await
                .map_err(|_| PgFailure::TimedOut)?;
        if let Some(client) = self.live_shared(slot) {
            return Ok(client); // another request connected it meanwhile
        }
        let client = Arc::new(self.connect().await?);
        if let Ok(mut shared) = self.inner.shared[slot].lock() {
            *shared = Some(Arc::clone(&client));
        }
        Ok(client)
    }

    /// A connection of its own, for a save or a transaction. Waiters are served in arrival
    /// order. A transaction dropped half-way (an error, a cancelled request) is rolled back by
    /// tokio-postgres before the connection's next use.
    ///
    /// # Errors
    /// The connect error, or `TimedOut` when every exclusive connection stayed busy.
    pub(crate) async fn exclusive(&self) -> Result<Exclusive<'_>, PgFailure> {
        let permit = tokio::time::timeout(self.inner.timeout, self.inner.lendable.acquire())
            .await
            .map_err(|_| PgFailure::TimedOut)?
            .map_err(|_| PgFailure::TimedOut)?;
        // A permit means a slot is free; the round-robin start spreads use over the slots.
        let slots = &self.inner.exclusive;
        let start = self.inner.next_exclusive.fetch_add(1, Ordering::Relaxed);
        let free = (0..slots.len()).find_map(|i| slots[(start + i) % slots.len()].try_lock().ok());
        let mut guard = match free {
            Some(guard) => guard,
            // Each permit holder takes at most one slot and frees it before its permit, so a
            // slot should be free here; if a release is still under way, wait for it rather
            // than failing a request that holds a permit.
            None => tokio::time::timeout(self.inner.timeout, slots[start % slots.len()].lock())
                .await
                .map_err(|_| PgFailure::TimedOut)?,
        };
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(self.connect().await?);
        }
        let client = MutexGuard::try_map(guard, Option::as_mut).map_err(|_| PgFailure::TimedOut)?;
        Ok(Exclusive {
            client,
            _permit: permit,
        })
    }
}

/// A connection lent to one caller until dropped.
pub(crate) struct Exclusive<'a> {
    client: MappedMutexGuard<'a, PgClient>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = PgClient;
    fn deref(&self) -> &PgClient {
        &self.client
    }
}

impl std::ops::DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut PgClient {
        &mut self.client
    }
}
