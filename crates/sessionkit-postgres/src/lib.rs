//! # sessionkit-postgres
//!
//! The PostgreSQL store for [sessionkit](https://docs.rs/sessionkit), on tokio-postgres.
//! URL: `postgres://user@host:5432/db` (or `postgresql://`), with the options `table`
//! (default `sessions`), `max_connections` (16), `shared_connections`, `acquire_timeout_ms`
//! (5000) and `setup=true` (create the schema on open); other query options go to the driver.
//! Opened in [`OpenMode::Existing`](sessionkit_core::OpenMode::Existing)
//! ([`PostgresStore::open_with_mode`], or `Registry::open_existing`, as the `sessionkit`
//! command's read and clean-up commands do), it creates nothing and reports a missing or
//! outdated schema as a `Config` error that says to run `sessionkit setup`.
//!
//! ```no_run
//! # async fn example() -> sessionkit_core::Result<()> {
//! use sessionkit_core::SessionManager;
//! use sessionkit_postgres::PostgresStore;
//!
//! let store = PostgresStore::open("postgres://app@127.0.0.1/app?setup=true").await?;
//! let manager = SessionManager::builder(store).build()?;
//! # let _ = manager;
//! # Ok(())
//! # }
//! ```
//!
//! ## TLS and login
//! TLS is configured as libpq does, with rustls: `sslmode=` `disable`, `prefer` (the default:
//! TLS when the server offers it, without checking its certificate), `require` (TLS or no
//! connection; the certificate is checked as by `verify-ca` when `sslrootcert` is given, not
//! at all otherwise), `verify-ca` (the chain up to a trusted CA, not the host name) or
//! `verify-full` (chain and host name: use this against a server you do not control the
//! network path to). `sslrootcert=/path/ca.pem` names the CA certificates to trust (absent,
//! or `system`: the system's roots; `system` also makes `verify-full` the default), and
//! `sslcert=`/`sslkey=` a client certificate for servers that ask for one. A mode that
//! requires TLS never falls back to plain text.
//!
//! ```text
//! postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem
//! postgres://app@db.example.com/app?sslmode=verify-full&sslcert=/run/app.pem&sslkey=/run/app.key
//! ```
//!
//! Passwords go through SCRAM-SHA-256 (or MD5, or clear text over TLS, as the server asks).
//! A refused certificate, a server that does not offer the TLS the mode requires, a wrong
//! password, or a login `pg_hba.conf` rejects is an
//! [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) error when the store opens; an
//! unreachable server is `Unavailable`. `hostaddr=` connects to an address while verifying the
//! certificate for the URL's host name. `postgres:///app?host=/run/postgresql&user=app` (a
//! directory, and no host before the path) connects through the Unix socket in it.
//!
//! ## Built in code
//! [`PostgresStore::with_config`] takes a `tokio_postgres::Config` made in code (re-exported as
//! [`tokio_postgres`]) and a rustls `ClientConfig` (or none: the system's roots, full
//! verification), with sessionkit's options as a query string.
//!
//! ## Layout
//! `<table>`: one row per session, keyed by the SHA-256 of the id, `expires_at` as integer
//! milliseconds with an index, `owner` indexed, and the session's small values inline in `data`
//! (a JSONB object of name → base64, values up to
//! [`INLINE_MAX`](sessionkit_core::backend::sql::INLINE_MAX) = 1 KiB).
//! `<table>_values`: one row per larger value (`ON DELETE CASCADE`), read only for sessions
//! whose `spilled` flag says they have such rows. `sessionkit_schema`: the layout version per
//! table (2; `setup` upgrades a version-1 table, which kept every value in `<table>_values`, in
//! place).
//!
//! So a typical session (a few small values) is one row: a load is one primary-key lookup and
//! a save one statement, whatever the change, conditional or not; and a session's large values
//! are saved one row each, so saving one key of a 1 MiB session never rewrites the rest.
//! `docs/BENCHMARKS.md` has the measurements behind this (per-key rows, a JSON document, and
//! this hybrid). [`Store::schema`](sessionkit_core::Store::schema) prints the DDL for your own migration tool; `setup()` runs
//! it (idempotent, safe from several servers at once). Upgrade every app server together: a
//! version-1 build does not read inline values.
//!
//! ## Connections
//! `shared_connections` of them (default: half the CPUs, at least one, at most half of
//! `max_connections`) are shared: every load and every single-statement write of every request
//! is pipelined on them, each statement prepared once per connection; the rest are lent one at
//! a time for saves and transactions (a cleared save, an id cycle, setup, cleanup), so that
//! concurrent commits do not queue behind one another. Connections open lazily; a request waits
//! at most `acquire_timeout_ms` for one (else `Unavailable`); a connection the server ended or
//! the network broke is replaced: after a database restart, a request that meets a dead
//! connection fails once with `Unavailable` and the next one connects afresh.
//!
//! ## Concurrency
//! - `apply` locks the session's row first (an `UPDATE … WHERE live`), so concurrent applies to
//!   one session serialize on that row and never deadlock; each is atomic and update-only, so a
//!   save racing a logout finds no row and re-creates nothing. The common apply is one
//!   statement (one round trip).
//! - A conditional change ([`Change::expected`](sessionkit_core::Change::expected)) is checked
//!   and written in one atomic step: for a session with nothing in the values table, one
//!   statement whose `UPDATE` carries the conditions on the row's inline document (re-checked
//!   on the newest row version when it waits for a concurrent writer) and reports `Gone` or
//!   `Conflict` when it updates nothing; otherwise a transaction that locks the session row
//!   first and then reads and compares the values wherever they live.
//! - Transactions the database aborts (deadlock, serialization failure) are retried up to
//!   [`TRANSIENT_ATTEMPTS`](sessionkit_core::backend::TRANSIENT_ATTEMPTS) times with jittered
//!   backoff before an error reaches the caller.
//! - `delete_expired` runs under an advisory lock (`pg_try_advisory_lock`), so with several app
//!   servers one cleans at a time and the others return at once; it deletes in batches of
//!   [`CLEANUP_BATCH`](sessionkit_core::backend::sql::CLEANUP_BATCH) by primary key, skipping
//!   rows live requests hold (`SKIP LOCKED`).
//! - **Reports purged sessions** (`capabilities().reports_purged`):
//!   [`Store::delete_expired_batch_reporting`](sessionkit_core::Store::delete_expired_batch_reporting)
//!   is one `DELETE … RETURNING` over the same `SKIP LOCKED` batch, re-checking each row's
//!   deadline as it deletes it, so the sessions it lists (key, owner, deadline; grace pointers
//!   counted but not listed) are exactly the rows it deleted, and a session a request extends
//!   meanwhile is neither. It takes no advisory lock: cleaners on several servers each list
//!   what they deleted.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod connections;
mod store;
mod tls;

use sessionkit_core::Registry;
pub use store::PostgresStore;
/// The driver, for [`PostgresStore::with_config`]'s `Config`.
pub use tokio_postgres;

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 2] = ["postgres", "postgresql"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, mode| async move {
        PostgresStore::open_with_mode(&url, mode).await
    });
}
