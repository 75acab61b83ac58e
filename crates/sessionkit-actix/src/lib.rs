//! # sessionkit-actix
//!
//! sessionkit for [actix-web](https://docs.rs/actix-web) 4: a [`SessionMiddleware`] that gives
//! every request a [`Session`] and saves what the handler changed, and the `Session` extractor.
//! Unlike actix-session's, the session handle is `Send`: it can move into spawned tasks.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use sessionkit::{Session, SessionManager};
//! use sessionkit_actix::{SessionError, SessionMiddleware};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: &mut u64| { *n += 1; *n }).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(sessionkit::open("sqlite://sessions.db").await?).build()?;
//! HttpServer::new(move || {
//!     App::new().wrap(SessionMiddleware::new(manager.clone())).route("/", web::get().to(visits))
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! The middleware behaves exactly as `sessionkit-tower`'s layer (both run
//! [`WebConfig::finish`]): no store call unless the handler uses the session, `Set-Cookie` with
//! `Cache-Control: no-store`, and a 503/500 error page (customisable) when saving fails.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod csrf;
pub use csrf::{CsrfMiddleware, CsrfMiddlewareService};
pub use sessionkit_core::csrf::CsrfConfig;

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{COOKIE, HeaderName, HeaderValue};
pub use sessionkit_core::Session;
pub use sessionkit_core::web::{CookieConfig, Persistence, SameSite, SessionError, WebConfig};
use sessionkit_core::web::{ResponseUpdate, SessionFailure, WebSessions};
use sessionkit_core::{Result, SessionManager};

/// Adds sessions to an actix-web app (`App::new().wrap(SessionMiddleware::new(manager))`).
#[derive(Clone, Debug)]
pub struct SessionMiddleware {
    sessions: WebSessions,
}

impl SessionMiddleware {
    /// Middleware with the default cookie and error page.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            sessions: WebSessions::new(manager),
        }
    }

    /// Middleware with custom settings (cookie, error page), as
    /// [`SessionLayer::with_config`](https://docs.rs/sessionkit-tower) takes them too.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for cookie settings a browser
    /// would reject (see [`CookieConfig::validate`]).
    pub fn with_config(manager: SessionManager, web: WebConfig) -> Result<Self> {
        let sessions = WebSessions::with_config(manager, web)?;
        Ok(Self { sessions })
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            sessions: self.sessions.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the app.
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    sessions: WebSessions,
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let cookies = request
            .headers()
            .get_all(COOKIE)
            .filter_map(|v| v.to_str().ok());
        let session = self.sessions.begin(cookies);
        request.extensions_mut().insert(session.clone());
        let (service, sessions) = (Rc::clone(&self.service), self.sessions.clone());
        Box::pin(async move {
            let mut response = service.call(request).await?;
            let failure = response
                .response_mut()
                .extensions_mut()
                .remove::<SessionFailure>();
            match sessions
                .end(&session, failure.as_ref().map(|f| &*f.0))
                .await
            {
                ResponseUpdate::Headers(headers) => {
                    for (name, value) in headers {
                        let Ok(value) = HeaderValue::from_str(&value) else {
                            continue;
                        };
                        let name = HeaderName::from_static(name);
                        if name == actix_web::http::header::SET_COOKIE {
                            response.headers_mut().append(name, value);
                        } else {
                            response.headers_mut().insert(name, value);
                        }
                    }
                    Ok(response.map_into_left_body())
                }
                ResponseUpdate::Replace(page) => {
                    let (request, _) = response.into_parts();
                    Ok(ServiceResponse::new(request, page.to_actix()).map_into_right_body())
                }
            }
        })
    }
}
