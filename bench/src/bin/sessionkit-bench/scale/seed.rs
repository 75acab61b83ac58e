//! Seeding large stores through sessionkit's own `Store::create`, counting what they hold, and
//! dropping them afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_harness::PROFILE;
use sessionkit::codec::encode_value;
use sessionkit::{Record, SessionId, Store, Timestamp};

use super::DIR;

/// Concurrent tasks creating sessions.
const TASKS: usize = 64;
/// Store instances the tasks share: PostgreSQL's store sends every create down one shared,
/// pipelined connection, where each commit waits for its own WAL flush (about 400 creates a
/// second); several instances, i.e. several connections, let the server commit them together.
/// SQLite keeps one (a second instance would be a second writer thread on the same file).
const INSTANCES: usize = 16;
/// The URL of sessionkit's `store` (sqlite, postgres, mysql, redis, memory) in `table`.
pub(crate) fn url(store: &str, table: &str) -> String {
    match store {
        "memory" => "memory:".to_owned(),
        "sqlite" => format!("sqlite://{DIR}/{table}.db"),
        "postgres" => {
            format!("postgres://root@127.0.0.1:5432/test?table={table}&setup=true&sslmode=disable")
        }
        "mysql" => format!("mysql://root@127.0.0.1:3306/test?table={table}&setup=true"),
        "redis" => format!("redis://127.0.0.1:6379?namespace={table}"),
        other => panic!("unknown store {other}"),
    }
}

/// The deadline of seeded sessions.
#[derive(Clone, Copy)]
pub(crate) enum Deadline {
    /// A day from now (the manager's default idle timeout).
    Live,
    /// An hour ago: for `purge`.
    Expired,
}

/// A seeded store: the file of sample cookies (`id=…` lines), and how long seeding took
/// (`None` if the store was already seeded by an earlier run).
pub(crate) struct Seeded {
    pub(crate) cookies: PathBuf,
    pub(crate) seconds: Option<f64>,
}

/// The record a first `/incr` creates: the counter at 1 and the profile.
pub(crate) fn record(deadline: Deadline) -> Record {
    let now = Timestamp::now();
    let expires_at = match deadline {
        Deadline::Live => now.saturating_add(Duration::from_secs(24 * 60 * 60)),
        Deadline::Expired => now.saturating_sub(Duration::from_secs(60 * 60)),
    };
    let mut record = Record::new(now, expires_at);
    for (key, value) in [
        ("counter", encode_value("counter", &1i64)),
        ("profile", encode_value("profile", PROFILE)),
    ] {
        record
            .data
            .insert(key.to_owned(), value.expect("encode a value"));
    }
    record
}

/// Makes `store` in `table` hold `n` sessions with `deadline` (unless it already holds them)
/// and keeps about `sample` of their cookies, spread over the whole store.
pub(crate) async fn seed(
    store: &str,
    table: &str,
    n: usize,
    sample: usize,
    deadline: Deadline,
) -> Seeded {
    std::fs::create_dir_all(DIR).expect("the scale directory");
    let cookies = PathBuf::from(DIR).join(format!("{store}-{table}.cookies"));
    let held = count(store, table, deadline).await;
    if held == n as u64 && (matches!(deadline, Deadline::Expired) || cookies.exists()) {
        eprintln!("{store} {table}: {held} sessions already there");
        return Seeded {
            cookies,
            seconds: None,
        };
    }
    drop_table(store, table).await;
    let instances = if store == "sqlite" { 1 } else { INSTANCES };
    let mut opened = Vec::with_capacity(instances);
    for _ in 0..instances {
        opened.push(
            sessionkit::open(&url(store, table))
                .await
                .expect("open the store"),
        );
    }
    let started = Instant::now();
    let kept = create_all(&opened, n, n.div_ceil(sample.max(1)), deadline).await;
    let seconds = started.elapsed().as_secs_f64();
    let held = count(store, table, deadline).await;
    assert_eq!(held, n as u64, "{store} {table} holds {held}, not {n}");
    eprintln!("{store} {table}: seeded {n} sessions in {seconds:.1} s");
    std::fs::write(&cookies, kept.join("\n")).expect("write the cookies");
    Seeded {
        cookies,
        seconds: Some(seconds),
    }
}

/// Creates `n` sessions on [`TASKS`] tasks; returns the cookie of every `every`-th.
async fn create_all(
    stores: &[Arc<dyn Store>],
    n: usize,
    every: usize,
    deadline: Deadline,
) -> Vec<String> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&stores[task % stores.len()]);
            let share = n / TASKS + usize::from(task < n % TASKS);
            tokio::spawn(async move { create_share(&*store, share, every, deadline).await })
        })
        .collect();
    let mut kept = Vec::new();
    for task in tasks {
        kept.extend(task.await.expect("a seeding task"));
    }
    kept
}

async fn create_share(
    store: &dyn Store,
    share: usize,
    every: usize,
    deadline: Deadline,
) -> Vec<String> {
    let record = record(deadline);
    let mut kept = Vec::new();
    for i in 0..share {
        let id = SessionId::generate().expect("an id");
        store
            .create(&id.key(), &record)
            .await
            .expect("create a session");
        if i % every == 0 {
            kept.push(format!("id={}", id.expose()));
        }
    }
    kept
}

/// How many sessions (live, or expired) `store` holds in `table`: counted in the store's own
/// terms, by SQL or by Redis SCAN.
pub(crate) async fn count(store: &str, table: &str, deadline: Deadline) -> u64 {
    let now = Timestamp::now().as_millis();
    let condition = match deadline {
        Deadline::Live => format!("expires_at > {now}"),
        Deadline::Expired => format!("expires_at <= {now}"),
    };
    let sql = |table: &str| format!("SELECT count(*) FROM {table} WHERE {condition}");
    match store {
        // One file per table name, with the store's default table in it.
        "sqlite" => sqlite_count(table, &sql("sessions")),
        "postgres" => postgres_count(&sql(table)).await,
        "mysql" => mysql_count(&sql(table)).await,
        "redis" => redis_keys(&format!("{table}:s:*")).await.len() as u64,
        _ => 0,
    }
}

fn sqlite_count(table: &str, sql: &str) -> u64 {
    let path = PathBuf::from(DIR).join(format!("{table}.db"));
    if !path.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    conn.query_row(sql, [], |row| row.get::<_, i64>(0))
        .map_or(0, i64::unsigned_abs)
}

async fn postgres_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 user=root dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

async fn postgres_count(sql: &str) -> u64 {
    let client = postgres_client().await;
    client
        .query_one(sql, &[])
        .await
        .map_or(0, |row| row.get::<_, i64>(0).unsigned_abs())
}

async fn mysql_count(sql: &str) -> u64 {
    let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .expect("connect to MariaDB");
    // Table names of this module's own, and numbers.
    let count: Result<(i64,), _> = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await;
    count.map_or(0, |(n,)| n.unsigned_abs())
}

/// Every Redis key matching `pattern`.
async fn redis_keys(pattern: &str) -> Vec<String> {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("a Redis client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Drops `table` (and its values table) or deletes the namespace's keys or the SQLite file.
pub(crate) async fn drop_table(store: &str, table: &str) {
    match store {
        "sqlite" => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{DIR}/{table}.db{suffix}"));
            }
        }
        "postgres" => {
            let client = postgres_client().await;
            let sql = format!(
                "DROP TABLE IF EXISTS {table}_values, {table} CASCADE; DELETE FROM sessionkit_schema WHERE table_name = '{table}'"
            );
            let _ = client.batch_execute(&sql).await;
        }
        "mysql" => {
            let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
                .await
                .expect("connect to MariaDB");
            for sql in [
                format!("DROP TABLE IF EXISTS {table}_values"),
                format!("DROP TABLE IF EXISTS {table}"),
                format!("DELETE FROM sessionkit_schema WHERE table_name = '{table}'"),
            ] {
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            }
        }
        "redis" => redis_delete(table).await,
        _ => {}
    }
}

/// Deletes the keys of the namespaces `pattern` matches.
async fn redis_delete(pattern: &str) {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("a Redis client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    for keys in redis_keys(&format!("{pattern}:*")).await.chunks(10_000) {
        let _: () = redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("UNLINK");
    }
}

/// Drops every `scale_*` table and namespace and deletes [`DIR`].
pub(crate) async fn clean() {
    let client = postgres_client().await;
    let tables = client
        .query("SELECT tablename FROM pg_tables WHERE tablename LIKE 'scale\\_%' AND tablename NOT LIKE '%\\_values'", &[])
        .await
        .expect("list PostgreSQL tables");
    for row in tables {
        drop_table("postgres", row.get(0)).await;
    }
    let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
        .await
        .expect("connect to MariaDB");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'test' AND table_name LIKE 'scale\\_%' AND table_name NOT LIKE '%\\_values'",
    )
    .fetch_all(&pool)
    .await
    .expect("list MariaDB tables");
    for (table,) in tables {
        drop_table("mysql", &table).await;
    }
    redis_delete("scale_*").await;
    let _ = std::fs::remove_dir_all(DIR);
    eprintln!("dropped the scale_* tables and namespaces, deleted {DIR}");
}
