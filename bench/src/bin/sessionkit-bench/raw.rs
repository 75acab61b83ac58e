//! `serve --lib raw`: the floor. The same `/read` and `/incr` routes with no session layer: the
//! cookie is the row's key, and each route is the one driver call a session library could at
//! best make (a keyed read; an atomic increment), and `/incr2`, the same increment as a read
//! then a write (two calls), and `/incr2g`, the same with a write that cannot create the record
//! (on Redis a minimal script). No expiry, no id hashing, no concurrency
//! control beyond the driver's own: a floor, not a session store.
//!
//! On Redis the commands are redis-rs's, sent either on redis-rs's multiplexed connection
//! (`raw`) or on sessionkit's own ([`sessionkit_redis::Multiplexed`], `raw-pipelined`): the
//! second floor is one bare command per request on the connection sessionkit's store uses,
//! so the distance to it is what the session layer itself costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::AssertSqlSafe;

use bench_harness::PROFILE;

/// PostgreSQL connections with the three statements prepared, used round-robin (each shared
/// by many requests, as tokio-postgres allows).
struct PgFloor {
    conns: Vec<(tokio_postgres::Client, [tokio_postgres::Statement; 3])>,
    next: std::sync::atomic::AtomicUsize,
}

impl PgFloor {
    fn pick(&self) -> &(tokio_postgres::Client, [tokio_postgres::Statement; 3]) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.conns[i % self.conns.len()]
    }
}

/// Which connection the Redis floor sends its commands on.
#[derive(Clone)]
enum RedisConn {
    Driver(redis::aio::MultiplexedConnection),
    Pipelined(sessionkit_redis::Multiplexed),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Driver(conn) => conn.req_packed_command(cmd),
            Self::Pipelined(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Driver(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Pipelined(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Driver(conn) => conn.get_db(),
            Self::Pipelined(conn) => conn.get_db(),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<Mutex<HashMap<String, i64>>>),
    Redis(RedisConn),
    Postgres(Arc<PgFloor>),
    Mysql(sqlx::MySqlPool),
}

fn cookie_id(headers: &HeaderMap) -> Option<String> {
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    cookie
        .split(';')
        .find_map(|part| part.trim().strip_prefix("id="))
        .map(str::to_owned)
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

impl Backend {
    async fn read(&self, id: &str) -> Result<i64, Response> {
        match self {
            Self::Memory(map) => Ok(map.lock().map_err(fail)?.get(id).copied().unwrap_or(0)),
            Self::Redis(conn) => {
                let n: Option<i64> = redis::cmd("HGET")
                    .arg(format!("raw:{id}"))
                    .arg("counter")
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(fail)?;
                Ok(n.unwrap_or(0))
            }
            Self::Postgres(floor) => {
                let (client, [select, _, _]) = floor.pick();
                let row = client.query_opt(select, &[&id]).await.map_err(fail)?;
                Ok(row.map_or(0, |row| row.get(0)))
            }
            Self::Mysql(pool) => {
                let n: Option<i64> =
                    sqlx::query_scalar(AssertSqlSafe("SELECT counter FROM bench_raw WHERE id = ?"))
                        .bind(id)
                        .fetch_optional(pool)
                        .await
                        .map_err(fail)?;
                Ok(n.unwrap_or(0))
            }
        }
    }

    async fn incr(&self, id: &str) -> Result<(), Response> {
        match self {
            Self::Memory(map) => {
                *map.lock().map_err(fail)?.entry(id.to_owned()).or_default() += 1;
            }
            Self::Redis(conn) => {
                let _: i64 = redis::cmd("HINCRBY")
                    .arg(format!("raw:{id}"))
                    .arg("counter")
                    .arg(1)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(fail)?;
            }
            Self::Postgres(floor) => {
                let (client, [_, update, _]) = floor.pick();
                client.execute(update, &[&id]).await.map_err(fail)?;
            }
            Self::Mysql(pool) => {
                sqlx::query(AssertSqlSafe(
                    "UPDATE bench_raw SET counter = counter + 1 WHERE id = ?",
                ))
                .bind(id)
                .execute(pool)
                .await
                .map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Writes `n` as the counter only if the record exists: the write a session store must make
    /// so that a save racing a logout cannot bring the session back. SQL's `UPDATE` already
    /// is one; Redis 7.0 has no command that sets a hash field only if the hash exists, so it
    /// takes the smallest script that does (one `EXISTS`, one `HSET`).
    async fn write_guarded(&self, id: &str, n: i64) -> Result<(), Response> {
        match self {
            Self::Memory(map) => {
                if let Some(counter) = map.lock().map_err(fail)?.get_mut(id) {
                    *counter = n;
                }
            }
            Self::Redis(conn) => {
                let _: i64 = GUARDED_HSET
                    .key(format!("raw:{id}"))
                    .arg(n)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(fail)?;
            }
            Self::Postgres(_) | Self::Mysql(_) => self.write(id, n).await?,
        }
        Ok(())
    }

    /// Writes `n` as the counter: the write half of a read-modify-write.
    async fn write(&self, id: &str, n: i64) -> Result<(), Response> {
        match self {
            Self::Memory(map) => {
                map.lock().map_err(fail)?.insert(id.to_owned(), n);
            }
            Self::Redis(conn) => {
                let _: () = redis::cmd("HSET")
                    .arg(format!("raw:{id}"))
                    .arg("counter")
                    .arg(n)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(fail)?;
            }
            Self::Postgres(floor) => {
                let (client, _) = floor.pick();
                client
                    .execute(
                        "UPDATE bench_raw SET counter = $2 WHERE id = $1",
                        &[&id, &n],
                    )
                    .await
                    .map_err(fail)?;
            }
            Self::Mysql(pool) => {
                sqlx::query(AssertSqlSafe(
                    "UPDATE bench_raw SET counter = ? WHERE id = ?",
                ))
                .bind(n)
                .bind(id)
                .execute(pool)
                .await
                .map_err(fail)?;
            }
        }
        Ok(())
    }

    async fn create(&self, id: &str) -> Result<(), Response> {
        match self {
            Self::Memory(map) => {
                map.lock().map_err(fail)?.insert(id.to_owned(), 1);
            }
            Self::Redis(conn) => {
                let _: () = redis::cmd("HSET")
                    .arg(format!("raw:{id}"))
                    .arg("counter")
                    .arg(1)
                    .arg("profile")
                    .arg(PROFILE)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(fail)?;
            }
            Self::Postgres(floor) => {
                let (client, [_, _, insert]) = floor.pick();
                client
                    .execute(insert, &[&id, &PROFILE])
                    .await
                    .map_err(fail)?;
            }
            Self::Mysql(pool) => {
                sqlx::query(AssertSqlSafe(
                    "INSERT INTO bench_raw (id, counter, profile) VALUES (?, 1, ?)",
                ))
                .bind(id)
                .bind(PROFILE)
                .execute(pool)
                .await
                .map_err(fail)?;
            }
        }
        Ok(())
    }
}

async fn read(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    let Some(id) = cookie_id(&headers) else {
        return "0".into_response();
    };
    match backend.read(&id).await {
        Ok(n) => n.to_string().into_response(),
        Err(response) => response,
    }
}

async fn incr(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_id(&headers) {
        return match backend.incr(&id).await {
            Ok(()) => "ok".into_response(),
            Err(response) => response,
        };
    }
    let id = format!("{:032x}", rand_id());
    if let Err(response) = backend.create(&id).await {
        return response;
    }
    let mut response = "1".into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("id={id}; Path=/; HttpOnly")) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `/incr2`: a read, then a write of the new value: two driver calls, as a session library
/// makes when the handler runs between its read and its write (no atomicity between them).
async fn incr_in_two(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    read_then_write(backend, headers, false).await
}

static GUARDED_HSET: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then \
         return redis.call('HSET', KEYS[1], 'counter', ARGV[1]) end return -1",
    )
});

/// `/incr2g`: as `/incr2`, but the write cannot create the record (`write_guarded`): the floor
/// for a session library that never resurrects a deleted session.
async fn incr_in_two_guarded(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    read_then_write(backend, headers, true).await
}

async fn read_then_write(backend: Backend, headers: HeaderMap, guarded: bool) -> Response {
    let Some(id) = cookie_id(&headers) else {
        return incr(State(backend), headers).await;
    };
    let n = match backend.read(&id).await {
        Ok(n) => n + 1,
        Err(response) => return response,
    };
    let written = if guarded {
        backend.write_guarded(&id, n).await
    } else {
        backend.write(&id, n).await
    };
    match written {
        Ok(()) => n.to_string().into_response(),
        Err(response) => response,
    }
}

fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    u128::from(hasher.finish()) << 64 | u128::from(hasher.finish().rotate_left(17))
}

/// The floor on `store`; `pipelined` (Redis only) sends on sessionkit's own connection.
pub(crate) async fn app(store: &str, pipelined: bool) -> Router {
    assert!(
        !pipelined || store == "redis",
        "raw-pipelined serves redis only"
    );
    let backend = match store {
        "memory" => Backend::Memory(Arc::default()),
        "redis" => {
            let client = redis::Client::open("redis://127.0.0.1:6379").expect("redis URL");
            Backend::Redis(if pipelined {
                let info = client.get_connection_info();
                let conn =
                    sessionkit_redis::Multiplexed::new(info, std::time::Duration::from_secs(5))
                        .expect("redis URL");
                conn.connect().await.expect("redis");
                RedisConn::Pipelined(conn)
            } else {
                RedisConn::Driver(
                    client
                        .get_multiplexed_async_connection()
                        .await
                        .expect("redis"),
                )
            })
        }
        "postgres" => {
            let mut conns = Vec::new();
            for i in 0..8 {
                let (client, connection) = tokio_postgres::connect(
                    "host=127.0.0.1 user=root dbname=test",
                    tokio_postgres::NoTls,
                )
                .await
                .expect("postgres");
                tokio::spawn(connection);
                if i == 0 {
                    client
                        .batch_execute(
                            "DROP TABLE IF EXISTS bench_raw; \
                             CREATE TABLE bench_raw (id TEXT PRIMARY KEY, counter BIGINT NOT NULL, profile TEXT NOT NULL)",
                        )
                        .await
                        .expect("table");
                }
                let mut statements = Vec::new();
                for sql in [
                    "SELECT counter FROM bench_raw WHERE id = $1",
                    "UPDATE bench_raw SET counter = counter + 1 WHERE id = $1",
                    "INSERT INTO bench_raw (id, counter, profile) VALUES ($1, 1, $2)",
                ] {
                    statements.push(client.prepare(sql).await.expect("prepare"));
                }
                let statements: [tokio_postgres::Statement; 3] =
                    statements.try_into().expect("three statements");
                conns.push((client, statements));
            }
            Backend::Postgres(Arc::new(PgFloor {
                conns,
                next: std::sync::atomic::AtomicUsize::new(0),
            }))
        }
        "mysql" => {
            let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
                .await
                .expect("mysql");
            for statement in [
                "DROP TABLE IF EXISTS bench_raw",
                "CREATE TABLE bench_raw (id VARCHAR(64) PRIMARY KEY, counter BIGINT NOT NULL, profile TEXT NOT NULL) ENGINE=InnoDB",
            ] {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&pool)
                    .await
                    .expect("table");
            }
            Backend::Mysql(pool)
        }
        other => panic!("no raw floor for {other}"),
    };
    Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .route("/incr2", get(incr_in_two))
        .route("/incr2g", get(incr_in_two_guarded))
        .with_state(backend)
}
