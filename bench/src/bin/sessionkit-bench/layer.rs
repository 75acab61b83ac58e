//! `sessionkit-bench layer`: the CPU one request costs in each library's session layer, measured
//! in-process (no sockets, no kernel, no wrk): the bench app's router is called directly with
//! the same rotating cookies the HTTP run uses, on the memory store (or, with `--store redis`,
//! on Redis: then the counts are the client's side, and the Redis server's own CPU per request
//! is read from its `INFO commandstats`).
//!
//! Measurements per library and route:
//! - instructions per request, counted by `valgrind --tool=callgrind` on the library's app
//!   binary (`layer-worker`: this one, or the tower-sessions app) at two request counts, so set-up cancels out: deterministic, and so
//!   comparable across machines and runs, unlike a clock on a shared 2-core machine;
//! - of those, the instructions inside SHA-256 (`sessionkit` hashes every id into its store
//!   key): valgrind does not emulate the SHA-NI instructions, so under it `sha2` falls back to
//!   software (~3,500 instructions per hash); natively a hash takes ~60 ns (`cargo bench -p
//!   sessionkit-core`, `id/hash`). The table shows the count without them beside the total;
//! - wall-clock nanoseconds per request on one thread (noisy; printed beside the count).

use std::process::Command;

use crate::driver::app_binary;

/// The `layer-worker` command line of `lib`'s app binary.
fn worker(lib: &str, store: &str, route: &str, requests: usize) -> Command {
    let (exe, served) = app_binary(lib, None);
    let mut command = Command::new(exe);
    command
        .args([
            "layer-worker",
            "--lib",
            served,
            "--store",
            store,
            "--route",
            route,
        ])
        .args(["--requests", &requests.to_string()]);
    command
}

/// What one in-process run measured, per request: wall-clock nanoseconds, and on Redis the
/// server's CPU (µs) and commands, as the worker prints them.
struct Measured {
    nanoseconds: f64,
    redis: Option<(f64, f64)>,
}

/// Runs the worker natively (no valgrind) and reads what it printed.
fn timed(lib: &str, store: &str, route: &str, requests: usize) -> Measured {
    let output = worker(lib, store, route, requests)
        .output()
        .expect("run the layer worker");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "layer-worker failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let number = |suffix: &str| {
        stdout
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1] == suffix)
            .and_then(|w| w[0].parse::<f64>().ok())
    };
    Measured {
        nanoseconds: number("ns/request").unwrap_or(f64::NAN),
        redis: number("redis-usec/request").zip(number("redis-calls/request")),
    }
}

/// Instructions the worker executes for `requests` requests, as callgrind counts them: all of
/// them, or (`only`) those inside the functions matching that pattern.
fn instructions(lib: &str, store: &str, route: &str, requests: usize, only: Option<&str>) -> u64 {
    let native = worker(lib, store, route, requests);
    let mut valgrind = Command::new("valgrind");
    valgrind.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"]);
    if let Some(pattern) = only {
        valgrind.arg(format!("--toggle-collect={pattern}"));
    }
    let output = valgrind
        .arg(native.get_program())
        .args(native.get_args())
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
            let measured = timed(lib, store, route, many * 10);
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
