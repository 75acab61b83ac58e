//! `partial`: what a request that reads one small key pays for the rest of a large session.
//!
//! For each store, both libraries are served at once; each gets [`SMALL`] small sessions (a
//! counter and a ~150-byte profile, from `/incr`) and [`LARGE`] large ones (the same, plus
//! `/fill/10`: ten values of ~1 MiB in other keys). Then, run by run, wrk drives `/read` (the
//! counter) over the small cookies and over the large ones, each library in turn; the medians
//! and the large / small ratio per library are printed. On redb, sessionkit alone (tower-sessions
//! has no redb store).

use std::fmt::Write as _;

use crate::driver::{self, LIBS, PORT, Sample, median, new_session, start, wrk};

/// Small sessions per library and store.
const SMALL: usize = 100;
/// Large sessions per library and store (each ~10 MiB).
const LARGE: usize = 10;
/// The `/fill/{n}` of a large session: ~1 MiB values.
const FILL: usize = 10;

pub(crate) async fn run(stores: &str, seconds: u32, runs: usize) {
    let dir = driver::tempdir();
    let lua = dir.join("rotate.lua");
    std::fs::write(&lua, driver::ROTATE_LUA).expect("write rotate.lua");
    let client = reqwest::Client::new();
    let mut report = String::from(
        "| store | library | small: req/s | p99 ms | large: req/s | p99 ms | large / small |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for store in stores.split(',') {
        let mut servers = Vec::new();
        // tower-sessions has no redb store.
        let libs = if store == "redb" {
            &LIBS[..1]
        } else {
            &LIBS[..]
        };
        for (i, lib) in libs.iter().enumerate() {
            let port = PORT + 20 + u16::try_from(i).expect("few libraries");
            let server = start(lib, store, &dir, port, None, false).await;
            let mut small = Vec::new();
            for _ in 0..SMALL {
                small.push(new_session(&client, &server).await);
            }
            let mut large = Vec::new();
            for _ in 0..LARGE {
                let cookie = new_session(&client, &server).await;
                let url = format!("{}/fill/{FILL}", server.base());
                let status = driver::get_status(&client, &url, &cookie).await;
                if status != 200 {
                    // tower-sessions' MySQL table keeps a session in a BLOB (64 KiB at most).
                    let _ = writeln!(
                        report,
                        "| {store} | {lib} | | | cannot store a {FILL} MiB session (HTTP {status}) | | |"
                    );
                    large.clear();
                    break;
                }
                large.push(cookie);
            }
            if large.is_empty() {
                continue;
            }
            let small_file = dir.join(format!("{store}-{lib}-small.txt"));
            let large_file = dir.join(format!("{store}-{lib}-large.txt"));
            std::fs::write(&small_file, small.join("\n")).expect("cookies");
            std::fs::write(&large_file, large.join("\n")).expect("cookies");
            servers.push((*lib, server, small_file, large_file));
        }
        let mut samples: Vec<(Vec<Sample>, Vec<Sample>)> = vec![Default::default(); servers.len()];
        for _ in 0..runs {
            for ((_, server, small, large), (on_small, on_large)) in
                servers.iter().zip(samples.iter_mut())
            {
                on_small.push(wrk(server, "read", seconds, &lua, small));
                on_large.push(wrk(server, "read", seconds, &lua, large));
            }
        }
        for ((lib, ..), (on_small, on_large)) in servers.iter().zip(samples) {
            let (small, large) = (median(on_small), median(on_large));
            let ratio = large.requests_per_second / small.requests_per_second;
            let errors = small.errors + large.errors;
            let _ = writeln!(
                report,
                "| {store} | {lib} | {:.0} | {:.2} | {:.0} | {:.2} | {ratio:.2}{} |",
                small.requests_per_second,
                small.p99_ms,
                large.requests_per_second,
                large.p99_ms,
                if errors > 0 {
                    format!(" ({errors} errors)")
                } else {
                    String::new()
                }
            );
        }
        println!("{report}");
    }
}
