//! `scale purge`: the `sessionkit purge` command deleting a million expired sessions from the
//! table an app is serving, while wrk drives `/read` and `/incr` (alternating) on the app's live
//! sessions; the load's p99 during the purge against the same load without one.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::driver::{self, PORT, Sample, Server, new_session, start, wrk};

use super::seed::{self, Deadline};

/// Live sessions the load rotates over.
const LIVE: usize = 1000;
/// wrk runs without a purge, before and after it.
const QUIET_RUNS: usize = 3;
/// A purge still running after this long is reported as stuck (a deadlock) and killed.
const PURGE_LIMIT: Duration = Duration::from_secs(1800);

/// wrk's Lua: like `rotate.lua`, and every other request is `/incr` (the rest `/read`).
pub(crate) const MIXED_LUA: &str = r#"
local cookies = {}
for line in io.lines(os.getenv("COOKIES_FILE")) do cookies[#cookies + 1] = line end
local i = math.random(#cookies)
request = function()
  i = i % #cookies + 1
  local path = (i % 2 == 0) and "/incr" or "/read"
  return wrk.format("GET", path, { ["Cookie"] = cookies[i] })
end
"#;

/// What one store's purge under load measured.
struct Measured {
    quiet: Vec<Sample>,
    during: Vec<Sample>,
    purge_seconds: f64,
    purge_ok: bool,
    seed_seconds: Option<f64>,
    left: u64,
}

pub(crate) async fn run(stores: &str, expired: usize, cli: &str, seconds: u32) {
    let dir = driver::tempdir();
    let lua = dir.join("mixed.lua");
    std::fs::write(&lua, MIXED_LUA).expect("write mixed.lua");
    let mut report = String::from(
        "| store | purged | purge s | seeding s | p99 without (median of 6) ms | p99 during (median / max) ms | during / without | req/s without / during | errors | expired left |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (i, store) in stores.split(',').enumerate() {
        let port = PORT + 60 + u16::try_from(i).expect("few stores");
        let m = measure(store, expired, cli, seconds, port, &dir, &lua).await;
        row(&mut report, store, expired, &m);
        println!("{report}");
    }
}

async fn measure(
    store: &str,
    expired: usize,
    cli: &str,
    seconds: u32,
    port: u16,
    dir: &Path,
    lua: &Path,
) -> Measured {
    let seeded = seed::seed(store, "scale_purge", expired, 1, Deadline::Expired).await;
    let url = seed::url(store, "scale_purge");
    let server = start("sessionkit", &url, dir, port, None, false).await;
    let cookies = live_cookies(&server, dir, store).await;
    let mut quiet: Vec<Sample> = (0..QUIET_RUNS)
        .map(|_| wrk(&server, "read", seconds, lua, &cookies))
        .collect();
    let started = Instant::now();
    let mut purge = purge_process(cli, &url);
    let mut during = Vec::new();
    let status = loop {
        if let Some(status) = purge.try_wait().expect("wait for the purge") {
            break Some(status);
        }
        if started.elapsed() > PURGE_LIMIT {
            let _ = purge.kill();
            break None;
        }
        during.push(wrk(&server, "read", seconds, lua, &cookies));
    };
    let purge_seconds = started.elapsed().as_secs_f64();
    quiet.extend((0..QUIET_RUNS).map(|_| wrk(&server, "read", seconds, lua, &cookies)));
    Measured {
        quiet,
        during,
        purge_seconds,
        purge_ok: status.is_some_and(|s| s.success()),
        seed_seconds: seeded.seconds,
        left: seed::count(store, "scale_purge", Deadline::Expired).await,
    }
}

/// `sessionkit --store URL purge`, its output discarded.
fn purge_process(cli: &str, url: &str) -> Child {
    Command::new(cli)
        .args(["--store", url, "purge"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start `sessionkit purge`")
}

/// [`LIVE`] sessions made through the app (`/incr`), their cookies in a file.
async fn live_cookies(server: &Server, dir: &Path, store: &str) -> std::path::PathBuf {
    let client = reqwest::Client::new();
    let mut cookies = Vec::with_capacity(LIVE);
    for _ in 0..LIVE {
        cookies.push(new_session(&client, server).await);
    }
    let file = dir.join(format!("purge-{store}.cookies"));
    std::fs::write(&file, cookies.join("\n")).expect("write the cookies");
    file
}

fn p99s(samples: &[Sample]) -> Vec<f64> {
    let mut p99: Vec<f64> = samples.iter().map(|s| s.p99_ms).collect();
    p99.sort_by(f64::total_cmp);
    p99
}

fn mean_rate(samples: &[Sample]) -> f64 {
    samples.iter().map(|s| s.requests_per_second).sum::<f64>() / samples.len().max(1) as f64
}

fn row(report: &mut String, store: &str, expired: usize, m: &Measured) {
    let (quiet, during) = (p99s(&m.quiet), p99s(&m.during));
    let without = quiet[quiet.len() / 2];
    let (median, max) = (
        during.get(during.len() / 2).copied().unwrap_or(f64::NAN),
        during.last().copied().unwrap_or(f64::NAN),
    );
    let errors: u64 = m.quiet.iter().chain(&m.during).map(|s| s.errors).sum();
    let _ = writeln!(
        report,
        "| {store} | {expired}{} | {:.1} | {} | {without:.2} | {median:.2} / {max:.2} | **{:.2}** / {:.2} | {:.0} / {:.0} | {errors} | {} |",
        if m.purge_ok { "" } else { " (purge FAILED)" },
        m.purge_seconds,
        m.seed_seconds
            .map_or_else(|| "reused".to_owned(), |s| format!("{s:.1}")),
        median / without,
        max / without,
        mean_rate(&m.quiet),
        mean_rate(&m.during),
        m.left
    );
}
