//! `Session` as an axum extractor, and session errors and error pages as responses (feature
//! `axum`).

use axum_core::extract::FromRequestParts;
use std::sync::Arc;

use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use crate::session::{Flashes, Session};
use crate::web::{ErrorPage, SessionError, SessionFailure, default_error_page};

impl ErrorPage {
    /// The page as an HTTP response (`Cache-Control: no-store`), with any body type a string
    /// converts into.
    pub fn into_http<B: From<String>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The default error page, marked so that the session layer renders its configured one instead.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let mut response: Response = default_error_page(&self.0).into_http();
        response
            .extensions_mut()
            .insert(SessionFailure(Arc::clone(&self.0)));
        response
    }
}

/// The rejection when a handler asks for a [`Session`] but no session layer ran.
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("a handler extracted Session, but no sessionkit SessionLayer is installed");
        (StatusCode::INTERNAL_SERVER_ERROR, "session layer missing\n").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// Takes the session's flash messages; without a session layer, or when the session fails to
/// load, the rejection is the same response a handler would get (500 / the error page).
impl<S: Send + Sync> FromRequestParts<S> for Flashes {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match session.take_flashes().await {
            Ok(flashes) => Ok(Self(flashes)),
            Err(err) => Err(SessionError::from(err).into_response()),
        }
    }
}
