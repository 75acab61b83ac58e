//! The side-by-side benchmark: the same axum app on sessionkit and on tower-sessions.
//!
//! Build and run everything with one command, from the repository root:
//! `bench/bench.sh COMMAND [OPTIONS]` (it builds this binary and the tower-sessions app, which
//! lives in a workspace of its own, `bench/tower-sessions`, then runs this binary).
//!
//! - `sessionkit-bench serve --lib sessionkit|raw|raw-pipelined --store memory|sqlite|postgres|mysql|redis --port N`
//!   (`raw`: the floor, the same `/read` and `/incr` as one driver call each, no session layer;
//!   memory, postgres, mysql and redis; `raw-pipelined`: the same on Redis, on sessionkit's own
//!   connection). `--lib tower-sessions` is served by `tower-sessions-app serve`.
//! - `sessionkit-bench run [--stores …] [--seconds 10] [--runs 3] [--floor] [--baseline PATH]
//!   [--tls]`: for each store, serves each library in turn, pre-creates 1000 sessions, drives wrk (2 threads, 64 connections, cookies
//!   rotated by `rotate.lua`) on `/none`, `/read` and `/incr`, and prints the medians and the
//!   sessionkit / tower-sessions ratios; writes `docs/bench-results.json` and `docs/bench-chart.svg`.
//!   With `--baseline PATH` (another build of this binary), that build's sessionkit runs
//!   interleaved with this one's and a table compares them; with `--tls`, sessionkit on the
//!   store's plain server and on its TLS one (postgres, redis).
//! - `sessionkit-bench correctness [--stores …] [--trials 10]`: 100 concurrent `/add/{k}` on one
//!   cookie (how many keys survive), 100 concurrent `/push/{k}` to one list (how many items
//!   survive), and a slow request racing a logout (does the session come back).
//! - `sessionkit-bench contended [--stores …] [--seconds 10] [--connections 64] [--baseline PATH]`:
//!   every connection increments one session's counter; req/s, p50/p99, conflicts per request,
//!   and whether the final counter equals the 200 responses.
//! - `sessionkit-bench partial [--stores …] [--seconds 10] [--runs 3]`: `/read` on sessions
//!   that also hold ~10 MiB in other keys (`/fill/10`), next to `/read` on small sessions, for
//!   both libraries on each store; prints the medians and the large / small ratios.
//! - `sessionkit-bench scale sessions|purge|values|connections|memory|cli|clean`: how the cost
//!   grows with a million sessions in the store, a purge of a million expired ones under load,
//!   values of 1 KiB to 1 MiB, 1,000 and 10,000 connections, the memory store's bytes per
//!   session, and the `sessionkit` CLI over a large store (`scale.rs`).
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
mod partial;
mod raw;
mod scale;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    App(bench_harness::AppCommand),
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
        /// sessionkit on each store (postgres, redis) in plain text and over verified TLS
        /// (the servers of `.ci/services`), interleaved; a table compares the two (nothing is
        /// written to docs/).
        #[arg(long)]
        tls: bool,
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
    /// `/read` of one small key on sessions that also hold ~10 MiB in other keys, next to the
    /// same request on small sessions, per store and library.
    Partial {
        #[arg(long, default_value = "sqlite,postgres,mysql,redis,redb")]
        stores: String,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// How the cost grows: sessions in the store, purges under load, session size,
    /// connections, memory per session, the CLI over a large store (issue 22).
    #[command(subcommand)]
    Scale(scale::Scale),
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
}

mod sk {
    use super::*;
    use bench_harness::{PROFILE, blob_value, distinct, fill_values};
    use sessionkit::tower::{CookieConfig, SessionError, SessionLayer, WebConfig};
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
    /// Makes the session large: `n` values of about 1 MiB in other keys than `counter`.
    async fn fill(s: Session, Path(n): Path<usize>) -> Result<&'static str, SessionError> {
        for (key, value) in fill_values(n) {
            s.insert(&key, &value).await?;
        }
        Ok("ok")
    }
    /// One value of `kib` KiB under `blob` (`scale values`).
    async fn blob(s: Session, Path(kib): Path<usize>) -> Result<&'static str, SessionError> {
        s.insert("blob", &blob_value(kib)).await?;
        Ok("ok")
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

    /// The CA of the TLS test servers `.ci/services` starts.
    const TLS_CA: &str = "/tmp/sessionkit-tls/ca.pem";

    pub(crate) async fn app(store: &str) -> Router {
        let url = match store {
            "memory" => "memory:".to_owned(),
            "sqlite" => {
                let _ = std::fs::remove_file("bench-sessionkit.db");
                "sqlite://bench-sessionkit.db".to_owned()
            }
            // Embedded, sessionkit only (tower-sessions has no redb store): `partial` runs it.
            "redb" => {
                let _ = std::fs::remove_file("bench-sessionkit.redb");
                "redb://bench-sessionkit.redb".to_owned()
            }
            "postgres" => {
                "postgres://root@127.0.0.1:5432/test?table=bench_sessionkit&setup=true&sslmode=disable"
                    .to_owned()
            }
            // The TLS-only login of `.ci/services`, verifying the server's certificate.
            "postgres-tls" => format!(
                "postgres://sktest_scram:scram-secret-1@localhost:5432/test?table=bench_sessionkit&setup=true&sslmode=verify-full&sslrootcert={TLS_CA}"
            ),
            "mysql" => {
                "mysql://root@127.0.0.1:3306/test?table=bench_sessionkit&setup=true".to_owned()
            }
            "redis" => "redis://127.0.0.1:6379?namespace=bench_sessionkit".to_owned(),
            "redis-tls" => format!(
                "rediss://sessionkit:acl-secret-1@localhost:6380?namespace=bench_sessionkit&tls_ca={TLS_CA}"
            ),
            // A URL of its own (`scale`: tables, namespaces and files seeded beforehand).
            url if url.contains(':') => url.to_owned(),
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
        let manager = SessionManager::builder(store).build().expect("manager");
        let web = WebConfig::default()
            .with_cookie(CookieConfig::default().with_name("id").with_secure(false));
        let layer = SessionLayer::with_config(manager, web).expect("layer");
        Router::new()
            .route("/read", get(read))
            .route("/incr", get(incr))
            .route("/add/{k}", get(add))
            .route("/count/{n}", get(count))
            .route("/logout", get(logout))
            .route("/slow-add/{k}/{ms}", get(slow_add))
            .route("/push/{k}", get(push))
            .route("/pushed", get(pushed))
            .route("/fill/{n}", get(fill))
            .route("/blob/{kib}", get(blob))
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

/// The bench app on `lib` (this binary serves sessionkit and the raw floors; tower-sessions
/// has a binary of its own, `bench/tower-sessions`).
async fn app(lib: String, store: String) -> Router {
    match lib.as_str() {
        "sessionkit" => sk::app(&store).await,
        "raw" => raw::app(&store, false).await,
        "raw-pipelined" => raw::app(&store, true).await,
        other => {
            panic!("unknown library {other} (tower-sessions is served by bench/tower-sessions)")
        }
    }
}

fn main() {
    match Cli::parse().command {
        Command::App(command) => bench_harness::run(command, app),
        // Builds its own single-threaded runtimes: instruction counts of one thread.
        Command::Layer {
            libs,
            store,
            routes,
            requests,
        } => layer::run(&libs, &store, &routes, requests),
        command => tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(drive(command)),
    }
}

async fn drive(command: Command) {
    match command {
        Command::Run {
            stores,
            seconds,
            runs,
            floor,
            baseline,
            tls,
        } => driver::run(&stores, seconds, runs, floor, baseline.as_deref(), tls).await,
        Command::Contended {
            stores,
            seconds,
            connections,
            baseline,
        } => contended::run(&stores, seconds, connections, baseline.as_deref()).await,
        Command::Correctness { stores, trials } => driver::correctness(&stores, trials).await,
        Command::Partial {
            stores,
            seconds,
            runs,
        } => partial::run(&stores, seconds, runs).await,
        Command::Scale(command) => scale::run(command).await,
        Command::Chart => driver::redraw(),
        Command::Drivers => drivers::run().await,
        Command::App(_) | Command::Layer { .. } => unreachable!("run without this runtime"),
    }
}
