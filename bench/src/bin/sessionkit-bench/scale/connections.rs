//! `scale connections`: `/read` and `/incr` with 64, 1,000 and 10,000 wrk connections, both
//! libraries on each store, runs interleaved. Needs `ulimit -n` above the largest count (wrk
//! and the app server each hold one socket per connection, each under the limit it inherits
//! from this process).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::driver::{self, LIBS, PORT, Sample, Server, new_session, start, wrk_with};

/// Sessions per library and store.
const SESSIONS: usize = 1000;
const ROUTES: [&str; 2] = ["read", "incr"];

pub(crate) async fn run(stores: &str, connections: &str, seconds: u32) {
    let counts = super::numbers(connections);
    check_file_limit(counts.iter().copied().max().unwrap_or(0));
    let dir = driver::tempdir();
    let lua = dir.join("rotate.lua");
    std::fs::write(&lua, driver::ROTATE_LUA).expect("write rotate.lua");
    let mut report = String::from(
        "| store | connections | route | sessionkit req/s | p50 ms | p99 ms | errors | tower-sessions req/s | p50 ms | p99 ms | errors |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (i, store) in stores.split(',').enumerate() {
        let mut served = Vec::new();
        for (j, lib) in LIBS.into_iter().enumerate() {
            let port = PORT + 100 + u16::try_from(2 * i + j).expect("few stores");
            served.push(serve(lib, store, port, &dir).await);
        }
        for &count in &counts {
            for route in ROUTES {
                let samples: Vec<Sample> = served
                    .iter()
                    .map(|(server, cookies)| wrk_with(server, route, seconds, &lua, cookies, count))
                    .collect();
                let _ = writeln!(
                    report,
                    "| {store} | {count} | /{route} | {} | {} |",
                    cells(samples[0]),
                    cells(samples[1])
                );
            }
        }
        println!("{report}");
    }
}

/// Refuses to start when this process may not open enough sockets for `connections`.
fn check_file_limit(connections: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    assert!(
        soft > connections + 100,
        "`ulimit -n` is {soft}: raise it above {} for {connections} connections",
        connections + 100
    );
}

async fn serve(lib: &str, store: &str, port: u16, dir: &Path) -> (Server, PathBuf) {
    let server = start(lib, store, dir, port, None, false).await;
    let client = reqwest::Client::new();
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        cookies.push(new_session(&client, &server).await);
    }
    let file = dir.join(format!("connections-{store}-{lib}.cookies"));
    std::fs::write(&file, cookies.join("\n")).expect("write the cookies");
    (server, file)
}

fn cells(s: Sample) -> String {
    format!(
        "{:.0} | {:.2} | {:.2} | {}",
        s.requests_per_second, s.p50_ms, s.p99_ms, s.errors
    )
}
