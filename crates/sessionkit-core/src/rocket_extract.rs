//! `Session` and `Flashes` as Rocket 0.5 request guards, session errors and error pages as
//! Rocket responders, and the request-local state that `sessionkit-rocket`'s fairing shares with
//! them (feature `rocket`).
//!
//! These impls live here, not in `sessionkit-rocket`, for the orphan rule: Rocket's traits on
//! sessionkit's own `Session` and `SessionError` let a handler take `sessionkit::Session` and
//! return `Result<_, sessionkit::SessionError>` in a Rocket app exactly as in an axum or
//! actix-web one (features `axum` and `actix` do the same for those frameworks).

use std::sync::{Arc, Mutex, PoisonError};

use rocket::http::Status;
use rocket::request::{FromParam, FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};
use rocket::{Build, Ignite, Rocket, Sentinel};

use crate::error::Error;
use crate::session::{FlashLevel, Flashes, Session};
use crate::web::{ErrorPage, SessionError, default_error_page};

impl ErrorPage {
    /// The page as a Rocket response (`Cache-Control: no-store`). A status outside 100–599
    /// becomes 500.
    pub fn to_rocket<'r>(&self) -> Response<'r> {
        let status = if (100..=599).contains(&self.status) {
            Status::new(self.status)
        } else {
            Status::InternalServerError
        };
        Response::build()
            .status(status)
            .raw_header("Content-Type", self.content_type)
            .raw_header("Cache-Control", "no-store")
            .sized_body(self.body.len(), std::io::Cursor::new(self.body.clone()))
            .finalize()
    }
}

/// An error page answers as itself (for a custom catcher, say).
impl<'r> Responder<'r, 'static> for ErrorPage {
    fn respond_to(self, _request: &'r Request<'_>) -> response::Result<'static> {
        Ok(self.to_rocket())
    }
}

/// The session state of one Rocket request, kept in the request's local cache: the session
/// that `sessionkit_rocket::SessionFairing` gave the request, and the session failure a
/// handler (or a guard) reported, which the fairing renders as the configured error page
/// instead of committing. The [`Session`] and [`Flashes`] guards and the [`SessionError`]
/// responder read and write it; an application has no need to.
#[derive(Debug, Default)]
pub struct RocketSession {
    session: Option<Session>,
    failure: Mutex<Option<Arc<Error>>>,
}

/// What the session fairing leaves in Rocket's managed state, for the guards' sentinels.
struct FairingAttached;

impl RocketSession {
    /// Gives `request` its session (the fairing does, before routing). The first call of a
    /// request wins; later ones return the state already there.
    pub fn install<'r>(request: &'r Request<'_>, session: Session) -> &'r Self {
        request.local_cache(move || Self {
            session: Some(session),
            failure: Mutex::default(),
        })
    }

    /// The request's state (one without a session when no fairing installed one).
    pub fn of<'r>(request: &'r Request<'_>) -> &'r Self {
        request.local_cache(Self::default)
    }

    /// The request's session, if the fairing ran.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Records that the request failed on its session: the fairing then answers with the
    /// configured error page for `err` and commits nothing.
    pub fn fail(&self, err: Arc<Error>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
    }

    /// The failure recorded by [`fail`](Self::fail), taken.
    pub fn take_failure(&self) -> Option<Arc<Error>> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Marks `rocket` as having the session fairing (its ignite step does), which the
    /// [`Session`] and [`Flashes`] guards' sentinels check at launch.
    pub fn mark_attached(rocket: Rocket<Build>) -> Rocket<Build> {
        if rocket.state::<FairingAttached>().is_some() {
            rocket
        } else {
            rocket.manage(FairingAttached)
        }
    }

    /// Whether [`mark_attached`](Self::mark_attached) marked `rocket`.
    pub fn attached(rocket: &Rocket<Ignite>) -> bool {
        rocket.state::<FairingAttached>().is_some()
    }
}

/// A route taking a [`Session`] or [`Flashes`] stops the launch when no session fairing is
/// attached, rather than failing every request.
fn abort_without_fairing(rocket: &Rocket<Ignite>) -> bool {
    let missing = !RocketSession::attached(rocket);
    if missing {
        tracing::error!(
            "a route takes a sessionkit Session or Flashes, but no sessionkit SessionFairing is attached"
        );
    }
    missing
}

impl Sentinel for Session {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_fairing(rocket)
    }
}

impl Sentinel for Flashes {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        abort_without_fairing(rocket)
    }
}

/// The default error page, with the failure recorded for the session fairing, which renders
/// its configured page instead (and logs it) and commits nothing.
impl<'r> Responder<'r, 'static> for SessionError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        RocketSession::of(request).fail(Arc::clone(&self.0));
        Ok(default_error_page(&self.0).to_rocket())
    }
}

/// The guard's error when a handler asks for a [`Session`] but no session fairing ran.
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionFairing;

/// The request's session, as the session fairing gave it. Without the fairing the guard fails
/// with a 500 (and the launch stops first: see the [`Sentinel`] impl).
#[rocket::async_trait]
impl<'r> FromRequest<'r> for Session {
    type Error = MissingSessionFairing;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match RocketSession::of(request).session() {
            Some(session) => Outcome::Success(session.clone()),
            None => {
                tracing::error!(
                    "a handler asked for Session, but no sessionkit SessionFairing is attached"
                );
                Outcome::Error((Status::InternalServerError, MissingSessionFairing))
            }
        }
    }
}

/// Takes the session's flash messages (see [`Flashes`]); a session that fails to load gives
/// the error page, as a handler's [`SessionError`] would.
#[rocket::async_trait]
impl<'r> FromRequest<'r> for Flashes {
    type Error = SessionError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let state = RocketSession::of(request);
        let Some(session) = state.session() else {
            tracing::error!(
                "a handler asked for Flashes, but no sessionkit SessionFairing is attached"
            );
            let err = Error::config("no sessionkit SessionFairing is attached");
            return Outcome::Error((Status::InternalServerError, err.into()));
        };
        match session.take_flashes().await {
            Ok(flashes) => Outcome::Success(Self(flashes)),
            Err(err) => {
                let err = SessionError::from(err);
                state.fail(Arc::clone(&err.0));
                let status = Status::new(default_error_page(&err.0).status);
                Outcome::Error((status, err))
            }
        }
    }
}

/// A level in a route's path (`/flash/<level>`): its [`as_str`](FlashLevel::as_str) name.
impl<'a> FromParam<'a> for FlashLevel {
    type Error = &'a str;

    fn from_param(param: &'a str) -> Result<Self, &'a str> {
        FlashLevel::from_name(param).ok_or(param)
    }
}
