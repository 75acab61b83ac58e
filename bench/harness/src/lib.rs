//! What every app server of the side-by-side benchmark shares, whichever session library it
//! runs on: the profile text `/incr` stores, the `serve` and `layer-worker` commands, and the
//! in-process driver that `sessionkit-bench layer` measures under callgrind.
//!
//! An app server is a binary whose `main` calls [`main`] with a function building its axum
//! router for a `(library, store)` pair. The sessionkit app lives in `sessionkit-bench`; the
//! tower-sessions app in its own workspace (`bench/tower-sessions`), because tower-sessions'
//! SQLite store links an SQLite that sessionkit's does not.

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use clap::{Parser, Subcommand};
use tower::ServiceExt;

/// What `/incr` stores beside the counter when it creates a session: a typical profile.
pub const PROFILE: &str = "Alice Example <alice@example.com>; roles=customer,beta; locale=en-GB; theme=dark; \
                           timezone=Europe/London; newsletter=weekly; plan=pro; since=2021-04-01";

/// Sessions created before the measured requests of `layer-worker` (their cookies rotate, as
/// in the HTTP run).
const SESSIONS: usize = 100;

/// How many different items a pushed list holds (a lost push is missing; a push applied
/// twice would count once).
/// `/fill/{n}` stores `n` values of this many bytes (keys `blob0`, `blob1`, …): just under
/// 1 MiB each, under sessionkit's default value limit once encoded.
pub const FILL_VALUE_BYTES: usize = 1024 * 1024 - 64;

/// The `n` values `/fill/{n}` stores, as (key, text): strings, which both libraries store
/// compactly.
pub fn fill_values(n: usize) -> impl Iterator<Item = (String, String)> {
    (0..n).map(|i| (format!("blob{i}"), "x".repeat(FILL_VALUE_BYTES)))
}

/// The value `/blob/{kib}` stores under `blob`: `kib` KiB less 64 bytes (so that 1024 KiB is
/// just under sessionkit's default value limit once encoded, like [`FILL_VALUE_BYTES`]).
pub fn blob_value(kib: usize) -> String {
    "x".repeat((kib * 1024).saturating_sub(64))
}

pub fn distinct(mut list: Vec<String>) -> usize {
    list.sort_unstable();
    list.dedup();
    list.len()
}

/// The commands of an app server.
#[derive(Subcommand)]
pub enum AppCommand {
    /// Serves the bench app on 127.0.0.1:PORT.
    Serve {
        /// The session library (or floor) to serve.
        #[arg(long)]
        lib: String,
        /// memory, sqlite, postgres, mysql or redis.
        #[arg(long)]
        store: String,
        /// The port on 127.0.0.1.
        #[arg(long)]
        port: u16,
    },
    /// Runs REQUESTS requests of ROUTE in-process and prints the time per request (what
    /// `sessionkit-bench layer` runs under valgrind).
    LayerWorker {
        /// The session library (or floor) to call.
        #[arg(long)]
        lib: String,
        /// memory or redis.
        #[arg(long)]
        store: String,
        /// none, read or incr.
        #[arg(long)]
        route: String,
        /// How many requests.
        #[arg(long)]
        requests: usize,
    },
}

#[derive(Parser)]
struct AppCli {
    #[command(subcommand)]
    command: AppCommand,
}

/// The `main` of an app server: parses `serve` or `layer-worker` and runs it on `app`.
pub fn main<F, Fut>(app: F)
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Router>,
{
    run(AppCli::parse().command, app);
}

/// Runs one app server command on `app`.
pub fn run<F, Fut>(command: AppCommand, app: F)
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Router>,
{
    match command {
        AppCommand::Serve { lib, store, port } => tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(async move {
                let app = with_none(app(lib, store).await);
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind");
                axum::serve(listener, app).await.expect("serve");
            }),
        AppCommand::LayerWorker {
            lib,
            store,
            route,
            requests,
        } => {
            let redis = store == "redis";
            let measured = current_thread().block_on(async move {
                let app = with_none(app(lib, store).await);
                drive(&app, redis, &route, requests).await
            });
            println!("{:.0} ns/request", measured.nanoseconds);
            if let Some((usec, calls)) = measured.redis {
                println!("{usec:.3} redis-usec/request {calls:.3} redis-calls/request");
            }
        }
    }
}

/// `/none`, outside the session layer: the HTTP floor.
fn with_none(app: Router) -> Router {
    app.route("/none", get(|| async { "none" }))
}

/// A single-threaded runtime: instruction counts of one thread.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn call(app: &Router, path: &str, cookie: Option<&str>) -> axum::response::Response {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(Body::empty()).expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response
}

/// What one in-process run measured, per request.
pub struct Measured {
    /// Wall-clock nanoseconds per request.
    pub nanoseconds: f64,
    /// Redis only: the server's CPU (µs) and commands, from `INFO commandstats`.
    pub redis: Option<(f64, f64)>,
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379")
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at 127.0.0.1:6379")
}

/// Total calls and microseconds over every command but the measurement's own.
fn command_totals(commandstats: &str) -> (f64, f64) {
    let mut totals = (0.0, 0.0);
    for line in commandstats.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name.starts_with("config") || name == "info" {
            continue;
        }
        let field = |key: &str| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        totals.0 += field("calls");
        totals.1 += field("usec");
    }
    totals
}

/// Runs `requests` requests of `route` through `app` in-process, after creating the sessions
/// whose cookies they rotate through; `redis`: also read the Redis server's CPU per request.
pub async fn drive(app: &Router, redis: bool, route: &str, requests: usize) -> Measured {
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let response = call(app, "/incr", None).await;
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a new session sets a cookie")
            .to_owned();
        cookies.push(cookie);
    }
    let path = format!("/{route}");
    let mut redis = if redis {
        let mut conn = redis_connection().await;
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
        Some(conn)
    } else {
        None
    };
    let started = Instant::now();
    for i in 0..requests {
        let response = call(app, &path, Some(&cookies[i % SESSIONS])).await;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        std::hint::black_box(body);
    }
    let nanoseconds = started.elapsed().as_nanos() as f64 / requests.max(1) as f64;
    let redis = match &mut redis {
        Some(conn) => {
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(conn)
                .await
                .expect("INFO commandstats");
            let (calls, usec) = command_totals(&stats);
            let n = requests.max(1) as f64;
            Some((usec / n, calls / n))
        }
        None => None,
    };
    Measured { nanoseconds, redis }
}
