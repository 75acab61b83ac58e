//! # sessionkit-sql
//!
//! PostgreSQL (feature `postgres`) and MySQL/MariaDB (feature `mysql`) stores for sessionkit, on
//! sqlx. URLs: `postgres://user@host:5432/db`, `mysql://user@host:3306/db`, with options
//! `table` (default `sessions`), `max_connections` (16), `acquire_timeout_ms` (5000) and
//! `setup=true` (create the schema on open); other query options go to the driver.
//!
//! ## Layout
//! The same two tables as the SQLite store: `<table>` (one row per session, keyed by the
//! SHA-256 of the id, `expires_at` as integer milliseconds with an index, `owner` indexed) and
//! `<table>_values` (one row per data key, `ON DELETE CASCADE`), plus `sessionkit_schema`
//! (layout version per table). MySQL values are `LONGBLOB` (up to 4 GiB; the server's
//! `max_allowed_packet` is the practical limit), never a 64 KiB `BLOB`. Saving one key rewrites
//! one row, whatever the session's size; see `docs/BENCHMARKS.md` for the measurement against a
//! JSON-document layout. [`Store::schema`] prints the DDL for
//! your own migration tool; `setup()` runs it (idempotent, safe from several servers at once).
//!
//! ## Connections
//! Each store keeps its own small pool of sqlx connections (at most `max_connections`, opened
//! lazily, `acquire_timeout_ms` to get one, else `Unavailable`). It does not ping before every
//! use as sqlx's `Pool` does; it pings only connections idle for 30 s, closes those idle for
//! 10 minutes, and closes (never reuses) a connection whose query failed at the socket or
//! protocol level, whose server ended it, or whose request was dropped half-way. After a
//! database restart, a request that meets a dead pooled connection fails once with
//! `Unavailable` and the next one connects afresh. Measured: 1.6× sqlx's `Pool` on PostgreSQL
//! point reads under 64-way concurrency (`docs/BENCHMARKS.md`).
//!
//! ## Concurrency
//! - `apply` locks the session's row first (an `UPDATE … WHERE live`), so concurrent applies to
//!   one session serialize on that row and never deadlock; each is atomic and update-only, so a
//!   save racing a logout finds no row and re-creates nothing. On PostgreSQL the common apply is
//!   one statement (one round trip).
//! - Transactions the database aborts (deadlock, serialization failure, lock wait timeout) are
//!   retried up to six times with jittered backoff before an error reaches the caller.
//! - `delete_expired` runs under an advisory lock (`pg_try_advisory_lock` / `GET_LOCK`), so with
//!   several app servers one cleans at a time and the others return at once; it deletes in
//!   batches of [`CLEANUP_BATCH`] by primary key, skipping rows live requests hold (PostgreSQL
//!   `SKIP LOCKED`; MySQL runs at `READ COMMITTED` so no gap locks block inserts).

mod common;
#[cfg(feature = "mysql")]
mod mysql;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
#[doc(hidden)]
pub mod testing;

use std::sync::Arc;

pub use common::CLEANUP_BATCH;
#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
use sessionkit_core::{Registry, Store};

/// Registers `postgres:`/`postgresql:` and `mysql:`/`mariadb:` for the enabled features.
pub fn register(registry: &mut Registry) {
    #[cfg(feature = "postgres")]
    for scheme in ["postgres", "postgresql"] {
        registry.register(scheme, |url| async move {
            Ok(Arc::new(PostgresStore::open(&url).await?) as Arc<dyn Store>)
        });
    }
    #[cfg(feature = "mysql")]
    for scheme in ["mysql", "mariadb"] {
        registry.register(scheme, |url| async move {
            Ok(Arc::new(MySqlStore::open(&url).await?) as Arc<dyn Store>)
        });
    }
    let _ = registry;
}
