//! `sessionkit-bench layer`: the CPU one request costs in each library's session layer, measured
//! in-process (no sockets, no kernel, no wrk): the bench app's router is called directly with
//! the same rotating cookies the HTTP run uses, on the memory store (or, with `--store redis`,
//! on Redis: then the counts are the client's side, and the Redis server's own CPU per request
//! is read from its `INFO commandstats`).
//!
//! Measurements per library and route:
//! - instructions per request, counted by `valgrind --tool=callgrind` on this same binary
//!   (`layer-worker`) at two request counts, so set-up cancels out: deterministic, and so
//!   comparable across machines and runs, unlike a clock on a shared 2-core machine;
//! - of those, the instructions inside SHA-256 (`sessionkit` hashes every id into its store
//!   key): valgrind does not emulate the SHA-NI instructions, so under it `sha2` falls back to
//!   software (~3,500 instructions per hash); natively a hash takes ~60 ns (`cargo bench -p
//!   sessionkit-core`, `id/hash`). The table shows the count without them beside the total;
//! - wall-clock nanoseconds per request on one thread (noisy; printed beside the count).

use std::process::Command;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use tower::ServiceExt;

/// Sessions created before the measured requests (their cookies rotate, as in the HTTP run).
const SESSIONS: usize = 100;

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
struct Measured {
    nanoseconds: f64,
    /// Redis only: the server's CPU (µs) and commands, from `INFO commandstats`.
    redis: Option<(f64, f64)>,
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

/// Runs `requests` requests of `route` in-process.
async fn drive(lib: &str, store: &str, route: &str, requests: usize) -> Measured {
    let app = super::app(lib, store).await;
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let response = call(&app, "/incr", None).await;
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
    let mut redis = if store == "redis" {
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
        let response = call(&app, &path, Some(&cookies[i % SESSIONS])).await;
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

/// `layer-worker`: what the valgrind runs execute.
pub(crate) fn worker(lib: &str, store: &str, route: &str, requests: usize) {
    let measured = runtime().block_on(drive(lib, store, route, requests));
    println!("{:.0} ns/request", measured.nanoseconds);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Instructions the worker executes for `requests` requests, as callgrind counts them: all of
/// them, or (`only`) those inside the functions matching that pattern.
fn instructions(lib: &str, store: &str, route: &str, requests: usize, only: Option<&str>) -> u64 {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut valgrind = Command::new("valgrind");
    valgrind.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"]);
    if let Some(pattern) = only {
        valgrind.arg(format!("--toggle-collect={pattern}"));
    }
    let output = valgrind
        .arg(exe)
        .args([
            "layer-worker",
            "--lib",
            lib,
            "--store",
            store,
            "--route",
            route,
        ])
        .args(["--requests", &requests.to_string()])
        .output()
        .expect("valgrind (apt-get install valgrind)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "layer-worker failed: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output: {stderr}"))
}

/// `layer`: instructions and wall time per request for each library and route.
pub(crate) fn run(libs: &str, store: &str, routes: &str, requests: usize) {
    let (few, many) = (requests / 5, requests);
    let per_request = |lib: &str, route: &str, only: Option<&str>| {
        let difference = instructions(lib, store, route, many, only)
            .saturating_sub(instructions(lib, store, route, few, only));
        difference as f64 / (many - few) as f64
    };
    println!("Store: {store}. Instructions per request (callgrind), without SHA-256 and in all;");
    println!("the ratio is to the raw floor, without SHA-256.");
    println!();
    print!(
        "| route | library | instructions / request | SHA-256 | in all | vs raw | ns / request |"
    );
    println!(
        "{}",
        if store == "redis" {
            " Redis µs / request | Redis commands / request |"
        } else {
            ""
        }
    );
    println!(
        "|---|---|---|---|---|---|---|{}",
        if store == "redis" { "---|---|" } else { "" }
    );
    for route in routes.split(',') {
        let mut raw = None;
        for lib in libs.split(',') {
            let all = per_request(lib, route, None);
            let sha = per_request(lib, route, Some("*sha256*compress*"));
            let own = all - sha;
            if lib == "raw" {
                raw = Some(own);
            }
            let measured = runtime().block_on(drive(lib, store, route, many * 10));
            let ratio = raw.map_or("–".to_owned(), |raw| format!("{:.2}", own / raw));
            let ns = measured.nanoseconds;
            print!("| /{route} | {lib} | {own:.0} | {sha:.0} | {all:.0} | {ratio} | {ns:.0} |");
            match measured.redis {
                Some((usec, calls)) => println!(" {usec:.2} | {calls:.2} |"),
                None => println!(),
            }
        }
    }
}
