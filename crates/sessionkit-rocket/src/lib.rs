//! # sessionkit-rocket
//!
//! sessionkit for [Rocket](https://rocket.rs) 0.5: a [`SessionFairing`] that gives every
//! request a [`Session`] and saves what the handler changed, the `Session` and
//! [`Flashes`](sessionkit_core::Flashes) request guards, [`SessionError`] as a responder, and a
//! [`CsrfFairing`]. Handlers are the same as with `sessionkit-tower` (axum) and
//! `sessionkit-actix`: they take `sessionkit::Session` and return `Result<_, SessionError>`.
//!
//! ```no_run
//! use rocket::get;
//! use sessionkit::{Session, SessionManager};
//! use sessionkit_rocket::{SessionError, SessionFairing};
//!
//! #[get("/")]
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: &mut u64| { *n += 1; *n }).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(sessionkit::open("sqlite://sessions.db").await?).build()?;
//! rocket::build()
//!     .attach(SessionFairing::new(manager))
//!     .mount("/", rocket::routes![visits])
//!     .launch()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Life cycle of a request
//! 1. **Request fairing** ([`SessionFairing`], before routing): reads the session cookie
//!    (default name `sessionkit`; see [`CookieConfig`]) from the `Cookie` headers and puts a
//!    lazy [`Session`] in the request's local cache. No store call happens here, nor later
//!    unless the handler uses the session; a malformed cookie never reaches the store.
//! 2. **CSRF check** (with [`CsrfFairing`]): unsafe requests (POST, PUT, PATCH, DELETE, …)
//!    without a same-site origin and a valid token are answered 403 before any route of the
//!    app runs.
//! 3. **Guards and handler**: the `Session` guard hands out that request's session (a clone of
//!    one handle); `Flashes` takes the queued flash messages. A handler that returns
//!    [`SessionError`] (via `?`) records the failure for the fairing.
//! 4. **Response fairing**: commits the session's changes and sets or removes the cookie
//!    (`HttpOnly; Secure; SameSite=Lax; Path=/` by default), with `Cache-Control: no-store` on
//!    every response that does (and, with
//!    [`WebConfig::with_no_store_when_signed_in`], on every signed-in page). If saving fails, or
//!    the handler returned a `SessionError`, the response is replaced by the error page (503
//!    when the store is unreachable, 409 when updates kept conflicting or an old id asked for
//!    what only the current one may do, 500 otherwise; [`WebConfig::with_error_page`]
//!    customises it), logged at error level for a 5xx and warn level otherwise, with the
//!    failure's kind and a short hash of the session key, never the id. A failure never turns
//!    into a silently fresh session.
//!
//! This is what `sessionkit-tower`'s layer and `sessionkit-actix`'s middleware do; all three
//! run [`WebConfig::finish`] and pass the same HTTP suite (`sessionkit-conformance`).
//!
//! ## Rocket specifics
//! - A route that takes `Session` or `Flashes` stops the launch (a Rocket *sentinel*) when no
//!   `SessionFairing` is attached, instead of failing each request with a 500.
//! - An error page replaces the handler's response with its headers, except the security
//!   policy headers Rocket's Shield (or the app) set and `Server`, which it keeps.
//! - Rocket's `CookieJar` is not used for the session cookie: the fairing writes
//!   `Set-Cookie` itself, so that the header is the same byte for byte as with tower and
//!   actix-web. Other cookies of the app are unaffected.
//! - Rocket lets code that runs before a handler read only the first 512 bytes of a body, so
//!   [`CsrfFairing`] finds a form's token field only there; see its docs.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod csrf;
pub use csrf::CsrfFairing;
pub use sessionkit_core::csrf::{CsrfConfig, Refusal};

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Build, Data, Request, Response, Rocket};
pub use sessionkit_core::Session;
pub use sessionkit_core::web::{CookieConfig, Persistence, SameSite, SessionError, WebConfig};
use sessionkit_core::web::{ErrorPage, ResponseUpdate, RocketSession, WebSessions};
use sessionkit_core::{Result, SessionManager};

/// The name [`SessionFairing`] has in Rocket's list of fairings.
pub const SESSION_FAIRING_NAME: &str = "sessionkit session";

/// Adds sessions to a Rocket app (`rocket::build().attach(SessionFairing::new(manager))`).
///
/// A singleton fairing: attaching a second one replaces the first.
#[derive(Clone, Debug)]
pub struct SessionFairing(WebSessions);

impl SessionFairing {
    /// A fairing with the default cookie and error page.
    pub fn new(manager: SessionManager) -> Self {
        Self(WebSessions::new(manager))
    }

    /// A fairing with custom settings (cookie, error page), as
    /// [`SessionLayer::with_config`](https://docs.rs/sessionkit-tower) and
    /// [`SessionMiddleware::with_config`](https://docs.rs/sessionkit-actix) take them too.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for cookie settings a browser
    /// would reject (see [`CookieConfig::validate`]).
    pub fn with_config(manager: SessionManager, web: WebConfig) -> Result<Self> {
        WebSessions::with_config(manager, web).map(Self)
    }
}

#[rocket::async_trait]
impl Fairing for SessionFairing {
    fn info(&self) -> Info {
        Info {
            name: SESSION_FAIRING_NAME,
            kind: Kind::Ignite | Kind::Request | Kind::Response | Kind::Singleton,
        }
    }

    /// Marks the app as having sessions, for the guards' launch-time check.
    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        Ok(RocketSession::mark_attached(rocket))
    }

    /// Gives the request its (lazy) session.
    async fn on_request(&self, request: &mut Request<'_>, _data: &mut Data<'_>) {
        let session = self.0.begin(request.headers().get("cookie"));
        RocketSession::install(request, session);
    }

    /// Commits the session and adds its headers, or answers with the error page.
    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        let state = RocketSession::of(request);
        let Some(session) = state.session() else {
            return;
        };
        let failure = state.take_failure();
        match self.0.end(session, failure.as_deref()).await {
            ResponseUpdate::Headers(headers) => {
                for (name, value) in headers {
                    if name == "set-cookie" {
                        response.adjoin_header(Header::new(name, value));
                    } else {
                        response.set_header(Header::new(name, value));
                    }
                }
            }
            ResponseUpdate::Replace(page) => replace(response, &page),
        }
    }
}

/// Headers of the replaced response that an error page keeps: Rocket's `Server` and the
/// security policies that Rocket's Shield (a response fairing that runs before this one) or
/// the app set. Everything else the handler set (`Location`, content headers, its cookies)
/// goes with its response.
const KEPT_HEADERS: &[&str] = &[
    "Server",
    "Content-Security-Policy",
    "Cross-Origin-Embedder-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "Permissions-Policy",
    "Referrer-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-DNS-Prefetch-Control",
    "X-Frame-Options",
    "X-Permitted-Cross-Domain-Policies",
    "X-XSS-Protection",
];

/// Replaces `response` with `page`, keeping the [`KEPT_HEADERS`].
fn replace(response: &mut Response<'_>, page: &ErrorPage) {
    let replaced = std::mem::replace(response, page.to_rocket());
    for name in KEPT_HEADERS {
        for value in replaced.headers().get(name) {
            response.adjoin_header(Header::new(*name, value.to_owned()));
        }
    }
}
