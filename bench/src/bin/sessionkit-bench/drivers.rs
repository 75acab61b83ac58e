//! `sessionkit-bench drivers`: how many point reads per second each way of holding database
//! connections sustains under 64 concurrent tasks on a 2-thread runtime, and how much client
//! CPU each read costs. This is what chose the SQL stores' connection handling.
//!
//! Every variant runs the same statement (the session-row lookup by primary key) with 10
//! connections: sqlx's `Pool` as configured by default (it pings before each acquire), the same
//! pool without that ping, 10 sqlx connections each behind its own async mutex (what a pool
//! costs when acquire and release are nearly free), and tokio-postgres connections shared and
//! pipelined (10, 4, 2 and 1). Needs the servers `.ci/services` starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection};

const TASKS: usize = 64;
const QUERIES: usize = 100_000;
const PG_URL: &str = "postgres://root@127.0.0.1:5432/test";
const MY_URL: &str = "mysql://root@127.0.0.1:3306/test";
const TABLE: &str = "bench_drivers";

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `query` QUERIES times from TASKS tasks; prints throughput and CPU per query.
async fn measure<F, Fut>(name: &str, query: F)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let (cpu, start) = (cpu_seconds(), Instant::now());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (next, query) = (Arc::clone(&next), query.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= QUERIES {
                        break;
                    }
                    query(task, i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a benchmark task");
    }
    let (elapsed, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    println!(
        "{name:<48} {:>8.0} reads/s   client CPU {:>5.1} µs/read",
        QUERIES as f64 / elapsed,
        cpu / QUERIES as f64 * 1e6
    );
}

/// The sqlx variants, the same on both servers: its `Pool` with and without the ping before
/// each acquire, and 10 plain connections each behind its own async mutex.
async fn sqlx_variants<DB>(server: &str, url: &str, keys: Arc<Vec<Vec<u8>>>, sql: Arc<str>)
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for ping in [true, false] {
        let pool = sqlx::pool::PoolOptions::<DB>::new()
            .max_connections(10)
            .min_connections(10)
            .test_before_acquire(ping)
            .connect(url)
            .await
            .expect("connect");
        let (keys, sql) = (Arc::clone(&keys), Arc::clone(&sql));
        let name = if ping {
            format!("{server:<9} sqlx Pool (default: ping on acquire)")
        } else {
            format!("{server:<9} sqlx Pool, test_before_acquire(false)")
        };
        measure(&name, move |_, i| {
            let (pool, keys, sql) = (pool.clone(), Arc::clone(&keys), Arc::clone(&sql));
            async move {
                let row = sqlx::query::<DB>(AssertSqlSafe(sql))
                    .bind(&keys[i % keys.len()])
                    .bind(0i64)
                    .fetch_optional(&pool)
                    .await
                    .expect("read");
                assert!(row.is_some());
            }
        })
        .await;
    }
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(tokio::sync::Mutex::new(
            DB::Connection::connect(url).await.expect("connect"),
        ));
    }
    let conns = Arc::new(conns);
    measure(
        &format!("{server:<9} 10 sqlx connections, a mutex each"),
        move |task, i| {
            let (conns, keys, sql) = (Arc::clone(&conns), Arc::clone(&keys), Arc::clone(&sql));
            async move {
                let mut conn = conns[task % conns.len()].lock().await;
                let row = sqlx::query::<DB>(AssertSqlSafe(sql))
                    .bind(&keys[i % keys.len()])
                    .bind(0i64)
                    .fetch_optional(&mut *conn)
                    .await
                    .expect("read");
                assert!(row.is_some());
            }
        },
    )
    .await;
}

async fn postgres() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(PG_URL)
        .await
        .expect("PostgreSQL");
    for statement in [
        format!("DROP TABLE IF EXISTS {TABLE}"),
        format!(
            "CREATE TABLE {TABLE} (key BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL, data TEXT NOT NULL)"
        ),
        format!(
            "INSERT INTO {TABLE} SELECT sha256(i::text::bytea), 9e15::bigint, repeat('x', 200) FROM generate_series(1, 1000) i"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("bench table");
    }
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT key FROM {TABLE}")))
            .fetch_all(&pool)
            .await
            .expect("keys"),
    );
    let sql: Arc<str> =
        format!("SELECT expires_at, data FROM {TABLE} WHERE key = $1 AND expires_at > $2").into();

    sqlx_variants::<sqlx::Postgres>("postgres", PG_URL, Arc::clone(&keys), Arc::clone(&sql)).await;

    for count in [10, 4, 2, 1] {
        let mut clients = Vec::new();
        for _ in 0..count {
            let (client, connection) = tokio_postgres::connect(
                "host=127.0.0.1 user=root dbname=test",
                tokio_postgres::NoTls,
            )
            .await
            .expect("connect");
            tokio::spawn(connection);
            let statement = client.prepare(&sql).await.expect("prepare");
            clients.push((client, statement));
        }
        let clients = Arc::new(clients);
        let keys = Arc::clone(&keys);
        measure(
            &format!("postgres  tokio-postgres, {count} shared pipelined"),
            move |task, i| {
                let (clients, keys) = (Arc::clone(&clients), Arc::clone(&keys));
                async move {
                    let (client, statement) = &clients[task % clients.len()];
                    let row = client
                        .query_opt(statement, &[&keys[i % keys.len()], &0i64])
                        .await
                        .expect("read");
                    assert!(row.is_some());
                }
            },
        )
        .await;
    }
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE {TABLE}")))
        .execute(&pool)
        .await;
}

async fn mysql() {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(10)
        .connect(MY_URL)
        .await
        .expect("MariaDB");
    for statement in [
        format!("DROP TABLE IF EXISTS {TABLE}"),
        format!(
            "CREATE TABLE {TABLE} (`key` BINARY(32) PRIMARY KEY, expires_at BIGINT NOT NULL, data TEXT NOT NULL) ENGINE=InnoDB"
        ),
        format!(
            "INSERT INTO {TABLE} SELECT UNHEX(SHA2(seq, 256)), 9000000000000000, REPEAT('x', 200) FROM seq_1_to_1000"
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("bench table");
    }
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT `key` FROM {TABLE}")))
            .fetch_all(&pool)
            .await
            .expect("keys"),
    );
    let sql: Arc<str> =
        format!("SELECT expires_at, data FROM {TABLE} WHERE `key` = ? AND expires_at > ?").into();
    sqlx_variants::<sqlx::MySql>("mysql", MY_URL, keys, sql).await;
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE {TABLE}")))
        .execute(&pool)
        .await;
}

/// Runs both servers' comparisons (on the binary's runtime: one worker per core, 2 on CI).
pub(crate) async fn run() {
    postgres().await;
    mysql().await;
}
