//! # sessionkit-tower-sessions
//!
//! Run a [tower-sessions](https://docs.rs/tower-sessions) app, including
//! [axum-login](https://docs.rs/axum-login) and [Loco](https://loco.rs), on any
//! [sessionkit](https://docs.rs/sessionkit) store: SQLite, PostgreSQL, MySQL/MariaDB, Redis
//! (standalone, Cluster, Sentinel), Memcached, files, redb or memory. [`TowerSessionsStore`]
//! implements tower-sessions' [`SessionStore`](tower_sessions_core::SessionStore) and
//! [`ExpiredDeletion`](tower_sessions_core::ExpiredDeletion) (tower-sessions 0.14) over any
//! sessionkit [`Store`](sessionkit_core::Store).
//!
//! ## The one-line change
//!
//! ```
//! use axum::{Router, routing::get};
//! use sessionkit_tower_sessions::TowerSessionsStore;
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! async fn visits(session: Session) -> String {
//!     let n = session.get::<u64>("visits").await.ok().flatten().unwrap_or(0) + 1;
//!     let _ = session.insert("visits", n).await;
//!     format!("visit number {n}")
//! }
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! # let sessionkit_store = sessionkit_memory::MemoryStore::new();
//! // Before: let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
//! let store = TowerSessionsStore::new(sessionkit_store); // any sessionkit Store
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionManagerLayer::new(store));
//! # Ok(())
//! # }
//! ```
//!
//! `sessionkit_store` is any sessionkit store, such as `sessionkit::open(url).await?` from the
//! facade (an `Arc<dyn Store>`, the default type parameter) or a backend crate's store.
//! axum-login takes the same layer: `AuthManagerLayerBuilder::new(backend, session_layer)`.
//! Loco wraps any tower-sessions `SessionStore` the same way. Cleanup is tower-sessions' own
//! [`ExpiredDeletion`](tower_sessions_core::ExpiredDeletion) (`continuously_delete_expired`
//! with the `deletion-task` feature), which runs the store's batched
//! [`Store::delete_expired`](sessionkit_core::Store::delete_expired); or let the `sessionkit`
//! CLI's `purge` do it.
//!
//! ## What it keeps of sessionkit, and what it does not
//!
//! Honestly, side by side with sessionkit's own layer (`sessionkit-tower`,
//! `sessionkit-actix`) on the same store:
//!
//! | | this crate (tower-sessions' layer) | sessionkit's own layer |
//! | --- | --- | --- |
//! | every sessionkit backend, its TLS/auth options, its setup and DDL | yes | yes |
//! | ids stored only as SHA-256 hashes (a leaked table holds no cookie) | yes | yes |
//! | batched, lock-friendly cleanup; the `sessionkit` CLI (`list`, `show`, `stats`, `purge`, `migrate`) | yes | yes |
//! | owner index: list a user's sessions, log out everywhere | yes, with [`TowerSessionsStore::with_owner_at`] | yes ([`Session::set_owner`](sessionkit_core::Session::set_owner)) |
//! | two concurrent requests of one session writing **different** keys | **the last save wins**: the other's writes are lost | both survive (changes merge) |
//! | read-modify-write of one key (a counter, a cart) under concurrency | lost updates | never lost ([`Session::update`](sessionkit_core::Session::update)) |
//! | a slow request saving after a logout | re-creates the session (tower-sessions semantics), unless [`recreate_gone(false)`](TowerSessionsStore::recreate_gone) | never re-created |
//! | login id rotation | `cycle_id` deletes the old id at once: in-flight requests of the browser lose the session | `cycle_id` with a grace period for in-flight requests |
//! | an unknown or expired id is never adopted | yes (tower-sessions draws a new id) | yes |
//! | idle timeout **and** absolute lifetime, throttled deadline writes | tower-sessions' expiry: one deadline (idle or fixed), rewritten by every save | yes |
//! | a per-owner session limit, CSRF tokens, flash messages, lifecycle hooks, metrics and a span per store call | no | yes |
//! | reading one key of a large session without loading the rest | no: tower-sessions loads and saves the whole record | yes, on stores with per-key reads |
//!
//! The reason is in tower-sessions' interface: [`SessionStore::save`](tower_sessions_core::SessionStore::save) receives the whole
//! session, not what the request changed, so a store cannot merge two requests' writes. This
//! crate writes each save as one atomic whole-record replacement (a sessionkit
//! [`Change`](sessionkit_core::Change) that clears the session and sets every key, with the
//! deadline): a save never leaves half a session behind, but of two concurrent saves, the
//! later replaces the earlier. sessionkit's own layer saves only what changed, which is what
//! makes the guarantees in the right-hand column possible.
//!
//! ## How sessions are stored
//!
//! - **Keys.** sessionkit stores never see ids. A tower-sessions id is filed under
//!   [`session_key`]: the SHA-256 of [`KEY_DOMAIN`] and the id's 22-character cookie form
//!   (sessionkit's own ids hash their 24 raw bytes, so the two never meet). No id appears in a
//!   log line or an error of this crate.
//! - **Values.** tower-sessions keeps `serde_json::Value`s; each is stored with sessionkit's
//!   own codec ([`codec::encode_value`](sessionkit_core::codec::encode_value), MessagePack), so
//!   `sessionkit show` prints them and sessionkit's `Session::get::<T>` reads them after a full
//!   switch (below).
//! - **Keys sessionkit reserves.** A tower-sessions key starting with
//!   [`RESERVED_PREFIX`](sessionkit_core::RESERVED_PREFIX) (`__sessionkit.`), empty, or longer
//!   than [`MAX_KEY_LEN`](sessionkit_core::MAX_KEY_LEN) bytes fails the save with
//!   [`session_store::Error::Encode`](tower_sessions_core::session_store::Error::Encode) naming
//!   the rule; sessionkit could not store it or read it back through its own `Session`.
//! - **create** is insert-only ([`Store::create`](sessionkit_core::Store::create)); a taken id
//!   is answered with a fresh tower-sessions id (at most 4 tries), as tower-sessions' contract
//!   asks. **save** is the atomic whole-record write above; if the session is gone it is
//!   re-created (tower-sessions' stores upsert), or dropped with `recreate_gone(false)`.
//!   **load** returns `None` for a missing, expired or grace-pointer record. **delete** and
//!   **delete_expired** are the store's.
//! - **Owner.** With [`TowerSessionsStore::with_owner_at`] (or
//!   [`with_owner`](TowerSessionsStore::with_owner)) every save files the session under an
//!   owner taken from its data; for axum-login, `with_owner_at("axum-login.data", "/user_id")`.
//!   Then [`Store::by_owner`](sessionkit_core::Store::by_owner) and
//!   [`Store::delete_by_owner`](sessionkit_core::Store::delete_by_owner) (or `sessionkit
//!   revoke --owner`) work for tower-sessions apps too.
//! - **Errors.** sessionkit errors become tower-sessions' `Encode` (codec and size failures on
//!   writes), `Decode` (a stored value that does not decode) or `Backend` (everything else),
//!   with sessionkit's message and nothing else.
//!
//! ## Switching to sessionkit's own layer without logging anyone out
//!
//! The browser holds a tower-sessions cookie (`id` by default, 22 characters); sessionkit's
//! layer reads its own cookie (`sessionkit` by default, 32 characters) and never adopts a value
//! it did not issue, so the cookie value itself cannot carry over. The session can:
//! [`TowerSessionsStore::carry_over`] moves the session a tower-sessions cookie names to a
//! fresh sessionkit id, atomically ([`Store::cycle`](sessionkit_core::Store::cycle)), with its
//! data, owner, creation time and deadline, and the old id stops working at once.
//!
//! At the cut-over, the app runs sessionkit's layer on the same store with the
//! [`carry_over`] middleware in front of it (feature `axum`): a request that brings a
//! tower-sessions cookie and no sessionkit one gets its session carried over, the handler sees
//! it through sessionkit's `Session`, and the response sets the new cookie and removes the old
//! one. Values stored through tower-sessions read as the types the app stored
//! (`Session::get::<T>`), since both sides go through serde (through JSON's data model: a
//! struct, a number, a string, a list of them). Keep the middleware for as long as old cookies
//! may come back (the sessions' lifetime); without it, or for a browser whose session is
//! gone, the user simply starts a new session. Other frameworks do the same three steps with
//! [`CarriedOver::cookie`] and
//! [`CookieConfig::set_cookie`](sessionkit_core::web::CookieConfig::set_cookie).
//!
//! An app that would rather not carry sessions over can also switch and let every user sign
//! in again; the old records expire and cleanup deletes them.
//!
//! ## Sessions still in tower-sessions' own stores
//!
//! `sessionkit migrate --from tower-sessions+postgres://…` (also `+mysql`, `+sqlite`,
//! `+redis`; sessionkit-cli's `import` feature) copies the live sessions of
//! tower-sessions-sqlx-store and tower-sessions-redis-store into a sessionkit store through
//! [`TowerSessionsStore::import`]: the same key and encoding as this store's, so they load
//! through it and [`carry_over`](TowerSessionsStore::carry_over) moves them. Sessions of other
//! origins go through [`TowerSessionsStore::import_data`] under a key of the importer's
//! choosing, and move with [`TowerSessionsStore::carry_over_key`].

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
mod cut_over;
mod key;
mod store;

#[cfg(feature = "axum")]
pub use cut_over::{CarryOver, TOWER_SESSIONS_COOKIE, carry_over};
pub use key::{KEY_DOMAIN, session_key, session_key_for_cookie};
pub use store::{CarriedOver, Imported, TowerSessionsStore};
