//! # sessionkit-sql
//!
//! PostgreSQL (feature `postgres`, on tokio-postgres) and MySQL/MariaDB (feature `mysql`, on
//! sqlx) stores for sessionkit. URLs: `postgres://user@host:5432/db`,
//! `mysql://user@host:3306/db`, with options `table` (default `sessions`), `max_connections` (16), `acquire_timeout_ms` (5000) and
//! `setup=true` (create the schema on open); other query options go to the driver.
//!
//! ## Layout
//! `<table>`: one row per session, keyed by the SHA-256 of the id, `expires_at` as integer
//! milliseconds with an index, `owner` indexed, and the session's small values inline in `data`
//! (a JSON object of name → base64, values up to [`INLINE_MAX`] = 1 KiB; JSONB on PostgreSQL).
//! `<table>_values`: one row per larger value (`ON DELETE CASCADE`), read only for sessions
//! whose `spilled` flag says they have such rows. `sessionkit_schema`: the layout version per
//! table (2; `setup` upgrades a version-1 table, which kept every value in `<table>_values`, in
//! place). MySQL values are `LONGBLOB` (up to 4 GiB; the server's `max_allowed_packet` is the
//! practical limit).
//!
//! So a typical session (a few small values) is one row: a load is one primary-key lookup and
//! a save one `UPDATE` (PostgreSQL: one statement whatever the change, conditional or not;
//! MySQL: one statement without a transaction unless large values or conditions are
//! involved), and a session's large values are
//! saved one row each, so saving one key of a 1 MiB session never rewrites the rest.
//! `docs/BENCHMARKS.md` has the measurements behind this (per-key rows, a JSON document, and
//! this hybrid). [`Store::schema`] prints the DDL for your own migration tool; `setup()` runs
//! it (idempotent, safe from several servers at once). Upgrade every app server together: a
//! version-1 build does not read inline values.
//!
//! ## Connections
//! PostgreSQL (tokio-postgres): `shared_connections` of them (default: half the CPUs, at least
//! one, at most half of `max_connections`) are shared: every load
//! and every single-statement write of every request is pipelined on them, each statement
//! prepared once per connection; the rest are lent one at a time for saves and transactions
//! (a cleared save, an id cycle, setup, cleanup), so that concurrent commits do not queue
//! behind one another. MySQL (sqlx): the store's own small pool of sqlx connections. Both open
//! connections lazily, wait at most `acquire_timeout_ms` for one (else `Unavailable`), and
//! replace a connection the server ended or the network broke: after a database restart, a
//! request that meets a dead connection fails once with `Unavailable` and the next one
//! connects afresh. Neither pings before every use (sqlx's `Pool` does, and releases through
//! a spawned task); the MySQL pool pings connections idle for 30 s and closes those idle for
//! 10 minutes. Measured against sqlx's `Pool` in `docs/BENCHMARKS.md`.
//!
//! ## Concurrency
//! - `apply` locks the session's row first (an `UPDATE … WHERE live`), so concurrent applies to
//!   one session serialize on that row and never deadlock; each is atomic and update-only, so a
//!   save racing a logout finds no row and re-creates nothing. On PostgreSQL the common apply is
//!   one statement (one round trip).
//! - A conditional change ([`Change::expected`](sessionkit_core::Change::expected)) is checked
//!   and written in one atomic step. PostgreSQL: for a session with nothing in the values
//!   table, one statement whose `UPDATE` carries the conditions on the row's inline document
//!   (re-checked on the newest row version when it waits for a concurrent writer) and reports
//!   `Gone` or `Conflict` when it updates nothing; otherwise a transaction that locks the
//!   session row first and then reads and compares the values wherever they live. MySQL: the
//!   apply transaction locks the row (`SELECT … FOR UPDATE`) and compares before writing.
//! - Transactions the database aborts (deadlock, serialization failure, lock wait timeout) are
//!   retried up to six times with jittered backoff before an error reaches the caller.
//! - `delete_expired` runs under an advisory lock (`pg_try_advisory_lock` / `GET_LOCK`), so with
//!   several app servers one cleans at a time and the others return at once; it deletes in
//!   batches of [`CLEANUP_BATCH`] by primary key, skipping rows live requests hold (PostgreSQL
//!   `SKIP LOCKED`; MySQL runs at `READ COMMITTED` so no gap locks block inserts).

mod common;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod pg_conn;
#[cfg(feature = "mysql")]
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
#[doc(hidden)]
pub mod testing;

use std::sync::Arc;

pub use common::{CLEANUP_BATCH, INLINE_MAX};
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
