//! The store's connections against the live MariaDB/MySQL while another client holds the rows
//! they need: a busy connection is waited for at most the acquire timeout, waiters are served
//! in arrival order, a cancelled request or a connection the server ends mid-statement leaves
//! no lock behind, and a deadlock is retried. Required under CI=true; skipped loudly elsewhere.

use std::time::Duration;

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{ApplyOutcome, Change, ErrorKind};
use sessionkit_testkit::locking::{Locking, SqlClient};
use sessionkit_testkit::{mysql_servers, mysql_url, scratch_table};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

/// A plain client of the test database.
struct Plain(MySqlConnection);

impl SqlClient for Plain {
    const PARAM: &'static str = "?";
    const KEY: &'static str = "`key`";

    async fn run(&mut self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut self.0)
            .await
            .expect(sql);
    }

    async fn run_with(&mut self, sql: &str, key: &[u8]) -> u64 {
        let query = sqlx::query(AssertSqlSafe(sql.to_owned())).bind(key);
        let counted = if sql.starts_with("SELECT") {
            query
                .fetch_all(&mut self.0)
                .await
                .map(|rows| rows.len() as u64)
        } else {
            query
                .execute(&mut self.0)
                .await
                .map(|done| done.rows_affected())
        };
        counted.expect(sql)
    }
}

async fn client() -> Option<Plain> {
    let url = mysql_url();
    match MySqlConnection::connect(&url).await {
        Ok(conn) => Some(Plain(conn)),
        Err(err) => server_unavailable("MariaDB/MySQL", &url, err),
    }
}

/// A store on a fresh table with `options`, and `clients` plain clients.
async fn locking(options: &str, clients: usize) -> Option<Locking<Plain>> {
    let table = scratch_table();
    let store = mysql_servers(&mysql_url(), &table, options, 1)
        .await?
        .pop()?;
    let mut plain = Vec::with_capacity(clients);
    for _ in 0..clients {
        plain.push(client().await?);
    }
    Some(Locking {
        store,
        table,
        clients: plain,
    })
}

const ONE_CONNECTION: &str = "&max_connections=1";

#[tokio::test]
async fn a_save_waits_for_a_busy_connection_at_most_the_acquire_timeout() {
    let options = format!("{ONE_CONNECTION}&acquire_timeout_ms=300");
    if let Some(s) = locking(&options, 1).await {
        s.busy_connections_are_waited_for_at_most_the_acquire_timeout()
            .await;
    }
}

#[tokio::test]
async fn waiting_saves_are_served_in_arrival_order() {
    if let Some(s) = locking(ONE_CONNECTION, 1).await {
        s.waiting_saves_are_served_in_arrival_order().await;
    }
}

#[tokio::test]
async fn a_cancelled_transaction_releases_its_locks() {
    if let Some(s) = locking("", 2).await {
        s.a_cancelled_transaction_releases_its_locks().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_is_retried() {
    if let Some(s) = locking("", 1).await {
        s.a_deadlocked_transaction_is_retried().await;
    }
}

/// The server ends the store's connection while its statement waits on a lock: that request
/// fails as `Unavailable`, the connection is not lent again, and the next request works.
#[tokio::test]
async fn a_connection_the_server_ends_mid_statement_is_replaced() {
    let Some(mut s) = locking(ONE_CONNECTION, 2).await else {
        return;
    };
    let key = fresh_key();
    s.store
        .create(&key, &record_with(&[("n", b"0")]))
        .await
        .expect("create");
    let mut locker = s.clients.pop().expect("a client");
    let mut admin = s.clients.pop().expect("a client");
    locker.run("BEGIN").await;
    let lock = format!("SELECT 1 FROM {} WHERE `key` = ? FOR UPDATE", s.table);
    assert_eq!(locker.run_with(&lock, key.as_bytes()).await, 1);
    let mut change = Change::default();
    change.set("n".into(), b"1".to_vec());
    let (store, waiting, first) = (std::sync::Arc::clone(&s.store), key, change.clone());
    let blocked = tokio::spawn(async move { store.apply(&waiting, &first).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The store's connection is the one whose statement names the table, other than ours.
    let find = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{}%' AND ID <> CONNECTION_ID()",
        s.table
    );
    let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(find))
        .fetch_all(&mut admin.0)
        .await
        .expect("processlist");
    let [id] = ids[..] else {
        panic!("one store connection waiting, found {ids:?}");
    };
    admin.run(&format!("KILL CONNECTION {id}")).await;
    let err = blocked
        .await
        .expect("task")
        .expect_err("the request on the ended connection");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    locker.run("COMMIT").await;
    assert!(matches!(
        s.store.apply(&key, &change).await,
        Ok(ApplyOutcome::Applied { .. })
    ));
}
