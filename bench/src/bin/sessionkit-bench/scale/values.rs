//! `scale values`: `/read` and `/incr` on sessions that also hold one value of 1 KiB to 1 MiB
//! (`/blob/{kib}`), for both libraries on each store; runs interleaved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::driver::{
    self, LIBS, PORT, Sample, Server, get_status, median, new_session, start, wrk,
};

/// Sessions per library, store and size.
const SESSIONS: usize = 100;
const ROUTES: [&str; 2] = ["read", "incr"];

/// One library's server on a store, and a cookie file per size (`None`: it cannot store it).
struct Served {
    lib: &'static str,
    server: Server,
    cookies: Vec<Option<PathBuf>>,
}

pub(crate) async fn run(stores: &str, sizes: &str, seconds: u32, runs: usize) {
    let sizes = super::numbers(sizes);
    let dir = driver::tempdir();
    let lua = dir.join("rotate.lua");
    std::fs::write(&lua, driver::ROTATE_LUA).expect("write rotate.lua");
    let mut report = String::from(
        "| store | size | route | sessionkit req/s | p50 ms | p99 ms | tower-sessions req/s | p50 ms | p99 ms | ratio |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (i, store) in stores.split(',').enumerate() {
        let mut served = Vec::new();
        for (j, lib) in LIBS.into_iter().enumerate() {
            let port = PORT + 80 + u16::try_from(2 * i + j).expect("few stores");
            served.push(serve(lib, store, port, &sizes, &dir).await);
        }
        for (s, kib) in sizes.iter().enumerate() {
            for route in ROUTES {
                let medians = measure(&served, s, route, seconds, runs, &lua);
                row(&mut report, store, *kib, route, &medians);
            }
        }
        println!("{report}");
    }
}

async fn serve(lib: &'static str, store: &str, port: u16, sizes: &[usize], dir: &Path) -> Served {
    let server = start(lib, store, dir, port, None, false).await;
    let client = reqwest::Client::new();
    let mut cookies = Vec::new();
    for kib in sizes {
        let mut made = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            let cookie = new_session(&client, &server).await;
            let url = format!("{}/blob/{kib}", server.base());
            if get_status(&client, &url, &cookie).await != 200 {
                made.clear();
                break;
            }
            made.push(cookie);
        }
        cookies.push((!made.is_empty()).then(|| {
            let file = dir.join(format!("values-{store}-{lib}-{kib}.cookies"));
            std::fs::write(&file, made.join("\n")).expect("write the cookies");
            file
        }));
    }
    Served {
        lib,
        server,
        cookies,
    }
}

/// The median of `runs` wrk runs of `route` on the sessions of size number `size`, per
/// library (runs alternate between the libraries).
fn measure(
    served: &[Served],
    size: usize,
    route: &str,
    seconds: u32,
    runs: usize,
    lua: &Path,
) -> Vec<(&'static str, Option<Sample>)> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); served.len()];
    for _ in 0..runs.max(1) {
        for (s, on) in served.iter().zip(samples.iter_mut()) {
            if let Some(cookies) = &s.cookies[size] {
                on.push(wrk(&s.server, route, seconds, lua, cookies));
            }
        }
    }
    served
        .iter()
        .zip(samples)
        .map(|(s, on)| (s.lib, (!on.is_empty()).then(|| median(on))))
        .collect()
}

fn cells(sample: Option<Sample>) -> String {
    sample.map_or_else(
        || "cannot store it | | ".to_owned(),
        |s| {
            let errors = if s.errors > 0 {
                format!(" ({} errors)", s.errors)
            } else {
                String::new()
            };
            format!(
                "{:.0}{errors} | {:.2} | {:.2}",
                s.requests_per_second, s.p50_ms, s.p99_ms
            )
        },
    )
}

fn row(
    report: &mut String,
    store: &str,
    kib: usize,
    route: &str,
    medians: &[(&str, Option<Sample>)],
) {
    let find = |lib: &str| {
        medians
            .iter()
            .find(|(l, _)| *l == lib)
            .and_then(|(_, s)| *s)
    };
    let (ours, theirs) = (find("sessionkit"), find("tower-sessions"));
    let ratio = match (ours, theirs) {
        (Some(a), Some(b)) => format!(
            "**{:.2}×**",
            a.requests_per_second / b.requests_per_second.max(f64::MIN_POSITIVE)
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        report,
        "| {store} | {kib} KiB | /{route} | {} | {} | {ratio} |",
        cells(ours),
        cells(theirs)
    );
}
