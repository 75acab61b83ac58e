//! `scale memory`: the memory store's resident memory per session, measured in this process
//! (RSS from `/proc/self/statm`) while it creates sessions of the bench's shape (the record a
//! first `/incr` creates) through `Store::create`, 100,000 at a time.

use std::time::Instant;

use sessionkit::{SessionId, Store};

use super::seed;

const STEP: usize = 100_000;

/// This process's resident set in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("resident pages");
    pages * 4096
}

pub(crate) async fn run(sessions: usize) {
    let store = sessionkit::open("memory:").await.expect("a memory store");
    let record = seed::record(seed::Deadline::Live);
    let payload: usize = 32 + record.size_bytes();
    println!(
        "payload per session: {payload} bytes (32-byte key, keys and encoded values)\n\n\
         | sessions | RSS MiB | growth over the last 100,000: bytes per session | create s |\n\
         | ---: | ---: | ---: | ---: |"
    );
    let start = rss_bytes();
    let mut last = start;
    let mut made = 0;
    while made < sessions {
        let started = Instant::now();
        for _ in 0..STEP {
            let id = SessionId::generate().expect("an id");
            store.create(&id.key(), &record).await.expect("create");
        }
        made += STEP;
        let now = rss_bytes();
        println!(
            "| {made} | {:.1} | {:.0} | {:.2} |",
            now as f64 / (1 << 20) as f64,
            now.saturating_sub(last) as f64 / STEP as f64,
            started.elapsed().as_secs_f64()
        );
        last = now;
    }
    println!(
        "\nin all: {:.0} bytes per session over {made} sessions",
        last.saturating_sub(start) as f64 / made as f64
    );
    drop(store);
}
