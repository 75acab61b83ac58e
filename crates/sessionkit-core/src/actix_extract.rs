//! `Session` as an actix-web extractor, and session errors and error pages as responses
//! (feature `actix`).

use std::future::{Future, Ready, ready};
use std::pin::Pin;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::session::{Flashes, Session};
use crate::web::{ErrorPage, SessionError, SessionFailure, default_error_page};

impl ErrorPage {
    /// The page as an actix-web response (`Cache-Control: no-store`).
    pub fn to_actix(&self) -> HttpResponse {
        HttpResponse::build(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .content_type(self.content_type)
        .insert_header(("cache-control", "no-store"))
        .body(self.body.clone())
    }
}

/// The default error page, marked so that the session middleware renders its configured one
/// instead.
impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(default_error_page(&self.0).status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = default_error_page(&self.0).to_actix();
        response
            .extensions_mut()
            .insert(SessionFailure(Arc::clone(&self.0)));
        response
    }
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(req.extensions().get::<Session>().cloned().ok_or_else(|| {
            tracing::error!(
                "a handler extracted Session, but no sessionkit SessionMiddleware is installed"
            );
            actix_web::error::ErrorInternalServerError("session middleware missing")
        }))
    }
}

/// Takes the session's flash messages (see [`Flashes`]); a session that fails to load gives
/// the error page.
impl FromRequest for Flashes {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(req, payload).into_inner();
        Box::pin(async move {
            let flashes = session?.take_flashes().await.map_err(SessionError::from)?;
            Ok(Self(flashes))
        })
    }
}
