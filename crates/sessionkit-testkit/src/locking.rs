//! How the SQL stores' connections and transactions behave when another client holds the
//! rows they need, seen through the `Store` API: a busy connection is waited for at most the
//! acquire timeout, waiters are served in arrival order, a cancelled request leaves no lock
//! behind, and a deadlock the database breaks by ending the store's transaction is retried.
//! Each scenario takes the second client as a [`SqlClient`] of the driver the test uses.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{ApplyOutcome, Change, ErrorKind, Result, SessionKey, Store};

/// A plain client of the store's database, for the scenarios to lock rows with. Its methods
/// panic on errors: they are the test's own statements.
pub trait SqlClient: Send {
    /// The driver's placeholder for a statement's one parameter (`$1`, `?`).
    const PARAM: &'static str;
    /// The sessions table's key column, quoted as the server needs it.
    const KEY: &'static str;

    /// Runs `sql` (`BEGIN`, `COMMIT`, DDL) without parameters.
    fn run(&mut self, sql: &str) -> impl Future<Output = ()> + Send;

    /// Runs `sql` with `key` as its one parameter: how many rows it returned or changed.
    fn run_with(&mut self, sql: &str, key: &[u8]) -> impl Future<Output = u64> + Send;
}

/// A store on `table` and the clients a scenario locks its rows with.
pub struct Locking<C> {
    /// The store under test, on `table`.
    pub store: Arc<dyn Store>,
    /// The store's sessions table (its values table is `<table>_values`).
    pub table: String,
    /// The clients: the scenarios take them in turn.
    pub clients: Vec<C>,
}

/// A new session with one small value and, if `spilled`, one in the values table.
async fn session(store: &dyn Store, spilled: bool) -> SessionKey {
    let key = fresh_key();
    let large = vec![7u8; 2048];
    let record = if spilled {
        record_with(&[("n", b"0"), ("large", &large)])
    } else {
        record_with(&[("n", b"0")])
    };
    store.create(&key, &record).await.expect("create");
    key
}

fn blind(value: &[u8]) -> Change {
    let mut change = Change::default();
    change.set("n".into(), value.to_vec());
    change
}

/// A change that replaces the whole session: on both SQL stores, one transaction that locks
/// the session row, then deletes the session's rows in the values table.
fn replacing() -> Change {
    let mut change = blind(b"replaced");
    change.cleared = true;
    change
}

#[track_caller]
fn assert_applied(outcome: Result<ApplyOutcome>) {
    assert!(
        matches!(outcome, Ok(ApplyOutcome::Applied { .. })),
        "{outcome:?}"
    );
}

impl<C: SqlClient> Locking<C> {
    fn client(&mut self) -> C {
        self.clients.pop().expect("a client for each role")
    }

    /// Begins a transaction on `client` that locks `key`'s row of the sessions table, or of
    /// the values table if `values`; `COMMIT` releases it.
    async fn lock(&self, client: &mut C, values: bool, key: &SessionKey) {
        let (table, column) = if values {
            (format!("{}_values", self.table), "session")
        } else {
            (self.table.clone(), C::KEY)
        };
        client.run("BEGIN").await;
        let sql = format!(
            "SELECT 1 FROM {table} WHERE {column} = {} FOR UPDATE",
            C::PARAM
        );
        let locked = client.run_with(&sql, key.as_bytes()).await;
        assert_eq!(locked, 1, "one row of {table} locked");
    }

    /// With one connection for saves and `acquire_timeout_ms=300`: a save that cannot get it
    /// fails as `Unavailable` after the timeout, and both work once the row is free.
    pub async fn busy_connections_are_waited_for_at_most_the_acquire_timeout(mut self) {
        let (held, other) = (
            session(&*self.store, false).await,
            session(&*self.store, false).await,
        );
        let mut locker = self.client();
        self.lock(&mut locker, false, &held).await;
        let store = Arc::clone(&self.store);
        let holder = tokio::spawn(async move { store.apply(&held, &blind(b"1")).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = self
            .store
            .apply(&other, &blind(b"1"))
            .await
            .expect_err("the only connection for saves waits on a lock");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        locker.run("COMMIT").await;
        assert_applied(holder.await.expect("task"));
        assert_applied(self.store.apply(&other, &blind(b"2")).await);
    }

    /// With one connection for saves: saves waiting for it are served in arrival order (what
    /// keeps the p99 of a save near its median under load).
    pub async fn waiting_saves_are_served_in_arrival_order(mut self) {
        let held = session(&*self.store, false).await;
        let mut waiting = Vec::new();
        for _ in 0..4 {
            waiting.push(session(&*self.store, false).await);
        }
        let mut locker = self.client();
        self.lock(&mut locker, false, &held).await;
        let store = Arc::clone(&self.store);
        let holder = tokio::spawn(async move { store.apply(&held, &blind(b"1")).await });
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, key) in waiting.into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let (store, order) = (Arc::clone(&self.store), Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                let outcome = store.apply(&key, &blind(b"1")).await;
                order.lock().unwrap_or_else(PoisonError::into_inner).push(i);
                outcome
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        locker.run("COMMIT").await;
        assert_applied(holder.await.expect("task"));
        for waiter in waiters {
            assert_applied(waiter.await.expect("task"));
        }
        assert_eq!(
            *order.lock().unwrap_or_else(PoisonError::into_inner),
            [0, 1, 2, 3]
        );
    }

    /// A request cancelled while its transaction holds the session row (a client that went
    /// away) leaves the row unlocked for the next request. Takes two clients.
    pub async fn a_cancelled_transaction_releases_its_locks(mut self) {
        let key = session(&*self.store, true).await;
        let mut locker = self.client();
        self.lock(&mut locker, true, &key).await;
        let cancelled = tokio::time::timeout(
            Duration::from_millis(300),
            self.store.apply(&key, &replacing()),
        )
        .await;
        assert!(cancelled.is_err(), "the apply waited on the values row");
        locker.run("COMMIT").await;
        let mut checker = self.client();
        let update = format!(
            "UPDATE {} SET owner = 'checked' WHERE {} = {}",
            self.table,
            C::KEY,
            C::PARAM
        );
        let checked = tokio::time::timeout(
            Duration::from_secs(2),
            checker.run_with(&update, key.as_bytes()),
        )
        .await;
        assert_eq!(
            checked.ok(),
            Some(1),
            "the session row is not locked by the cancelled transaction"
        );
        assert_applied(self.store.apply(&key, &blind(b"1")).await);
    }

    /// The store's transaction locks the session row and waits for a values row another
    /// client holds; that client then waits for the session row. The database ends one of the
    /// two: it must be the store's (the caller sets the client up so: on PostgreSQL it checks
    /// for deadlocks late; InnoDB ends the transaction that changed fewer rows, and this
    /// client first changes rows of a table of its own). The store runs its transaction again
    /// and it commits after the other client's. Takes one client.
    pub async fn a_deadlocked_transaction_is_retried(mut self) {
        let key = session(&*self.store, true).await;
        let mut other = self.client();
        let ballast = crate::scratch_table();
        other
            .run(&format!(
                "CREATE TABLE {ballast} (id INT PRIMARY KEY, n INT NOT NULL)"
            ))
            .await;
        let rows: Vec<String> = (0..20).map(|id| format!("({id}, 0)")).collect();
        other
            .run(&format!("INSERT INTO {ballast} VALUES {}", rows.join(", ")))
            .await;
        self.lock(&mut other, true, &key).await;
        other.run(&format!("UPDATE {ballast} SET n = n + 1")).await;
        let (store, replaced) = (Arc::clone(&self.store), key);
        let apply = tokio::spawn(async move { store.apply(&replaced, &replacing()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let update = format!(
            "UPDATE {} SET owner = 'other' WHERE {} = {}",
            self.table,
            C::KEY,
            C::PARAM
        );
        let updated = other.run_with(&update, key.as_bytes()).await;
        other.run("COMMIT").await;
        other.run(&format!("DROP TABLE {ballast}")).await;
        assert_eq!(updated, 1, "the other client's update, after the deadlock");
        // Without a retry: the deadlock error of the store's transaction.
        assert_applied(apply.await.expect("task"));
        let loaded = self.store.load(&key).await.expect("load").expect("live");
        assert_eq!(loaded.data.keys().collect::<Vec<_>>(), ["n"]);
        assert_eq!(loaded.data["n"], b"replaced");
    }
}
