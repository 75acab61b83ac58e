//! The store's connections as the live PostgreSQL sees them: how many it opens, what happens
//! when the server ends them, when every exclusive one is busy, and when a request is
//! cancelled or chosen as a deadlock victim half-way through its transaction. Each store
//! names its connections with its own `application_name`, so a plain client can count and end
//! them. Required under CI=true; skipped loudly elsewhere.

use std::sync::Arc;
use std::time::Duration;

use sessionkit_conformance::{fresh_key, record_with, server_unavailable};
use sessionkit_core::{ApplyOutcome, Change, Store};
use sessionkit_testkit::locking::{Locking, SqlClient};
use sessionkit_testkit::{postgres_servers, postgres_url, scratch_table};
use tokio_postgres::{Client, NoTls};

/// A plain client of the test database.
struct Plain(Client);

impl SqlClient for Plain {
    const PARAM: &'static str = "$1";
    const KEY: &'static str = "key";

    async fn run(&mut self, sql: &str) {
        self.0.batch_execute(sql).await.expect(sql);
    }

    async fn run_with(&mut self, sql: &str, key: &[u8]) -> u64 {
        self.0.execute(sql, &[&key]).await.expect(sql)
    }
}

async fn client() -> Option<Plain> {
    let url = postgres_url();
    match tokio_postgres::connect(&url, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Some(Plain(client))
        }
        Err(err) => server_unavailable("PostgreSQL", &url, err),
    }
}

/// A store on a fresh table with `options` whose connections are named `app`, and `clients`
/// plain clients.
async fn locking(app: &str, options: &str, clients: usize) -> Option<Locking<Plain>> {
    let table = scratch_table();
    let extra = format!("&application_name={app}{options}");
    let store = postgres_servers(&postgres_url(), &table, &extra, 1)
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

/// The server process ids of the connections named `app`.
async fn backends(admin: &Plain, app: &str) -> Vec<i32> {
    let rows = admin
        .0
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&app],
        )
        .await
        .expect("pg_stat_activity");
    rows.iter().map(|row| row.get(0)).collect()
}

fn app() -> String {
    format!("sktest_{}", scratch_table())
}

#[tokio::test]
async fn concurrent_loads_share_the_shared_connections() {
    let app = app();
    let Some(mut s) = locking(&app, "&shared_connections=4&max_connections=16", 1).await else {
        return;
    };
    let key = fresh_key();
    s.store
        .create(&key, &record_with(&[("n", b"0")]))
        .await
        .expect("create");
    let loads: Vec<_> = (0..64)
        .map(|_| {
            let (store, key) = (Arc::clone(&s.store), key);
            tokio::spawn(async move { store.load(&key).await })
        })
        .collect();
    for load in loads {
        assert!(load.await.expect("task").expect("load").is_some());
    }
    let admin = s.clients.pop().expect("a client");
    assert_eq!(
        backends(&admin, &app).await.len(),
        4 + 1,
        "the four shared connections and the exclusive one `setup` used, no more"
    );
}

#[tokio::test]
async fn connections_the_server_ended_are_replaced() {
    let app = app();
    let Some(mut s) = locking(&app, "", 1).await else {
        return;
    };
    let admin = s.clients.pop().expect("a client");
    let key = fresh_key();
    s.store
        .create(&key, &record_with(&[("n", b"0")]))
        .await
        .expect("create");
    let ended = backends(&admin, &app).await;
    admin
        .0
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate");
    // Let the connection tasks see their sockets close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.store
            .load(&key)
            .await
            .expect("load, connected afresh")
            .is_some()
    );
    let mut change = Change::default();
    change.set("n".into(), b"1".to_vec());
    assert!(matches!(
        s.store.apply(&key, &change).await,
        Ok(ApplyOutcome::Applied { .. })
    ));
    let now = backends(&admin, &app).await;
    assert!(!now.is_empty());
    assert!(
        now.iter().all(|pid| !ended.contains(pid)),
        "{now:?} are new connections, none of {ended:?}"
    );
}

const ONE_EXCLUSIVE: &str = "&shared_connections=1&max_connections=2";

#[tokio::test]
async fn a_save_waits_for_a_busy_connection_at_most_the_acquire_timeout() {
    let options = format!("{ONE_EXCLUSIVE}&acquire_timeout_ms=300");
    if let Some(s) = locking(&app(), &options, 1).await {
        s.busy_connections_are_waited_for_at_most_the_acquire_timeout()
            .await;
    }
}

#[tokio::test]
async fn waiting_saves_are_served_in_arrival_order() {
    if let Some(s) = locking(&app(), ONE_EXCLUSIVE, 1).await {
        s.waiting_saves_are_served_in_arrival_order().await;
    }
}

#[tokio::test]
async fn a_cancelled_transaction_releases_its_locks() {
    if let Some(s) = locking(&app(), "", 2).await {
        s.a_cancelled_transaction_releases_its_locks().await;
    }
}

/// PostgreSQL ends the transaction whose deadlock check runs first: the other client's runs
/// after 10 s, the store's after the default second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_transaction_is_retried() {
    if let Some(mut s) = locking(&app(), "", 1).await {
        for client in &mut s.clients {
            client.run("SET deadlock_timeout = '10s'").await;
        }
        s.a_deadlocked_transaction_is_retried().await;
    }
}
