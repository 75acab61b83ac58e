//! # sessionkit-mysql
//!
//! The MySQL / MariaDB store for [sessionkit](https://docs.rs/sessionkit), on sqlx.
//! URL: `mysql://user@host:3306/db` (or `mariadb://`), with the options `table` (default
//! `sessions`), `max_connections` (16), `acquire_timeout_ms` (5000) and `setup=true` (create
//! the schema on open); the driver's own options (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`,
//! `charset`, `collation`, `statement-cache-capacity`, `socket`, `time-zone`) go to sqlx, and
//! any other option is a `Config` error (sqlx would silently ignore it). Needs MariaDB ≥ 10.2.3 or
//! MySQL ≥ 5.7 (JSON functions). Opened in
//! [`OpenMode::Existing`](sessionkit_core::OpenMode::Existing)
//! ([`MySqlStore::open_with_mode`], or `Registry::open_existing`, as the `sessionkit`
//! command's read and clean-up commands do), it creates nothing and reports a missing or
//! outdated schema as a `Config` error that says to run `sessionkit setup`.
//!
//! ```no_run
//! # async fn example() -> sessionkit_core::Result<()> {
//! use sessionkit_core::SessionManager;
//! use sessionkit_mysql::MySqlStore;
//!
//! let store = MySqlStore::open("mysql://app@127.0.0.1/app?setup=true").await?;
//! let manager = SessionManager::builder(store).build()?;
//! # let _ = manager;
//! # Ok(())
//! # }
//! ```
//!
//! ## TLS and login
//! sqlx reads TLS from the URL as the MySQL client does, with rustls: `ssl-mode=` `DISABLED`,
//! `PREFERRED` (the default: TLS when the server offers it, without checking its
//! certificate), `REQUIRED` (TLS or no connection, certificate not checked), `VERIFY_CA` (the
//! chain up to a trusted CA, not the host name) or `VERIFY_IDENTITY` (chain and host name: use
//! this against a server you do not control the network path to). Trusted are the system's
//! roots plus the CA certificates of `ssl-ca=/path/ca.pem`; `ssl-cert=`/`ssl-key=` give a
//! client certificate (for users created `REQUIRE X509`). A mode that requires TLS never falls
//! back to plain text. `socket=/run/mysqld/mysqld.sock` connects through a Unix socket.
//!
//! ```text
//! mysql://app:secret@db.example.com/app?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ssl/db-ca.pem
//! ```
//!
//! A refused certificate, a server without the TLS the mode requires, a wrong password, an
//! unknown user or database is an [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config)
//! error when the store opens; an unreachable server is `Unavailable`.
//!
//! ## Built in code
//! [`MySqlStore::with_options`] takes sqlx's `MySqlConnectOptions` made in code (sqlx is
//! re-exported as [`sqlx`]), with sessionkit's options as a query string.
//!
//! ## Layout
//! `<table>`: one row per session, keyed by the SHA-256 of the id, `expires_at` as integer
//! milliseconds with an index, `owner` indexed, and the session's small values inline in `data`
//! (a JSON object of name → base64, values up to
//! [`INLINE_MAX`](sessionkit_core::backend::sql::INLINE_MAX) = 1 KiB).
//! `<table>_values`: one row per larger value (`LONGBLOB`, up to 4 GiB; the server's
//! `max_allowed_packet` is the practical limit; `ON DELETE CASCADE`), read only for sessions
//! whose `spilled` flag says they have such rows. `sessionkit_schema`: the layout version per
//! table (2; `setup` upgrades a version-1 table in place).
//!
//! A typical session is one row: a load is one primary-key lookup and a save one statement
//! without a transaction unless large values or conditions are involved. [`Store::schema`](sessionkit_core::Store::schema)
//! prints the DDL for your own migration tool; `setup()` runs it (idempotent, safe from
//! several servers at once).
//!
//! ## Connections
//! The store's own small pool of sqlx connections: opened lazily, at most `max_connections`, a
//! request waits at most `acquire_timeout_ms` for one (else `Unavailable`); a connection the
//! server ended or the network broke is replaced, so after a database restart a request that
//! meets a dead connection fails once with `Unavailable` and the next one connects afresh.
//! Connections idle for 30 s are pinged before use, those idle for 10 minutes closed.
//!
//! ## Concurrency
//! - `apply` locks the session's row first, so concurrent applies to one session serialize on
//!   that row and never deadlock; each is atomic and update-only, so a save racing a logout
//!   finds no row and re-creates nothing.
//! - A conditional change ([`Change::expected`](sessionkit_core::Change::expected)) on small
//!   values is one `UPDATE … WHERE JSON_CONTAINS(…)`; otherwise the apply transaction locks the
//!   row (`SELECT … FOR UPDATE`) and compares before writing.
//! - Transactions the database aborts (deadlock, lock wait timeout) are retried up to
//!   [`TRANSIENT_ATTEMPTS`](sessionkit_core::backend::TRANSIENT_ATTEMPTS) times with jittered
//!   backoff before an error reaches the caller.
//! - `delete_expired` runs under an advisory lock (`GET_LOCK`), so with several app servers
//!   one cleans at a time and the others return at once; it deletes in batches of
//!   [`CLEANUP_BATCH`](sessionkit_core::backend::sql::CLEANUP_BATCH) by primary key, at
//!   `READ COMMITTED` so no gap locks block inserts.
//! - **Reports purged sessions** (`capabilities().reports_purged`), on MySQL and MariaDB alike:
//!   [`Store::delete_expired_batch_reporting`](sessionkit_core::Store::delete_expired_batch_reporting)
//!   picks a batch with a plain read, then in one transaction locks those rows by primary key
//!   with the deadline re-checked (`SELECT … FOR UPDATE`), deletes exactly the rows it locked
//!   and commits, so the sessions it lists (key, owner, deadline; grace pointers counted but
//!   not listed) are exactly the rows it deleted, and a session a request extends meanwhile is
//!   neither. (MySQL has no `DELETE … RETURNING`, and older servers no `SKIP LOCKED`.) It
//!   takes no `GET_LOCK`: cleaners on several servers each list what they deleted.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod driver;
mod pool;
mod store;

use sessionkit_core::Registry;
/// The driver, for [`MySqlStore::with_options`]'s `MySqlConnectOptions`.
pub use sqlx;
pub use store::MySqlStore;

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 2] = ["mysql", "mariadb"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, mode| async move {
        MySqlStore::open_with_mode(&url, mode).await
    });
}
