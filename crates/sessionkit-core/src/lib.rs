//! # sessionkit-core
//!
//! The core of [sessionkit](https://docs.rs/sessionkit): server-side web sessions that never lose
//! a write. This crate has the session model, the [`Store`] trait every backend implements, and
//! the [`SessionManager`] that web integrations drive. Backends live in their own crates
//! (`sessionkit-memory`, `sessionkit-sqlite`, …); most applications depend on the `sessionkit`
//! facade instead of this crate.
//!
//! ```
//! use sessionkit_core::SessionManager;
//! use sessionkit_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit_core::Result<()> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//!
//! // A request without a cookie: write something, save, hand the id to the browser.
//! let session = manager.session(None);
//! session.insert("visits", &1u32).await?;
//! let sessionkit_core::CookieUpdate::Set { id, .. } = session.commit().await?.cookie else {
//!     unreachable!("a new session with data gets a cookie")
//! };
//!
//! // The next request presents the cookie.
//! let session = manager.session(Some(&id.expose()));
//! session.update("visits", |n: &mut u32| *n += 1).await?;
//! assert_eq!(session.get::<u32>("visits").await?, Some(2));
//! let _ = session.commit().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## The life cycle of a session
//!
//! 1. **Request arrives.** [`SessionManager::session`] takes the cookie value and returns a
//!    [`Session`] handle without any I/O. A value that is not a well-formed id (wrong length or
//!    alphabet) is never sent to the store.
//! 2. **First access.** The first `get`/`insert`/… loads the record from the store under the
//!    id's [`SessionKey`] (its SHA-256). A missing, expired or unknown session gives an empty,
//!    fresh session: in strict mode (the default) the presented id is never adopted. On
//!    stores with per-key reads, a session this process has found larger than
//!    [`PARTIAL_LOAD_ABOVE`] (64 KiB) is loaded key by key: the first access brings the
//!    metadata and the keys it needs, later ones the keys they need, and writes need nothing
//!    more (a login's new id stays remembered); other sessions come whole, in one round trip.
//! 3. **Handler works.** Reads come from the loaded copy; writes are recorded as a [`Change`]
//!    (keys set, keys removed, cleared, owner, deadline).
//! 4. **Commit.** [`Session::commit`] (the web layer calls it) writes only the change:
//!    - nothing touched → no store call at all; nothing changed → no write, unless the idle
//!      deadline is due for a (throttled) extension;
//!    - a new session with data → `create` under a fresh id (insert only; a collision draws a
//!      new id) and the cookie is set;
//!    - `cycle_id()` → the store moves the session to a fresh id atomically; the old id keeps
//!      pointing at it for the grace period, then is gone;
//!    - `destroy()` → the session is deleted and the cookie removed;
//!    - otherwise → `apply(change)`, atomic and update-only; a key read and rewritten by
//!      `update` is written only if it still holds what was read, else the update re-runs on
//!      the fresh value (see below).
//! 5. **Expiry.** Activity moves the deadline to `now + idle timeout`, capped at
//!    `created + absolute lifetime`, whenever that moves it by at least the touch fraction of
//!    the idle window (10 % by default; reads and writes alike), so a session may expire up to
//!    that fraction early and a busy session rewrites its deadline rarely. Expired sessions are invisible at once and deleted later by
//!    the [`CleanupPolicy`] (background task, 1-in-N loads, or the CLI's `purge`).
//!
//! ## Concurrency guarantee
//!
//! Stores apply changes atomically and never as an overwrite of the whole session. For two (or
//! a hundred) concurrent requests of one browser, on any backend and across app processes:
//!
//! - **Different keys merge.** Requests that write different keys all keep their writes.
//! - **[`Session::update`] of one key is never lost.** The write is conditional on the value
//!   the request read (the bytes themselves are the witness, see [`Change::expected`]); if
//!   another request changed the key first, the store writes nothing of this commit, and the
//!   commit reads the key again, re-runs the update closures on the fresh value and retries.
//!   The conditional commits of one session take turns within a process (requests of
//!   other processes are settled by the store), so one request meets at most one conflict
//!   from the updates of its own process.
//!   With no conflict this is the same single store write as a blind one. After
//!   [`UPDATE_ATTEMPTS`] conflicting rounds in a row the commit fails with
//!   [`ErrorKind::Conflict`] and writes nothing of the request (the web integrations answer
//!   409); the pending changes stay, so calling [`Session::commit`] again retries them.
//! - **Blind writes of one key: the last commit wins.** [`Session::insert`],
//!   [`Session::remove`], [`Session::take`] and [`Session::clear`] do not depend on what was
//!   read, so they carry no condition.
//! - **A destroyed session stays destroyed.** A request that commits after the session was
//!   destroyed or expired (a slow request racing a logout) finds it gone and **does not
//!   re-create it** ([`Committed::gone`] tells the caller); a request racing a login in
//!   another tab follows the session to its new id.
//!
//! ## Security defaults
//!
//! - Ids: 192 bits from the OS CSPRNG, base64url, fixed length; validated before any store call.
//! - Stores see only SHA-256 hashes of ids, so a leaked table or backup holds no usable session.
//!   Hooks and logs see the hash; `Debug` of a [`SessionId`] is redacted.
//! - Strict mode on: an unknown or expired id is never adopted (no session fixation).
//! - Idle timeout 24 h and absolute lifetime 7 days, both enforced on the server.
//! - `cycle_id()` for login; the old id's grace period (5 s by default) serves in-flight requests
//!   without ever telling them the new id (see *The grace window* below).
//! - Stored values are MessagePack decoded into the type asked for: no native-object
//!   deserialization, and a value that no longer fits its type is a typed error for that key.
//! - Values above 1 MiB (configurable) are refused with [`ErrorKind::TooLarge`] before any write.
//! - Every error page the web integrations send is logged (5xx at error level, 409 at warn)
//!   with the error's kind and the short hash of the session's key, never the id.
//!
//! ## What sessionkit defends against, and what it leaves to the application
//!
//! Defended, with the defaults above:
//!
//! - **Session fixation**: strict mode never adopts an id the server did not issue;
//!   [`Session::cycle_id`] at login gives the session a new id, and the old id's grace window
//!   (below) cannot be turned into the session's new id or owner. A `__Host-` cookie
//!   ([`web::CookieConfig::host_prefixed`]) also stops subdomains from planting ids.
//! - **Hijacking through logs, errors or tooling**: no id is ever logged, returned in an error
//!   or printed by the CLI; hooks and log lines see the first 12 hex digits of the id's SHA-256.
//!   Error pages name only the kind of failure; store URLs are printed with their passwords
//!   hidden.
//! - **Hijacking through a copied table or backup**: stores hold SHA-256 hashes of ids, which
//!   cannot be turned back into a cookie.
//! - **Cache leaks**: every response that sets or removes the cookie is `Cache-Control:
//!   no-store`, and [`web::WebConfig::with_no_store_when_signed_in`] extends that to every
//!   response of a signed-in session.
//! - **Hostile input**: malformed cookies never reach the store; keys, owners and values have
//!   size limits checked before any write; stored values are decoded into the type asked for
//!   (no native-object deserialization), and corrupt records are typed errors, never panics.
//! - **Cross-site requests**: cookies are `SameSite=Lax` by default, so browsers do not send
//!   them with cross-site `POST`s; with the CSRF layer ([`csrf`]: `sessionkit_tower::CsrfLayer`,
//!   `sessionkit_actix::CsrfMiddleware`, `sessionkit_rocket::CsrfFairing`), every unsafe
//!   request also needs a same-site `Origin`
//!   and a token of its own session ([`Session::csrf_token`]), which covers same-site
//!   attackers (a sibling subdomain) and browsers without `SameSite` too. The token's secret
//!   changes at [`Session::cycle_id`], so a token learnt before a login is worthless after it.
//!
//! Left to the application:
//!
//! - **Putting the CSRF layer in and the tokens in the forms**: the layer is opt-in, and the
//!   application renders [`Session::csrf_token`] into every form (or sends it as a header from
//!   scripts); `GET` handlers must not change state, since the layer lets safe methods pass.
//! - **Authentication and authorization**: checking passwords, rate-limiting login attempts,
//!   deciding what an owner may do. sessionkit only remembers who the owner is.
//! - **Cross-site scripting**: `HttpOnly` keeps scripts from reading the cookie, not from
//!   acting on the page with it.
//! - **Transport**: `Secure` cookies need HTTPS in front of the app; turn `Secure` off only for
//!   plain-HTTP development.
//! - **Data at rest**: session values are stored as they are (only ids are hashed); protect the
//!   store as you protect the database, and keep secrets out of sessions.
//! - **The grace window itself**: for its few seconds, the holder of an old id can read and
//!   change the session's data (see below); set the grace period to zero if that matters more
//!   than in-flight requests.
//!
//! ## Flash messages and CSRF tokens
//!
//! [`Session::flash`] queues a message for the next page (a redirect's target);
//! [`Session::take_flashes`], or the [`Flashes`] extractor, returns the queued ones and removes
//! them. A session queues at most [`MAX_FLASHES`] (the oldest go first), each at most
//! [`MAX_FLASH_BYTES`]. Adding never loses a message under concurrency, and each message is
//! returned by exactly one request, however many pages of the session load at once.
//!
//! [`Session::csrf_token`] gives a fresh masked token per render; [`Session::verify_csrf`]
//! checks one in constant time; the web integrations' CSRF layer checks every unsafe request
//! before the handler ([`csrf`] says exactly what it checks and answers).
//!
//! ```
//! use sessionkit_core::{FlashLevel, SessionManager};
//! use sessionkit_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit_core::Result<()> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! // A form was posted: do the work, queue a message, redirect.
//! let session = manager.session(None);
//! session.flash(FlashLevel::Success, "Saved.").await?;
//! let token = session.csrf_token().await?; // rendered into the next page's forms
//! let sessionkit_core::CookieUpdate::Set { id, .. } = session.commit().await?.cookie else {
//!     unreachable!("a flash starts a session")
//! };
//!
//! // The page the redirect leads to shows the message once.
//! let session = manager.session(Some(&id.expose()));
//! let shown = session.take_flashes().await?;
//! assert_eq!(shown[0].message, "Saved.");
//! assert!(session.take_flashes().await?.is_empty());
//! assert!(session.verify_csrf(&token).await?);
//! # Ok(())
//! # }
//! ```
//!
//! ## Observability: metrics and spans
//!
//! The manager measures its store calls (a latency histogram by store and operation, errors
//! by kind) and counts the life-cycle events (sessions created, destroyed, cycled and purged,
//! update conflicts and retries, cleanup runs and batches) through the
//! [`metrics`](https://docs.rs/metrics) facade, and runs every store call in a `DEBUG`
//! tracing span (store, operation, the short key hash, outcome), so a slow request shows
//! which store call was slow. The library installs no recorder: an application that wants
//! the numbers installs one (a Prometheus exporter, say) and calls [`metrics::describe`].
//! No label ever holds a session id, a key hash or an owner. The names, labels and span
//! fields are in one table in the [`metrics`] module.
//!
//! ## The grace window
//!
//! After [`Session::cycle_id`], the old id keeps reaching the session for the grace period
//! ([`SessionManagerBuilder::cycle_grace`], 5 s by default), because a browser often has
//! requests in flight that were sent with the old cookie before the login's response arrived;
//! without the window, those requests would find no session and their writes would be lost.
//!
//! The threat: session fixation. An attacker who planted a pre-login id in the victim's browser
//! holds that id, which becomes the old id at the victim's login. The window is therefore
//! narrow by design. A request that presents an old id in its grace period:
//!
//! - **may** read and write the session's data (as the victim's own in-flight requests must);
//! - **may not** cycle the id, set the owner or the per-session expiry, or move the deadline:
//!   [`Session::cycle_id`], [`Session::set_owner`] and [`Session::set_expiry`] fail with
//!   [`ErrorKind::Superseded`] (answered with 409 by the web integrations), and so does the
//!   commit of a request that set the owner or the expiry before another request cycled the
//!   id under it;
//! - **never** receives an id: not the new one, and no other (no `Set-Cookie` at all);
//! - may [`destroy`](Session::destroy) the session (logging out is never an escalation).
//!
//! So the holder of an old id can read and change the session's data for at most the grace
//! period, and can never end up owning the session or keep it alive. To close the window
//! entirely, set `cycle_grace(Duration::ZERO)`: the old id dies at once, and requests in flight
//! during a login find no session (a write among them starts a fresh, empty session, whose
//! cookie may then replace the login's in the browser: the user appears logged out).
//! Serving the cookie as `__Host-` ([`web::CookieConfig::host_prefixed`]) stops subdomains and
//! plain-HTTP pages from planting ids in the first place.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
mod actix_extract;
#[cfg(feature = "axum")]
mod axum_extract;
pub mod backend;
mod change;
pub mod codec;
pub mod csrf;
mod error;
mod id;
mod lifecycle;
mod manager;
pub mod metrics;
mod record;
pub mod registry;
#[cfg(feature = "rocket")]
mod rocket_extract;
mod session;
pub mod store;
mod time;
pub mod web;

pub use change::{ApplyOutcome, Change};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use id::{ID_BYTES, ID_LEN, InvalidSessionId, KEY_BYTES, SessionId, SessionKey};
pub use lifecycle::{
    CleanupPolicy, Config, Expiry, NoHooks, PURGE_REPORT_BATCH, PURGE_REPORT_MAX_BATCHES,
    SessionHooks,
};
pub use manager::{SessionManager, SessionManagerBuilder};
pub use record::{Data, Record, StoredSession};
pub use registry::{OpenMode, Registry};
pub use session::{
    Committed, CookieUpdate, Flash, FlashLevel, Flashes, LARGE_SESSION_SLOTS, MAX_FLASH_BYTES,
    MAX_FLASHES, MAX_KEY_LEN, MAX_OWNER_LEN, PARTIAL_LOAD_ABOVE, RESERVED_PREFIX, Session,
    UPDATE_ATTEMPTS,
};
pub use store::{
    Capabilities, CycleOutcome, ListFilter, ListState, Page, PageRequest, PurgeReport,
    PurgedSession, Store, UnsupportedPolicy,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

/// Re-exported so stores can implement [`Store`] with the same macro version.
pub use async_trait::async_trait;
