//! `scale`: how the cost grows with the number of sessions in the store, a purge of expired
//! sessions under load, the size of a session, the number of connections, the memory store's
//! bytes per session and the CLI over a large store (issue 22; `docs/BENCHMARKS.md`, "Scale").
//!
//! Large stores are seeded through sessionkit's own [`Store::create`](sessionkit::Store) (the
//! record a first `/incr` creates: `counter` and the ~150-byte profile, under the SHA-256 of
//! a fresh id), with many concurrent tasks, into tables, namespaces and files of their own
//! (`scale_*`); a seeded store is reused when its count is already there. The cookies wrk
//! rotates are a uniform sample of the whole store, so no cache holds them all.

use clap::Subcommand;

mod cli;
mod connections;
mod memory;
mod purge;
mod seed;
mod sessions;
mod values;

/// Where seeded SQLite files and cookie samples live between runs.
pub(crate) const DIR: &str = "/tmp/sessionkit-scale";

#[derive(Subcommand)]
pub(crate) enum Scale {
    /// `/read` and `/incr` on a store holding `--large` sessions against one holding
    /// `--small`, interleaved; the large / small ratios.
    Sessions {
        #[arg(long, default_value = "sqlite,postgres,mysql,redis")]
        stores: String,
        #[arg(long, default_value_t = 1_000_000)]
        large: usize,
        #[arg(long, default_value_t = 1_000)]
        small: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A purge of `--expired` expired sessions (the `sessionkit` CLI's `purge`) while wrk
    /// drives `/read` and `/incr` on live sessions of the same table; p99 against the same
    /// load without a purge.
    Purge {
        #[arg(long, default_value = "sqlite,postgres,mysql")]
        stores: String,
        #[arg(long, default_value_t = 1_000_000)]
        expired: usize,
        /// The `sessionkit` binary (`cargo build --release -p sessionkit-cli`).
        #[arg(long)]
        cli: String,
        /// Length of each wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// `/read` and `/incr` on sessions that also hold one value of each `--sizes` (KiB).
    Values {
        #[arg(long, default_value = "memory,sqlite,postgres,mysql,redis")]
        stores: String,
        #[arg(long, default_value = "1,16,128,1024")]
        sizes: String,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `/read` and `/incr` with each of `--connections` wrk connections, both libraries.
    Connections {
        #[arg(long, default_value = "memory,sqlite,postgres,redis")]
        stores: String,
        #[arg(long, default_value = "64,1000,10000")]
        connections: String,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// The memory store's growth in resident memory per 100,000 sessions of the bench's shape.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
    },
    /// `sessionkit list --json`, `stats` and `migrate` over stores of `--sizes` sessions:
    /// time and peak RSS (`/usr/bin/time -v`).
    Cli {
        #[arg(long, default_value = "sqlite,postgres")]
        stores: String,
        #[arg(long, default_value = "100000,1000000")]
        sizes: String,
        /// The `sessionkit` binary (`cargo build --release -p sessionkit-cli`).
        #[arg(long)]
        cli: String,
        /// Which of `list` (list and stats) and `migrate` to run.
        #[arg(long, default_value = "list,migrate")]
        commands: String,
    },
    /// Drops the `scale_*` tables and namespaces and deletes the seeded files.
    Clean,
}

pub(crate) async fn run(command: Scale) {
    match command {
        Scale::Sessions {
            stores,
            large,
            small,
            seconds,
            runs,
        } => sessions::run(&stores, large, small, seconds, runs).await,
        Scale::Purge {
            stores,
            expired,
            cli,
            seconds,
        } => purge::run(&stores, expired, &cli, seconds).await,
        Scale::Values {
            stores,
            sizes,
            seconds,
            runs,
        } => values::run(&stores, &sizes, seconds, runs).await,
        Scale::Connections {
            stores,
            connections,
            seconds,
        } => connections::run(&stores, &connections, seconds).await,
        Scale::Memory { sessions } => memory::run(sessions).await,
        Scale::Cli {
            stores,
            sizes,
            cli,
            commands,
        } => cli::run(&stores, &sizes, &cli, &commands).await,
        Scale::Clean => seed::clean().await,
    }
}

/// Numbers from a comma-separated list.
pub(crate) fn numbers(list: &str) -> Vec<usize> {
    list.split(',')
        .map(|n| n.trim().parse().expect("a number"))
        .collect()
}
