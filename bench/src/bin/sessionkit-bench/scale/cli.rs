//! `scale cli`: the `sessionkit` command over large stores. `list --json --limit 0` and
//! `stats` on stores of each size (time and peak RSS from `/usr/bin/time -v`: a command that
//! streams keeps the same peak on 100,000 and 1,000,000 sessions), and `migrate` of the
//! largest store to Redis under a pseudo-terminal (`script`), with its progress frames
//! read as they arrive and checked against what happened.

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::seed::{self, Deadline};

/// Where `migrate` writes: Redis, `scale_migrated` (the fastest store to create sessions in
/// here, so the time is the command's own more than the destination's).
const MIGRATED: &str = "scale_migrated";
const DESTINATION: &str = "redis";

pub(crate) async fn run(stores: &str, sizes: &str, cli: &str, commands: &str) {
    let sizes = super::numbers(sizes);
    if commands.contains("list") {
        list_and_stats(stores, &sizes, cli).await;
    }
    if commands.contains("migrate") {
        let (store, n) = (
            stores.split(',').next().unwrap_or("sqlite"),
            sizes.iter().copied().max().unwrap_or(0),
        );
        migrate(cli, store, n).await;
    }
}

async fn list_and_stats(stores: &str, sizes: &[usize], cli: &str) {
    let mut report = String::from(
        "| store | sessions | command | seconds | peak RSS MiB | exit |\n| --- | ---: | --- | ---: | ---: | --- |\n",
    );
    for store in stores.split(',') {
        for &n in sizes {
            let table = format!("scale_{n}");
            let seeded = seed::seed(store, &table, n, 1000, Deadline::Live).await;
            if let Some(s) = seeded.seconds {
                eprintln!("{store}: seeded {n} in {s:.1} s");
            }
            let url = seed::url(store, &table);
            for args in [&["list", "--json", "--limit", "0"][..], &["stats"][..]] {
                let (seconds, rss, ok) = time_v(cli, &url, args);
                let _ = writeln!(
                    report,
                    "| {store} | {n} | `{}` | {seconds:.1} | {:.1} | {} |",
                    args.join(" "),
                    rss as f64 / 1024.0,
                    if ok { "0" } else { "FAILED" }
                );
            }
            println!("{report}");
        }
    }
}

/// Runs `cli --store URL ARGS > /dev/null` under `/usr/bin/time -v`: wall seconds, peak RSS in
/// KiB, success.
fn time_v(cli: &str, url: &str, args: &[&str]) -> (f64, u64, bool) {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(cli)
        .args(["--store", url])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time");
    let text = String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let rss = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap_or(0);
    (
        wall_seconds(&field("Elapsed (wall clock) time (h:mm:ss or m:ss):")),
        rss,
        output.status.success(),
    )
}

/// `h:mm:ss` or `m:ss.ss` in seconds.
fn wall_seconds(text: &str) -> f64 {
    text.split(':').fold(0.0, |total, part| {
        total * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    })
}

/// One progress frame: when it arrived and what it said.
struct Frame {
    at: f64,
    text: String,
}

/// `migrate` of the `n`-session store to [`DESTINATION`] in a pseudo-terminal; prints its time and
/// a sample of its progress frames next to the truth at their time.
async fn migrate(cli: &str, store: &str, n: usize) {
    seed::drop_table(DESTINATION, MIGRATED).await;
    let from = seed::url(store, &format!("scale_{n}"));
    let to = seed::url(DESTINATION, MIGRATED);
    let command = format!("{cli} migrate --from '{from}' --to '{to}'");
    let started = Instant::now();
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("COLUMNS", "160")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdout = child.stdout.take().expect("script's output");
    let (mut frames, mut text, mut buffer) = (Vec::new(), String::new(), [0u8; 65536]);
    while let Ok(read) = stdout.read(&mut buffer) {
        if read == 0 {
            break;
        }
        let chunk = String::from_utf8_lossy(&buffer[..read]).into_owned();
        let at = started.elapsed().as_secs_f64();
        frames.extend(
            chunk
                .split(['\r', '\n'])
                .filter(|f| f.contains('/'))
                .map(|f| Frame {
                    at,
                    text: strip_ansi(f),
                }),
        );
        text.push_str(&chunk);
    }
    let status = child.wait().expect("wait for script");
    let total = started.elapsed().as_secs_f64();
    let migrated = seed::count(DESTINATION, MIGRATED, Deadline::Live).await;
    println!(
        "migrate {store} → {DESTINATION}, {n} sessions: {total:.1} s, exit {status}, {migrated} in the destination; {} progress frames\n",
        frames.len()
    );
    println!(
        "| at s | frame | remaining s (truth) | rate so far /s (truth) |\n| ---: | --- | ---: | ---: |"
    );
    let step = (frames.len() / 12).max(1);
    for frame in frames.iter().step_by(step).chain(frames.last()) {
        let pos = position(&frame.text);
        println!(
            "| {:.1} | `{}` | {:.1} | {} |",
            frame.at,
            frame.text.trim(),
            total - frame.at,
            pos.map_or_else(String::new, |p| format!("{:.0}", p as f64 / frame.at))
        );
    }
    let last_lines: Vec<&str> = text.lines().rev().take(3).collect();
    println!("\nlast lines: {last_lines:?}");
    seed::drop_table(DESTINATION, MIGRATED).await;
}

/// The `pos` of a `pos/len` frame.
fn position(frame: &str) -> Option<u64> {
    frame
        .split_whitespace()
        .find_map(|word| word.split_once('/').and_then(|(pos, _)| pos.parse().ok()))
}

/// The text without terminal escape sequences.
fn strip_ansi(text: &str) -> String {
    let (mut out, mut escape) = (String::new(), false);
    for c in text.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, c) if c.is_ascii_alphabetic() => escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}
