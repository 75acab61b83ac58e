//! Runs both libraries (and the raw floor) side by side, each run of a route going to each in
//! turn, and measures them with wrk; checks their correctness side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

pub(crate) const LIBS: [&str; 2] = ["sessionkit", "tower-sessions"];
const ROUTES: [&str; 3] = ["none", "read", "incr"];
/// The floor's read-then-write increment (`serve --lib raw` only).
const TWO_CALL_INCR: &str = "incr2";
/// The same with a write that cannot create the record (`serve --lib raw` only).
const GUARDED_INCR: &str = "incr2g";
/// The floor's increments, each compared with the libraries' `/incr`.
const FLOOR_INCRS: [&str; 2] = [TWO_CALL_INCR, GUARDED_INCR];
pub(crate) const PORT: u16 = 38123;
/// The library name of a baseline build's sessionkit (`--baseline PATH`).
pub(crate) const BEFORE: &str = "sessionkit-before";
/// sessionkit and tower-sessions on the store's TLS server (`run --tls`).
pub(crate) const TLS: &str = "sessionkit-tls";
pub(crate) const TOWER_TLS: &str = "tower-sessions-tls";
/// Set to `1` in a `serve` process's environment: sessionkit counts conflicts.
pub(crate) const COUNT_CONFLICTS: &str = "SESSIONKIT_BENCH_COUNT_CONFLICTS";
const COOKIES: usize = 1000;

/// wrk's Lua: each request carries the next of the pre-created cookies (also used by
/// `cpu-per-request.sh`).
pub(crate) const ROTATE_LUA: &str = include_str!("../../../rotate.lua");

/// A `serve` process of this binary, killed when dropped.
pub(crate) struct Server {
    process: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Server {
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The environment variable that names the tower-sessions app binary (default: the release
/// build of `bench/tower-sessions`, which `bench/bench.sh` makes).
const TOWER_SESSIONS_APP: &str = "SESSIONKIT_BENCH_TOWER_SESSIONS_APP";

/// The binary that serves `lib`, and the library name to pass it: this one for sessionkit and
/// the floors, the tower-sessions app for tower-sessions, the `baseline` build for [`BEFORE`].
pub(crate) fn app_binary<'a>(lib: &'a str, baseline: Option<&str>) -> (PathBuf, &'a str) {
    match (lib, baseline) {
        (BEFORE, Some(path)) => (PathBuf::from(path), "sessionkit"),
        (TLS, _) => (std::env::current_exe().expect("own path"), "sessionkit"),
        ("tower-sessions" | TOWER_TLS, _) => {
            let exe = std::env::var_os(TOWER_SESSIONS_APP).map_or_else(
                || {
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tower-sessions/target/release/tower-sessions-app")
                },
                PathBuf::from,
            );
            assert!(
                exe.exists(),
                "{} is missing: build it with `bench/bench.sh` (or `cargo build --release --manifest-path bench/tower-sessions/Cargo.toml`)",
                exe.display()
            );
            (exe, "tower-sessions")
        }
        _ => (std::env::current_exe().expect("own path"), lib),
    }
}

/// Serves `lib` on `store`; [`BEFORE`] is sessionkit served by the `baseline` binary (another
/// build of this benchmark, e.g. the previous release's). `count_conflicts`: this build's
/// sessionkit counts its store's conflicts (`/conflicts`), at the cost of a wrapper around
/// every store call, so only the contention benchmark asks for it.
pub(crate) async fn start(
    lib: &str,
    store: &str,
    workdir: &Path,
    port: u16,
    baseline: Option<&str>,
    count_conflicts: bool,
) -> Server {
    let (exe, served) = app_binary(lib, baseline);
    // A directory per library: two builds of sessionkit must not share an SQLite file.
    let workdir = workdir.join(lib);
    std::fs::create_dir_all(&workdir).expect("a work directory");
    let tls_store = format!("{store}-tls");
    let store = if lib == TLS || lib == TOWER_TLS {
        &tls_store
    } else {
        store
    };
    let child = Command::new(exe)
        .args([
            "serve",
            "--lib",
            served,
            "--store",
            store,
            "--port",
            &port.to_string(),
        ])
        .current_dir(workdir)
        .env(COUNT_CONFLICTS, if count_conflicts { "1" } else { "" })
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server");
    let server = Server {
        process: child,
        port,
    };
    let started = Instant::now();
    while reqwest::get(format!("{}/none", server.base()))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{lib} on {store} did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

/// A new session per call (GET /incr without a cookie); returns its `id=…` cookie.
pub(crate) async fn new_session(client: &reqwest::Client, server: &Server) -> String {
    let response = client
        .get(format!("{}/incr", server.base()))
        .send()
        .await
        .expect("GET /incr");
    let header = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a new session sets a cookie");
    header.split(';').next().unwrap_or_default().to_owned()
}

/// `GET {url}` with the cookie; the status (0 if there was no response).
pub(crate) async fn get_status(client: &reqwest::Client, url: &str, cookie: &str) -> u16 {
    match client.get(url).header("cookie", cookie).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// `GET {base}{path}` with the cookie; the body.
async fn get(client: &reqwest::Client, base: &str, path: &str, cookie: &str) -> String {
    let response = client
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET");
    response.text().await.unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub(crate) struct Sample {
    pub(crate) requests_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
}

fn duration_ms(text: &str) -> f64 {
    let number = |suffix: &str| {
        text.trim_end_matches(suffix)
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    };
    if text.ends_with("us") {
        number("us") / 1000.0
    } else if text.ends_with("ms") {
        number("ms")
    } else if text.ends_with('s') {
        number("s") * 1000.0
    } else {
        f64::NAN
    }
}

pub(crate) fn wrk(
    server: &Server,
    route: &str,
    seconds: u32,
    lua: &Path,
    cookies: &Path,
) -> Sample {
    wrk_with(server, route, seconds, lua, cookies, 64)
}

/// [`wrk`] with `connections` connections (2 threads).
pub(crate) fn wrk_with(
    server: &Server,
    route: &str,
    seconds: u32,
    lua: &Path,
    cookies: &Path,
    connections: usize,
) -> Sample {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(lua)
        .arg(format!("{}/{route}", server.base()))
        .env("COOKIES_FILE", cookies)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut sample = Sample {
        requests_per_second: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => sample.requests_per_second = rate.parse().unwrap_or(0.0),
            ["50%", latency] => sample.p50_ms = duration_ms(latency),
            ["99%", latency] => sample.p99_ms = duration_ms(latency),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                sample.errors += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                sample.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    sample
}

pub(crate) fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    samples[samples.len() / 2]
}

#[derive(Serialize, serde::Deserialize)]
struct Row {
    store: String,
    route: String,
    lib: String,
    median: Sample,
    runs: Vec<Sample>,
}

/// The median sample of one library on one store's route, if it ran.
fn median_of(rows: &[Row], store: &str, route: &str, lib: &str) -> Option<Sample> {
    rows.iter()
        .find(|r| r.store == store && r.route == route && r.lib == lib)
        .map(|r| r.median)
}

/// Stores the `raw` floor serves (`raw.rs`).
const FLOOR_STORES: [&str; 4] = ["memory", "postgres", "mysql", "redis"];

pub(crate) async fn run(
    stores: &str,
    seconds: u32,
    runs: usize,
    floor: bool,
    baseline: Option<&str>,
    tls: bool,
) {
    let workdir = tempdir();
    let lua = workdir.join("rotate.lua");
    std::fs::write(&lua, ROTATE_LUA).expect("write rotate.lua");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut rows: Vec<Row> = Vec::new();
    for store in stores.split(',') {
        let with_floor = floor && FLOOR_STORES.contains(&store);
        // Every library's server runs at once (an idle one costs nothing), and each run of a
        // route goes to each library in turn: a slow minute of a shared machine then falls on
        // all of them, not on whichever library's runs it happened to meet.
        let mut servers = Vec::new();
        // On Redis a second floor: the same bare commands on sessionkit's own connection.
        let pipelined_floor = with_floor && store == "redis";
        // Against a baseline build, only the two builds of sessionkit run.
        let libs: &[&str] = if baseline.is_some() {
            &["sessionkit", BEFORE]
        } else if tls {
            &["sessionkit", TLS, "tower-sessions", TOWER_TLS]
        } else {
            &LIBS
        };
        for (lib, port) in libs
            .iter()
            .copied()
            .chain(with_floor.then_some("raw"))
            .chain(pipelined_floor.then_some("raw-pipelined"))
            .zip(PORT..)
        {
            let server = start(lib, store, &workdir, port, baseline, false).await;
            let mut cookies = Vec::with_capacity(COOKIES);
            for _ in 0..COOKIES {
                cookies.push(new_session(&client, &server).await);
            }
            let cookies_file = workdir.join(format!("cookies-{lib}.txt"));
            std::fs::write(&cookies_file, cookies.join("\n")).expect("write cookies");
            servers.push((lib, server, cookies_file));
        }
        // The floor also serves `/incr2` and `/incr2g`: the increment as a read then a write,
        // the two calls a session library makes around its handler.
        for route in ROUTES
            .into_iter()
            .chain(with_floor.then_some(FLOOR_INCRS).into_iter().flatten())
        {
            let serving = |lib: &str| lib == "raw" || !FLOOR_INCRS.contains(&route);
            let mut samples: Vec<(&str, Vec<Sample>)> = servers
                .iter()
                .filter(|(lib, ..)| serving(lib))
                .map(|(lib, ..)| (*lib, Vec::new()))
                .collect();
            for _ in 0..runs.max(1) {
                for (lib, server, cookies_file) in &servers {
                    if let Some((_, runs)) = samples.iter_mut().find(|(l, _)| l == lib) {
                        runs.push(wrk(server, route, seconds, &lua, cookies_file));
                    }
                }
            }
            for (lib, samples) in samples {
                let median = median(samples.clone());
                eprintln!(
                    "{store:>8} /{route:<5} {lib:<15} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                    median.requests_per_second, median.p50_ms, median.p99_ms, median.errors
                );
                rows.push(Row {
                    store: store.into(),
                    route: route.into(),
                    lib: lib.into(),
                    median,
                    runs: samples,
                });
            }
        }
    }
    let mut table = String::from(
        "| store | route | sessionkit req/s | p50 | p99 | tower-sessions req/s | p50 | p99 | ratio |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for store in stores.split(',') {
        for route in ROUTES {
            let find = |lib: &str| median_of(&rows, store, route, lib);
            if let (Some(a), Some(b)) = (find("sessionkit"), find("tower-sessions")) {
                let _ = writeln!(
                    table,
                    "| {store} | /{route} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | **{:.2}×** |",
                    a.requests_per_second,
                    a.p50_ms,
                    a.p99_ms,
                    b.requests_per_second,
                    b.p50_ms,
                    b.p99_ms,
                    a.requests_per_second / b.requests_per_second.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    println!("{table}");
    if tls {
        let mut over_tls = String::from(
            "| store | route | library | plain req/s | p99 | TLS req/s | p99 | TLS / plain |\n|---|---|---|---|---|---|---|---|\n",
        );
        for store in stores.split(',') {
            for route in ROUTES {
                let find = |lib: &str| median_of(&rows, store, route, lib);
                for (library, plain, tls) in [
                    ("sessionkit", "sessionkit", TLS),
                    ("tower-sessions", "tower-sessions", TOWER_TLS),
                ] {
                    if let (Some(plain), Some(tls)) = (find(plain), find(tls)) {
                        let _ = writeln!(
                            over_tls,
                            "| {store} | /{route} | {library} | {:.0} | {:.2} ms | {:.0} | {:.2} ms | **{:.3}** |",
                            plain.requests_per_second,
                            plain.p99_ms,
                            tls.requests_per_second,
                            tls.p99_ms,
                            tls.requests_per_second
                                / plain.requests_per_second.max(f64::MIN_POSITIVE)
                        );
                    }
                }
                if let (Some(ours), Some(theirs)) = (find(TLS), find(TOWER_TLS)) {
                    let _ = writeln!(
                        over_tls,
                        "| {store} | /{route} | sessionkit / tower-sessions, both over TLS | | | | | **{:.2}×** |",
                        ours.requests_per_second
                            / theirs.requests_per_second.max(f64::MIN_POSITIVE)
                    );
                }
            }
        }
        println!("{over_tls}");
        return;
    }
    if baseline.is_some() {
        let mut before = String::from(
            "| store | route | sessionkit (this build) req/s | p99 | sessionkit (baseline) req/s | p99 | this / baseline |\n|---|---|---|---|---|---|---|\n",
        );
        for store in stores.split(',') {
            for route in ROUTES {
                let find = |lib: &str| median_of(&rows, store, route, lib);
                if let (Some(a), Some(b)) = (find("sessionkit"), find(BEFORE)) {
                    let _ = writeln!(
                        before,
                        "| {store} | /{route} | {:.0} | {:.2} ms | {:.0} | {:.2} ms | **{:.3}** |",
                        a.requests_per_second,
                        a.p99_ms,
                        b.requests_per_second,
                        b.p99_ms,
                        a.requests_per_second / b.requests_per_second.max(f64::MIN_POSITIVE)
                    );
                }
            }
        }
        println!("{before}");
        // A comparison of two builds is not the side-by-side result the docs' chart shows.
        return;
    }
    if floor {
        let mut floors = String::from(
            "`/incr2` is the floor's increment as two calls (a read, then a write), `/incr2g` the same with a write that cannot create the record; their ratios are each library's `/incr` to them. `raw-pipelined` (Redis) sends the floor's commands on sessionkit's own connection.\n\n| store | floor | route | floor req/s | p50 | p99 | sessionkit / floor | tower-sessions / floor |\n|---|---|---|---|---|---|---|---|\n",
        );
        let floor_routes = ["raw", "raw-pipelined"].into_iter().flat_map(|floor| {
            ROUTES
                .into_iter()
                .chain(FLOOR_INCRS)
                .map(move |route| (floor, route))
        });
        for store in stores.split(',') {
            for (floor, route) in floor_routes.clone() {
                // `/incr2` and `/incr2g` are floors for both libraries' `/incr`.
                let library_route = if FLOOR_INCRS.contains(&route) {
                    "incr"
                } else {
                    route
                };
                let find = |lib: &str, route: &str| median_of(&rows, store, route, lib);
                if let (Some(raw), Some(a), Some(b)) = (
                    find(floor, route),
                    find("sessionkit", library_route),
                    find("tower-sessions", library_route),
                ) {
                    let per = |x: Sample| {
                        x.requests_per_second / raw.requests_per_second.max(f64::MIN_POSITIVE)
                    };
                    let _ = writeln!(
                        floors,
                        "| {store} | {floor} | /{route} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} |",
                        raw.requests_per_second,
                        raw.p50_ms,
                        raw.p99_ms,
                        per(a),
                        per(b)
                    );
                }
            }
        }
        println!("{floors}");
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::write(
        docs.join("bench-results.json"),
        serde_json::to_string_pretty(&rows).expect("json"),
    )
    .expect("write results");
    chart(&rows, &docs.join("bench-chart.svg"));
    eprintln!("wrote docs/bench-results.json and docs/bench-chart.svg");
}

pub(crate) fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sessionkit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Grouped bars of req/s per store, one panel per session route.
fn chart(rows: &[Row], path: &Path) {
    use plotters::prelude::*;
    let stores: Vec<String> = rows
        .iter()
        .map(|r| r.store.clone())
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let panels = root.split_evenly((2, 1));
    for (panel, route) in panels.iter().zip(["read", "incr"]) {
        let top = rows
            .iter()
            .filter(|r| r.route == route)
            .map(|r| r.median.requests_per_second)
            .fold(1.0, f64::max);
        let Ok(mut chart) = ChartBuilder::on(panel)
            .caption(
                format!("GET /{route}: requests per second (wrk, 2 threads, 64 connections)"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..(stores.len() * 3) as f64,
                (100f64..top * 2.0).log_scale(),
            )
        else {
            continue;
        };
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("req/s (log scale)")
            .draw();
        for (i, store) in stores.iter().enumerate() {
            let _ = chart.draw_series(std::iter::once(Text::new(
                store.clone(),
                (i as f64 * 3.0 + 0.6, 190.0),
                ("sans-serif", 14),
            )));
            for (j, (lib, color)) in [
                ("sessionkit", RGBColor(31, 119, 180)),
                ("tower-sessions", RGBColor(255, 127, 14)),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(median) = median_of(rows, store, route, lib) {
                    let x = (i * 3 + j) as f64 + 0.5;
                    let _ = chart.draw_series(std::iter::once(Rectangle::new(
                        [(x, 250.0), (x + 0.9, median.requests_per_second.max(250.0))],
                        color.filled(),
                    )));
                }
            }
        }
        let _ = chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                RGBColor(31, 119, 180).filled(),
            )))
            .map(|s| {
                s.label("sessionkit").legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 10, y + 5)],
                        RGBColor(31, 119, 180).filled(),
                    )
                })
            });
        let _ = chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                RGBColor(255, 127, 14).filled(),
            )))
            .map(|s| {
                s.label("tower-sessions").legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 10, y + 5)],
                        RGBColor(255, 127, 14).filled(),
                    )
                })
            });
        let _ = chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw();
    }
    let _ = root.present();
}

/// Redraws `docs/bench-chart.svg` from `docs/bench-results.json`.
pub(crate) fn redraw() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let text = std::fs::read_to_string(docs.join("bench-results.json"))
        .expect("read docs/bench-results.json");
    let rows: Vec<Row> = serde_json::from_str(&text).expect("parse the results");
    chart(&rows, &docs.join("bench-chart.svg"));
}

pub(crate) async fn correctness(stores: &str, trials: usize) {
    let workdir = tempdir();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .build()
        .expect("client");
    println!(
        "| store | library | keys surviving 100 concurrent /add (min / median / max of {trials}) | items surviving 100 concurrent /push to one list (min / median / max) | slow request racing a logout: session back? |"
    );
    println!("|---|---|---|---|---|");
    for store in stores.split(',') {
        for lib in LIBS {
            let server = start(lib, store, &workdir, PORT, None, false).await;
            let base = server.base();
            let surviving =
                concurrent_trials(&client, &server, trials, "/add/k", "/count/100").await;
            let pushed = concurrent_trials(&client, &server, trials, "/push/i", "/pushed").await;
            let mut back = 0;
            for _ in 0..trials {
                let cookie = new_session(&client, &server).await;
                let slow = {
                    let (client, cookie, base) = (client.clone(), cookie.clone(), base.clone());
                    tokio::spawn(
                        async move { get(&client, &base, "/slow-add/late/400", &cookie).await },
                    )
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
                get(&client, &base, "/logout", &cookie).await;
                let _ = slow.await;
                if get(&client, &base, "/read", &cookie).await.trim() != "0" {
                    back += 1;
                }
            }
            println!(
                "| {store} | {lib} | {} | {} | back in {back} of {trials} trials |",
                spread(&surviving),
                spread(&pushed)
            );
        }
    }
}

/// `min / median / max` of sorted counts.
fn spread(sorted: &[usize]) -> String {
    format!(
        "{} / {} / {}",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

/// For each trial, a new session gets 100 concurrent requests `{write}{i}` (i = 0..100), then
/// `count` says how many of them it kept; the counts, sorted.
async fn concurrent_trials(
    client: &reqwest::Client,
    server: &Server,
    trials: usize,
    write: &str,
    count: &str,
) -> Vec<usize> {
    let base = server.base();
    let mut surviving = Vec::new();
    for _ in 0..trials.max(1) {
        let cookie = new_session(client, server).await;
        let writes: Vec<_> = (0..100)
            .map(|i| {
                let (client, cookie, base) = (client.clone(), cookie.clone(), base.clone());
                let path = format!("{write}{i}");
                tokio::spawn(async move { get(&client, &base, &path, &cookie).await })
            })
            .collect();
        for write in writes {
            let _ = write.await;
        }
        surviving.push(
            get(client, &base, count, &cookie)
                .await
                .trim()
                .parse::<usize>()
                .unwrap_or(0),
        );
    }
    surviving.sort_unstable();
    surviving
}
