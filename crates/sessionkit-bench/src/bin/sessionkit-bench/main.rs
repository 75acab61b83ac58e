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
//! - `sessionkit-bench correctness [--stores …] [--trials 10]`: 100 concurrent `/add/{k}` on one
//!   cookie (how many keys survive), and a slow request racing a logout (does the session come back).
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
        let n = s.get::<i64>("counter").await?;
        if n.is_none() {
            s.insert("profile", PROFILE).await?;
        }
        let n = n.unwrap_or(0) + 1;
        s.insert("counter", &n).await?;
        Ok(n.to_string())
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
            .layer(layer)
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
        } => driver::run(&stores, seconds, runs, floor).await,
        Command::Correctness { stores, trials } => driver::correctness(&stores, trials).await,
        Command::Chart => driver::redraw(),
        Command::Drivers => drivers::run().await,
        Command::Layer { .. } | Command::LayerWorker { .. } => {
            unreachable!("run without the multi-threaded runtime")
        }
    }
}
