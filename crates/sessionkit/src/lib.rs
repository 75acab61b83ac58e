//! # sessionkit
//!
//! Server-side web sessions for Rust that never lose a write. This facade re-exports the core
//! ([`SessionManager`], [`Session`], the [`Store`] trait) and every backend its cargo features
//! enable, and opens any of them from a URL with [`open`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit::Result<()> {
//! let store = sessionkit::open("memory:").await?;
//! let manager = sessionkit::SessionManager::builder(store).build()?;
//! let session = manager.session(None);
//! session.insert("user", &"alice").await?;
//! let committed = session.commit().await?; // the web layer sets the cookie from this
//! assert!(matches!(committed.cookie, sessionkit::CookieUpdate::Set { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! See [`sessionkit_core`] for the life cycle of a session, the concurrency guarantee and the
//! security defaults.
//!
//! ## Features and stores
//!
//! | feature | store | URL | multi-process |
//! | --- | --- | --- | --- |
//! | `memory` (default) | [`MemoryStore`] | `memory:` | no |
//! | `sqlite` (default) | [`SqliteStore`] | `sqlite://path/to/file.db` | yes |
//! | `file` | [`FileStore`] | `file:///path/to/dir` | yes (one machine) |
//! | `redb` | [`RedbStore`] | `redb://path/to/file.redb` | no (one process per file) |
//! | `postgres` | [`PostgresStore`] | `postgres://user@host:5432/db` | yes |
//! | `mysql` | [`MySqlStore`] | `mysql://user@host:3306/db` (or `mariadb://`) | yes |
//! | `redis` | [`RedisStore`] | `redis://host:6379`, `redis+cluster://h1:p1,h2:p2` | yes |
//! | `memcached` | [`MemcachedStore`] | `memcached://h1:11211,h2:11211` | yes (no listing, no owner index) |
//!
//! `embedded` turns on every store that needs no server.
//!
//! Web integrations: `tower` ([`tower`]: the tower `SessionLayer` and the axum extractor),
//! `actix` ([`actix`]: the actix-web `SessionMiddleware` and extractor) and `rocket`
//! ([`rocket`]: the Rocket 0.5 `SessionFairing`, `CsrfFairing` and request guards).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use sessionkit_core::*;

#[cfg(feature = "actix")]
pub use sessionkit_actix as actix;

// The migration guide's Rust examples compile against this crate (`cargo test --doc`).
#[cfg(all(doctest, feature = "tower", feature = "actix", feature = "sqlite"))]
#[doc = include_str!("../../../docs/MIGRATING.md")]
struct MigratingGuide;
#[cfg(feature = "file")]
pub use sessionkit_file::FileStore;
#[cfg(feature = "memcached")]
pub use sessionkit_memcached::MemcachedStore;
#[cfg(feature = "memory")]
pub use sessionkit_memory::MemoryStore;
#[cfg(feature = "mysql")]
pub use sessionkit_mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use sessionkit_postgres::PostgresStore;
#[cfg(feature = "redb")]
pub use sessionkit_redb::RedbStore;
#[cfg(feature = "redis")]
pub use sessionkit_redis::RedisStore;
#[cfg(feature = "rocket")]
pub use sessionkit_rocket as rocket;
#[cfg(feature = "sqlite")]
pub use sessionkit_sqlite::SqliteStore;
#[cfg(feature = "tower")]
pub use sessionkit_tower as tower;

/// A registry of every store scheme the enabled features provide.
pub fn registry() -> Registry {
    #[allow(unused_mut)]
    let mut registry = Registry::new();
    #[cfg(feature = "memory")]
    sessionkit_memory::register(&mut registry);
    #[cfg(feature = "sqlite")]
    sessionkit_sqlite::register(&mut registry);
    #[cfg(feature = "file")]
    sessionkit_file::register(&mut registry);
    #[cfg(feature = "redb")]
    sessionkit_redb::register(&mut registry);
    #[cfg(feature = "postgres")]
    sessionkit_postgres::register(&mut registry);
    #[cfg(feature = "mysql")]
    sessionkit_mysql::register(&mut registry);
    #[cfg(feature = "redis")]
    sessionkit_redis::register(&mut registry);
    #[cfg(feature = "memcached")]
    sessionkit_memcached::register(&mut registry);
    registry
}

/// Opens the store a URL names (`memory:`, `sqlite://sessions.db`, …) with the backends the enabled features provide.
///
/// # Errors
/// [`ErrorKind::Config`] for an unknown scheme or a malformed URL; the backend's own errors
/// (for example [`ErrorKind::Unavailable`] when its server cannot be reached).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    registry().open(url).await
}

/// Opens the store a URL names **without creating anything** ([`OpenMode::Existing`]): no
/// SQLite or redb file, no file-store directory, no table, whatever the URL's `setup` option
/// says. For tools that only read or clean a store, so that a mistyped path or table name is
/// reported instead of created.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = sessionkit::open_existing("sqlite:///nonexistent/dir/sessions.db").await.err();
/// assert_eq!(err.map(|e| e.kind()), Some(sessionkit::ErrorKind::Config));
/// # }
/// ```
///
/// # Errors
/// As [`open`]; [`ErrorKind::Config`] if the store's file, directory or schema is missing
/// (the message says what, and that `sessionkit setup` creates it).
pub async fn open_existing(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    registry().open_existing(url).await
}
