//! `sessionkit-bench layer`: the CPU one request costs in each library's session layer, measured
//! in-process (no sockets, no kernel, no wrk): the bench app's router is called directly with
//! the same rotating cookies the HTTP run uses, on the memory store.
//!
//! Two measurements per library and route:
//! - instructions per request, counted by `valgrind --tool=callgrind` on this same binary
//!   (`layer-worker`) at two request counts, so set-up cancels out: deterministic, and so
//!   comparable across machines and runs, unlike a clock on a shared 2-core machine;
//! - wall-clock nanoseconds per request on one thread (noisy; printed beside the count).

use std::process::Command;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use tower::ServiceExt;

/// Sessions created before the measured requests (their cookies rotate, as in the HTTP run).
const SESSIONS: usize = 100;

async fn app(lib: &str) -> Router {
    let app = match lib {
        "sessionkit" => super::sk::app("memory").await,
        "tower-sessions" => super::ts::app("memory").await,
        "raw" => super::raw::app("memory").await,
        other => panic!("unknown library {other}"),
    };
    app.route("/none", axum::routing::get(|| async { "none" }))
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

/// Runs `requests` requests of `route` in-process; returns the wall time per request.
async fn drive(lib: &str, route: &str, requests: usize) -> f64 {
    let app = app(lib).await;
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
    let started = Instant::now();
    for i in 0..requests {
        let response = call(&app, &path, Some(&cookies[i % SESSIONS])).await;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        std::hint::black_box(body);
    }
    started.elapsed().as_nanos() as f64 / requests.max(1) as f64
}

/// `layer-worker`: what the valgrind runs execute.
pub(crate) fn worker(lib: &str, route: &str, requests: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let ns = runtime.block_on(drive(lib, route, requests));
    println!("{ns:.0} ns/request");
}

/// Instructions the worker executes for `requests` requests, as callgrind counts them.
fn instructions(lib: &str, route: &str, requests: usize) -> u64 {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["layer-worker", "--lib", lib, "--route", route, "--requests"])
        .arg(requests.to_string())
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
pub(crate) fn run(libs: &str, routes: &str, requests: usize) {
    let (few, many) = (requests / 5, requests);
    println!("| route | library | instructions / request | vs raw | ns / request (1 thread) |");
    println!("|---|---|---|---|---|");
    for route in routes.split(',') {
        let mut raw = None;
        for lib in libs.split(',') {
            let per_request = (instructions(lib, route, many) - instructions(lib, route, few))
                as f64
                / (many - few) as f64;
            if lib == "raw" {
                raw = Some(per_request);
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let ns = runtime.block_on(drive(lib, route, many * 10));
            let ratio = raw.map_or("–".to_owned(), |raw| format!("{:.2}", per_request / raw));
            println!("| /{route} | {lib} | {per_request:.0} | {ratio} | {ns:.0} |");
        }
    }
}
