//! `scale sessions`: `/read` and `/incr` on a store holding a million sessions against the
//! same on one holding a thousand, two servers, wrk runs interleaved.

use std::fmt::Write as _;
use std::path::Path;

use crate::driver::{self, PORT, Sample, Server, median, start, wrk};

use super::seed::{self, Deadline, Seeded};

/// The cookies wrk rotates over the large store: a uniform sample of it.
const SAMPLE: usize = 100_000;
const ROUTES: [&str; 2] = ["read", "incr"];

/// One seeded store and the server on it.
struct Served {
    server: Server,
    seeded: Seeded,
}

pub(crate) async fn run(stores: &str, large: usize, small: usize, seconds: u32, runs: usize) {
    let dir = driver::tempdir();
    let lua = dir.join("rotate.lua");
    std::fs::write(&lua, driver::ROTATE_LUA).expect("write rotate.lua");
    let mut report = String::from(
        "| store | route | large: req/s | p99 ms | small: req/s | p99 ms | large / small req/s | p99 large / small | errors |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut seeding = String::new();
    for (i, store) in stores.split(',').enumerate() {
        let port = PORT + 40 + 2 * u16::try_from(i).expect("few stores");
        let big = serve(store, &format!("scale_{large}"), large, SAMPLE, port, &dir).await;
        let little = serve(
            store,
            &format!("scale_{small}"),
            small,
            small,
            port + 1,
            &dir,
        )
        .await;
        let _ = writeln!(
            seeding,
            "{store}: {large} sessions {}, {small} sessions {}",
            took(big.seeded.seconds),
            took(little.seeded.seconds)
        );
        for (route, (on_large, on_small)) in ROUTES
            .iter()
            .zip(measure(&big, &little, seconds, runs, &lua))
        {
            row(
                &mut report,
                store,
                route,
                median(on_large),
                median(on_small),
            );
        }
        println!("{report}\n{seeding}");
    }
}

fn took(seconds: Option<f64>) -> String {
    seconds.map_or_else(
        || "(seeded by an earlier run)".to_owned(),
        |s| format!("seeded in {s:.1} s"),
    )
}

async fn serve(store: &str, table: &str, n: usize, sample: usize, port: u16, dir: &Path) -> Served {
    let seeded = seed::seed(store, table, n, sample, Deadline::Live).await;
    let server = start(
        "sessionkit",
        &seed::url(store, table),
        dir,
        port,
        None,
        false,
    )
    .await;
    Served { server, seeded }
}

/// Per route, the large store's and the small store's samples; runs alternate which goes first.
fn measure(
    big: &Served,
    little: &Served,
    seconds: u32,
    runs: usize,
    lua: &Path,
) -> Vec<(Vec<Sample>, Vec<Sample>)> {
    let mut samples = vec![(Vec::new(), Vec::new()); ROUTES.len()];
    for run in 0..runs.max(1) {
        for (route, (on_large, on_small)) in ROUTES.iter().zip(samples.iter_mut()) {
            let one = |s: &Served| wrk(&s.server, route, seconds, lua, &s.seeded.cookies);
            if run % 2 == 0 {
                on_large.push(one(big));
                on_small.push(one(little));
            } else {
                on_small.push(one(little));
                on_large.push(one(big));
            }
        }
    }
    samples
}

fn row(report: &mut String, store: &str, route: &str, large: Sample, small: Sample) {
    let _ = writeln!(
        report,
        "| {store} | /{route} | {:.0} | {:.2} | {:.0} | {:.2} | **{:.2}** | {:.2} | {} |",
        large.requests_per_second,
        large.p99_ms,
        small.requests_per_second,
        small.p99_ms,
        large.requests_per_second / small.requests_per_second.max(f64::MIN_POSITIVE),
        large.p99_ms / small.p99_ms,
        large.errors + small.errors
    );
}
