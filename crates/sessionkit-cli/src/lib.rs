//! # sessionkit-cli
//!
//! The `sessionkit` command, a thin `main` over [`run`]:
//!
//! ```text
//! sessionkit demo                               # the demo app on SQLite, http://127.0.0.1:3000
//! sessionkit demo --admin                       # ... with its admin page, password printed
//! sessionkit --store postgres://root@127.0.0.1/test setup
//! sessionkit list --owner alice                 # a table of sessions (--json for scripts)
//! sessionkit show <cookie value | key | key prefix>
//! sessionkit purge                              # delete expired sessions, with progress
//! sessionkit migrate --from sqlite://sessionkit-demo.db --to redis://127.0.0.1
//! sessionkit migrate --from tower-sessions+postgres://root@127.0.0.1/test --to sqlite://s.db
//! ```
//!
//! The last one, with the `import` feature, imports the live sessions of tower-sessions' or
//! actix-session's stores (the `import` module).
//!
//! Every command takes `--store URL` (or `SESSIONKIT_STORE`); the default is the SQLite file the
//! demo uses. Errors print one line and exit non-zero.
//!
//! Only `setup`, `demo`, `bench` and `migrate`'s destination create a store. `list`, `show`,
//! `delete`, `revoke`, `purge`, `stats` and `migrate --from` open theirs with
//! [`sessionkit::open_existing`]: a SQLite or redb file, a file-store directory or a SQL schema
//! that does not exist is reported (one line, non-zero exit, "create it with `sessionkit
//! setup`"), never created.
//!
//! Output: `list --limit 0` lists every session; a stored record that does not decode is
//! counted and named by its short key (a hash of the id, never the id) by `list` (on standard
//! error with `--json`), `stats` and `migrate`; `stats` counts as expired exactly what `purge`
//! deletes, grace-period pointers of cycled ids included. Standard output closed early
//! (`sessionkit list | head -1`) ends the command quietly with success. An argument that is not
//! a session id is repeated in an error only up to its first 12 characters.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod bench;
pub mod demo;
mod format;
#[cfg(feature = "import")]
#[cfg_attr(docsrs, doc(cfg(feature = "import")))]
pub mod import;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The store the demo uses, and every command's default.
pub const DEFAULT_STORE: &str = "sqlite://sessionkit-demo.db";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "sessionkit",
    version,
    about = "Set up, inspect, clean, migrate and load-test sessionkit stores; run the demo."
)]
pub struct Cli {
    /// The store: memory:, sqlite://FILE, file:///DIR, redb://FILE, postgres://…, mysql://…,
    /// redis://…, redis+cluster://…, memcached://…
    #[arg(long, global = true, env = "SESSIONKIT_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or migrate the store's schema.
    Setup {
        /// Print the schema (SQL DDL) instead of running it.
        #[arg(long)]
        print_ddl: bool,
    },
    /// List sessions: key prefix, owner, created, expires, keys, bytes. Records that do not
    /// decode are counted and named by their short key after the table (on standard error with
    /// --json).
    List {
        /// Only this owner's sessions.
        #[arg(long)]
        owner: Option<String>,
        /// Expired sessions (not yet purged) instead of live ones.
        #[arg(long)]
        expired: bool,
        /// At most this many; 0 lists every session.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one session with every value as JSON.
    Show {
        /// A cookie value, a 64-digit key, or a unique key prefix from `list`.
        id: String,
    },
    /// Delete one session.
    Delete {
        /// A cookie value, a 64-digit key, or a unique key prefix from `list`.
        id: String,
    },
    /// End every session of an owner ("log out everywhere").
    Revoke {
        /// The owner.
        #[arg(long)]
        owner: String,
    },
    /// Delete expired sessions and the expired grace-period pointers of cycled ids, in
    /// batches, with a progress bar.
    Purge,
    /// Counts, sizes and a size histogram. "expired (unpurged)" is what `purge` would delete
    /// (grace-period pointers included); records that do not decode are counted and named.
    Stats,
    /// Copy every live session (data, owner, deadlines) to another store, or import the live
    /// sessions of tower-sessions' or actix-session's stores (feature `import`).
    Migrate {
        /// The source: a sessionkit store URL, or (feature `import`) one of
        /// tower-sessions+postgres://…[?table=SCHEMA.TABLE], tower-sessions+mysql://…[?table=…],
        /// tower-sessions+sqlite://FILE[?table=TABLE], tower-sessions+redis://…,
        /// actix-session+redis://…[?prefix=PREFIX] (rediss:// for TLS).
        #[arg(long)]
        from: String,
        /// The destination store.
        #[arg(long)]
        to: String,
    },
    /// Load-test a store: mixed loads and applies from many tasks.
    Bench {
        /// The store to test.
        url: String,
        /// Concurrent tasks.
        #[arg(long, default_value_t = 16)]
        tasks: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Sessions to spread the load over.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Fraction of operations that write (0 to 1).
        #[arg(long, default_value_t = 0.2)]
        write_ratio: f64,
    },
    /// Serve the demo app.
    Demo {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
        /// Turn on the admin page (every session, purge), behind a random password printed at
        /// start.
        #[arg(long)]
        admin: bool,
    },
}

/// A failure of a command: its message is the whole error chain on one line.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::error::Error> From<E> for CliError {
    fn from(err: E) -> Self {
        let mut line = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        Self(line)
    }
}

/// Runs one command.
///
/// # Errors
/// A [`CliError`] with the one-line message to print.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Setup { print_ddl } => admin::setup(&cli.store, print_ddl).await,
        Command::List {
            owner,
            expired,
            limit,
            json,
        } => admin::list(&cli.store, owner, expired, limit, json).await,
        Command::Show { id } => admin::show(&cli.store, &id).await,
        Command::Delete { id } => admin::delete(&cli.store, &id).await,
        Command::Revoke { owner } => admin::revoke(&cli.store, &owner).await,
        Command::Purge => admin::purge(&cli.store).await,
        Command::Stats => admin::stats(&cli.store).await,
        Command::Migrate { from, to } => admin::migrate(&from, &to).await,
        Command::Bench {
            url,
            tasks,
            seconds,
            sessions,
            write_ratio,
        } => {
            let duration = Duration::try_from_secs_f64(seconds)
                .map_err(|_| CliError("--seconds must be a positive number".into()))?;
            bench::run(
                &url,
                bench::Load {
                    tasks: tasks.max(1),
                    duration,
                    sessions: sessions.max(1),
                    write_ratio: write_ratio.clamp(0.0, 1.0),
                },
            )
            .await
        }
        Command::Demo { addr, admin } => demo::run(&cli.store, &addr, admin).await,
    }
}

/// Parses the command line, runs it on a Tokio runtime, prints an error as one line. A command
/// whose standard output was closed (`sessionkit list | head -1`) stops there and exits
/// quietly with success.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if output::closed() => ExitCode::SUCCESS,
        Err(CliError(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
