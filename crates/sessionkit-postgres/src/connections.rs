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
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

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
        let (client, connection) =
            tokio::time::timeout(self.inner.timeout, self.inner.config.connect(NoTls))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PgConnections, PgFailure};

    async fn connections(max: u32) -> Option<PgConnections> {
        let url = sessionkit_testkit::postgres_url();
        let config: tokio_postgres::Config = url.parse().ok()?;
        let conns = PgConnections::new(config, max, Some(4), Duration::from_millis(300));
        match conns.shared().await {
            Ok(_) => Some(conns),
            Err(err) => sessionkit_conformance::server_unavailable("PostgreSQL", &url, err),
        }
    }

    /// A scratch table of (id, n) counters holding `rows` (an SQL `VALUES` list); its name.
    async fn counters(client: &super::PgClient, rows: &str) -> String {
        let table = sessionkit_testkit::scratch_table();
        client
            .query_unprepared(
                &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)"),
                &[],
            )
            .await
            .expect("table");
        client
            .query_unprepared(&format!("INSERT INTO {table} VALUES {rows}"), &[])
            .await
            .expect("rows");
        table
    }

    async fn pid_of(client: &super::PgClient) -> i32 {
        client
            .query_unprepared("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")[0]
            .get(0)
    }

    #[tokio::test]
    async fn concurrent_statements_share_a_few_connections() {
        let Some(conns) = connections(16).await else {
            return;
        };
        let mut pids = std::collections::BTreeSet::new();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let conns = conns.clone();
                tokio::spawn(async move {
                    let client = conns.shared().await.expect("shared");
                    pid_of(&client).await
                })
            })
            .collect();
        for task in tasks {
            pids.insert(task.await.expect("task"));
        }
        assert_eq!(
            pids.len(),
            4,
            "64 concurrent statements on the 4 shared connections"
        );
    }

    #[tokio::test]
    async fn a_killed_shared_connection_fails_once_then_is_replaced() {
        let Some(conns) = connections(4).await else {
            return;
        };
        let client = conns.shared().await.expect("shared");
        let pid = pid_of(&client).await;
        drop(client);
        let Some(killer) = connections(4).await else {
            return;
        };
        killer
            .shared()
            .await
            .expect("killer")
            .query_unprepared("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        // Give the connection task a moment to see the socket close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = conns.shared().await.expect("a fresh connection");
        assert_ne!(pid_of(&next).await, pid);
    }

    #[tokio::test]
    async fn busy_exclusive_connections_time_out() {
        let Some(conns) = connections(2).await else {
            return;
        };
        let held = conns
            .exclusive()
            .await
            .expect("the one exclusive connection");
        let waited = conns.exclusive().await;
        assert!(matches!(waited, Err(PgFailure::TimedOut)));
        drop(held);
        let _free = conns.exclusive().await.expect("free again");
    }

    /// Saves wait for a lent connection in a queue: under load the first to ask is the first
    /// served (what keeps the p99 of `/incr` near its median).
    #[tokio::test]
    async fn lent_connections_go_to_waiters_in_arrival_order() {
        let Some(conns) = connections(2).await else {
            return;
        };
        let held = conns
            .exclusive()
            .await
            .expect("the one exclusive connection");
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..4 {
            let (conns, order) = (conns.clone(), std::sync::Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                let _lent = conns.exclusive().await.expect("lent in turn");
                order.lock().expect("order").push(i);
            }));
            // Each waiter is queued before the next one asks.
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        drop(held);
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("order"), [0, 1, 2, 3]);
    }

    /// A transaction abandoned half-way (a cancelled request) must not keep its locks.
    #[tokio::test]
    async fn an_abandoned_transaction_releases_its_locks() {
        let Some(conns) = connections(2).await else {
            return;
        };
        let shared = conns.shared().await.expect("shared");
        let table = counters(&shared, "(1, 0)").await;
        let update = format!("UPDATE {table} SET n = n + 1 WHERE id = 1");
        {
            let mut conn = conns.exclusive().await.expect("exclusive");
            let tx = conn.client().transaction().await.expect("begin");
            tx.execute(update.as_str(), &[])
                .await
                .expect("lock the row");
            // dropped here without commit
        }
        shared
            .query_unprepared("SET lock_timeout = '500ms'", &[])
            .await
            .expect("timeout");
        let retried = shared.query_unprepared(&update, &[]).await;
        let _ = shared
            .query_unprepared(&format!("DROP TABLE {table}"), &[])
            .await;
        retried.expect("the row is not locked by the abandoned transaction");
    }

    /// Two transactions lock two rows in opposite orders; PostgreSQL kills one, the store's
    /// retry runs it again, and both end up committed exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadlocks_are_retried() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        let Some(conns) = connections(8).await else {
            return;
        };
        let shared = conns.shared().await.expect("shared");
        let table = counters(&shared, "(1, 0), (2, 0)").await;
        let attempts = Arc::new(AtomicU32::new(0));
        let run = |first: i64, second: i64| {
            let (conns, attempts, table) = (conns.clone(), Arc::clone(&attempts), table.clone());
            tokio::spawn(async move {
                crate::store::retry("deadlock test", || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let mut conn = conns.exclusive().await?;
                    let tx = conn.client().transaction().await?;
                    for (i, id) in [first, second].into_iter().enumerate() {
                        tx.execute(
                            &format!("UPDATE {table} SET n = n + 1 WHERE id = {id}"),
                            &[],
                        )
                        .await?;
                        if i == 0 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, PgFailure>(())
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
        let counts: Vec<i64> = shared
            .query_unprepared(&format!("SELECT n FROM {table} ORDER BY id"), &[])
            .await
            .expect("counters")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let _ = shared
            .query_unprepared(&format!("DROP TABLE {table}"), &[])
            .await;
        assert_eq!(counts, [2, 2], "both transactions applied exactly once");
    }
}
