//! The side-by-side benchmark: the same axum app on sessionkit and on tower-sessions.
//!
//! - `sessionkit-bench serve --lib sessionkit|tower-sessions|raw|raw-pipelined --store memory|sqlite|postgres|mysql|redis --port N`
//!   (`raw`: the floor, the same `/read` and `/incr` as one driver call each, no session layer;
//!   memory, postgres, mysql and redis; `raw-pipelined`: the same on Redis, on sessionkit's own
//!   connection)
//! - `sessionkit-bench run [--stores …] [--seconds 10] [--runs 3] [--floor]`: for each store, serves each
//!   library in turn, pre-creates 1000 sessions, drives wrk (2 threads, 64 connections, cookies
//!   rotated by `rotate.lua`) on `/none`, `/read` and `/incr`, and prints the medians and the
//!   sessionkit / tower-sessions ratios; writes `docs/bench-results.json` and `docs/bench-chart.svg`.
//!   With `--baseline PATH` (another build of this binary), that build's sessionkit runs
//!   interleaved with this one's and a table compares them.
//! - `sessionkit-bench correctness [--stores …] [--trials 10]`: 100 concurrent `/add/{k}` on one
//!   cookie (how many keys survive), 100 concurrent `/push/{k}` to one list (how many items
//!   survive), and a slow request racing a logout (does the session come back).
//! - `sessionkit-bench contended [--stores …] [--seconds 10] [--connections 64] [--baseline PATH]`:
//!   every connection increments one session's counter; req/s, p50/p99, conflicts per request,
//!   and whether the final counter equals the 200 responses.
//! - `sessionkit-bench chart`: redraws the chart from the saved results.
//! - `sessionkit-bench layer [--libs raw,sessionkit,tower-sessions] [--store memory|redis]
//!   [--routes none,read,incr]`: instructions (callgrind) and time per request of each session
//!   layer, in-process (needs `valgrind`); on Redis also the server's CPU per request.
//! - `sessionkit-bench drivers`: point reads per second for each way of holding PostgreSQL and
//!   MySQL connections (sqlx's pool with and without its ping, plain sqlx connections,
//!   tokio-postgres pipelined).
//!
//! Needs `wrk` (Debian package) and the servers of the stores asked for.

#![allow(missing_docs)]

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use clap::{Parser, Subcommand};

mod contended;
mod driver;
mod drivers;
mod layer;
mod raw;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve {
        #[arg(long)]
        lib: String,
        #[arg(long)]
        store: String,
        #[arg(long)]
        port: u16,
    },
    Run {
        #[arg(long, default_value = "memory,sqlite,postgres,mysql,redis")]
        stores: String,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also serve the raw-driver floor (`--lib raw`) on memory, postgres, mysql and redis.
        #[arg(long)]
        floor: bool,
        /// Another build of this binary: its sessionkit runs interleaved with this build's,
        /// and a table compares the two (nothing is written to docs/).
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Many connections incrementing one session's counter at once: req/s, p99, conflicts
    /// per request, and whether the final counter equals the 200 responses.
    Contended {
        #[arg(long, default_value = "memory,sqlite,postgres,mysql,redis")]
        stores: String,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Also run a baseline build's sessionkit (as `run --baseline`).
        #[arg(long)]
        baseline: Option<String>,
    },
    Correctness {
        #[arg(long, default_value = "memory,sqlite,postgres,mysql,redis")]
        stores: String,
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Redraws docs/bench-chart.svg from docs/bench-results.json.
    Chart,
    /// Point reads per second and client CPU per read for each way of holding SQL connections.
    Drivers,
    /// Instructions (callgrind) and time per request in each library's session layer,
    /// in-process on the memory store.
    Layer {
        #[arg(long, default_value = "raw,sessionkit,tower-sessions")]
        libs: String,
        /// memory, or redis (127.0.0.1:6379).
        #[arg(long, default_value = "memory")]
        store: String,
        #[arg(long, default_value = "none,read,incr")]
        routes: String,
        #[arg(long, default_value_t = 5000)]
        requests: usize,
    },
    /// One in-process run of `layer` (what it runs under valgrind).
    #[command(hide = true)]
    LayerWorker {
        #[arg(long)]
        lib: String,
        #[arg(long)]
        store: String,
        #[arg(long)]
        route: String,
        #[arg(long)]
        requests: usize,
    },
}

const PROFILE: &str = "Alice Example <alice@example.com>; roles=customer,beta; locale=en-GB; theme=dark; \
                       timezone=Europe/London; newsletter=weekly; plan=pro; since=2021-04-01";

mod sk {
    use super::*;
    use sessionkit::tower::{CookieConfig, SessionError, SessionLayer};
    use sessionkit::{Session, SessionManager};

    async fn read(s: Session) -> Result<String, SessionError> {
        Ok(s.get::<i64>("counter").await?.unwrap_or(0).to_string())
    }
    async fn incr(s: Session) -> Result<String, SessionError> {
        let n = s
            .update("counter", |n: &mut i64| {
                *n += 1;
                *n
            })
            .await?;
        if n == 1 {
            s.insert("profile", PROFILE).await?;
        }
        Ok(n.to_string())
    }
    async fn push(s: Session, Path(k): Path<String>) -> Result<&'static str, SessionError> {
        s.update("list", move |list: &mut Vec<String>| list.push(k.clone()))
            .await?;
        Ok("ok")
    }
    async fn pushed(s: Session) -> Result<String, SessionError> {
        Ok(distinct(s.get::<Vec<String>>("list").await?.unwrap_or_default()).to_string())
    }
    async fn add(s: Session, Path(k): Path<String>) -> Result<&'static str, SessionError> {
        s.insert(&k, &true).await?;
        Ok("ok")
    }
    async fn count(s: Session, Path(n): Path<usize>) -> Result<String, SessionError> {
        let keys = s.keys().await?;
        Ok((0..n)
            .filter(|i| keys.contains(&format!("k{i}")))
            .count()
            .to_string())
    }
    async fn logout(s: Session) -> Result<&'static str, SessionError> {
        s.destroy().await?;
        Ok("ok")
    }
    async fn slow_add(
        s: Session,
        Path((k, ms)): Path<(String, u64)>,
    ) -> Result<&'static str, SessionError> {
        let _ = s.get::<i64>("counter").await?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        s.insert(&k, &true).await?;
        Ok("ok")
    }

    pub(crate) async fn app(store: &str) -> Router {
        let url = match store {
            "memory" => "memory:".to_owned(),
            "sqlite" => {
                let _ = std::fs::remove_file("bench-sessionkit.db");
                "sqlite://bench-sessionkit.db".to_owned()
            }
            "postgres" => {
                "postgres://root@127.0.0.1:5432/test?table=bench_sessionkit&setup=true".to_owned()
            }
            "mysql" => {
                "mysql://root@127.0.0.1:3306/test?table=bench_sessionkit&setup=true".to_owned()
            }
            "redis" => "redis://127.0.0.1:6379?namespace=bench_sessionkit".to_owned(),
            other => panic!("unknown store {other}"),
        };
        let store = sessionkit::open(&url)
            .await
            .expect("open the sessionkit store");
        let counting = std::env::var(driver::COUNT_CONFLICTS).is_ok_and(|v| v == "1");
        let (store, conflicts) = if counting {
            let counting = contended::CountingStore::new(store);
            let conflicts = counting.conflicts();
            (
                std::sync::Arc::new(counting) as std::sync::Arc<dyn sessionkit::Store>,
                Some(conflicts),
            )
        } else {
            (store, None)
        };
        let manager = SessionManager::builder_arc(store).build().expect("manager");
        let layer = SessionLayer::builder(manager)
            .cookie(CookieConfig::default().with_name("id").with_secure(false))
            .build()
            .expect("layer");
        Router::new()
            .route("/read", get(read))
            .route("/incr", get(incr))
            .route("/add/{k}", get(add))
            .route("/count/{n}", get(count))
            .route("/logout", get(logout))
            .route("/slow-add/{k}/{ms}", get(slow_add))
            .route("/push/{k}", get(push))
            .route("/pushed", get(pushed))
            .layer(layer)
            .route(
                "/conflicts",
                get(move || async move {
                    conflicts.map_or_else(String::new, |c| {
                        c.load(std::sync::atomic::Ordering::Relaxed).to_string()
                    })
                }),
            )
    }
}

mod ts {
    use super::*;
    use tower_sessions::{Session, SessionManagerLayer, SessionStore};
    use tower_sessions_sqlx_store::sqlx;

    type Failure = (axum::http::StatusCode, String);
    fn fail(e: impl std::fmt::Display) -> Failure {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    async fn read(s: Session) -> Result<String, Failure> {
        Ok(s.get::<i64>("counter")
            .await
            .map_err(fail)?
            .unwrap_or(0)
            .to_string())
    }
    async fn incr(s: Session) -> Result<String, Failure> {
        let n = s.get::<i64>("counter").await.map_err(fail)?;
        if n.is_none() {
            s.insert("profile", PROFILE).await.map_err(fail)?;
        }
        let n = n.unwrap_or(0) + 1;
        s.insert("counter", n).await.map_err(fail)?;
        Ok(n.to_string())
    }
    async fn add(s: Session, Path(k): Path<String>) -> Result<&'static str, Failure> {
        s.insert(&k, true).await.map_err(fail)?;
        Ok("ok")
    }
    async fn count(s: Session, Path(n): Path<usize>) -> Result<String, Failure> {
        let mut found = 0;
        for i in 0..n {
            if s.get::<bool>(&format!("k{i}"))
                .await
                .map_err(fail)?
                .is_some()
            {
                found += 1;
            }
        }
        Ok(found.to_string())
    }
    async fn logout(s: Session) -> Result<&'static str, Failure> {
        s.flush().await.map_err(fail)?;
        Ok("ok")
    }
    /// tower-sessions has no read-modify-write: a read, then an insert of the whole list.
    async fn push(s: Session, Path(k): Path<String>) -> Result<&'static str, Failure> {
        let mut list: Vec<String> = s.get("list").await.map_err(fail)?.unwrap_or_default();
        list.push(k);
        s.insert("list", list).await.map_err(fail)?;
        Ok("ok")
    }
    async fn pushed(s: Session) -> Result<String, Failure> {
        let list: Vec<String> = s.get("list").await.map_err(fail)?.unwrap_or_default();
        Ok(distinct(list).to_string())
    }
    async fn slow_add(
        s: Session,
        Path((k, ms)): Path<(String, u64)>,
    ) -> Result<&'static str, Failure> {
        let _ = s.get::<i64>("counter").await.map_err(fail)?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        s.insert(&k, true).await.map_err(fail)?;
        Ok("ok")
    }

    fn routes<S: SessionStore + Clone>(store: S) -> Router {
        Router::new()
            .route("/read", get(read))
            .route("/incr", get(incr))
            .route("/add/{k}", get(add))
            .route("/count/{n}", get(count))
            .route("/logout", get(logout))
            .route("/slow-add/{k}/{ms}", get(slow_add))
            .route("/push/{k}", get(push))
            .route("/pushed", get(pushed))
            .layer(SessionManagerLayer::new(store).with_secure(false))
    }

    pub(crate) async fn app(store: &str) -> Router {
        match store {
            "memory" => routes(tower_sessions::MemoryStore::default()),
            "sqlite" => {
                let _ = std::fs::remove_file("bench-tower-sessions.db");
                let pool = sqlx::SqlitePool::connect("sqlite://bench-tower-sessions.db?mode=rwc")
                    .await
                    .expect("sqlite");
                let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
                store.migrate().await.expect("migrate");
                routes(store)
            }
            "postgres" => {
                let pool = sqlx::PgPool::connect("postgres://root@127.0.0.1:5432/test")
                    .await
                    .expect("postgres");
                let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
                store.migrate().await.expect("migrate");
                routes(store)
            }
            "mysql" => {
                let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
                    .await
                    .expect("mysql");
                let store = tower_sessions_sqlx_store::MySqlStore::new(pool);
                store.migrate().await.expect("migrate");
                routes(store)
            }
            "redis" => {
                use tower_sessions_redis_store::fred::prelude::*;
                let pool = Pool::new(Config::default(), None, None, None, 6).expect("fred pool");
                pool.init().await.expect("redis");
                routes(tower_sessions_redis_store::RedisStore::new(pool))
            }
            other => panic!("unknown store {other}"),
        }
    }
}

/// How many different items a pushed list holds (a lost push is missing; a push applied
/// twice would count once).
fn distinct(mut list: Vec<String>) -> usize {
    list.sort_unstable();
    list.dedup();
    list.len()
}

/// The bench app on `lib` and `store`, with `/none` (outside the session layer).
async fn app(lib: &str, store: &str) -> Router {
    let app = match lib {
        "sessionkit" => sk::app(store).await,
        "tower-sessions" => ts::app(store).await,
        "raw" => raw::app(store, false).await,
        "raw-pipelined" => raw::app(store, true).await,
        other => panic!("unknown library {other}"),
    };
    app.route("/none", get(|| async { "none" }))
}

fn main() {
    match Cli::parse().command {
        // Each builds its own single-threaded runtime: instruction counts of one thread.
        Command::Layer {
            libs,
            store,
            routes,
            requests,
        } => layer::run(&libs, &store, &routes, requests),
        Command::LayerWorker {
            lib,
            store,
            route,
            requests,
        } => layer::worker(&lib, &store, &route, requests),
        command => tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(serve_or_drive(command)),
    }
}

async fn serve_or_drive(command: Command) {
    match command {
        Command::Serve { lib, store, port } => {
            let app = app(&lib, &store).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind");
            axum::serve(listener, app).await.expect("serve");
        }
        Command::Run {
            stores,
            seconds,
            runs,
            floor,
            baseline,
        } => driver::run(&stores, seconds, runs, floor, baseline.as_deref()).await,
        Command::Contended {
            stores,
            seconds,
            connections,
            baseline,
        } => contended::run(&stores, seconds, connections, baseline.as_deref()).await,
        Command::Correctness { stores, trials } => driver::correctness(&stores, trials).await,
        Command::Chart => driver::redraw(),
        Command::Drivers => drivers::run().await,
        Command::Layer { .. } | Command::LayerWorker { .. } => {
            unreachable!("run without the multi-threaded runtime")
        }
    }
}
