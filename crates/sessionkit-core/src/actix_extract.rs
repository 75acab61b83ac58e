//! `Session` as an actix-web extractor (feature `actix`).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::session::Session;

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
