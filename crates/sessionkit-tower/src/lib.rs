//! # sessionkit-tower
//!
//! sessionkit for [tower](https://docs.rs/tower) and [axum](https://docs.rs/axum): a [`SessionLayer`] that gives every
//! request a [`Session`] and saves what the handler changed, and the `Session` extractor.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use sessionkit::{Session, SessionManager};
//! use sessionkit_tower::{SessionError, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.update("visits", |n: &mut u64| { *n += 1; *n }).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(sessionkit::open("sqlite://sessions.db").await?).build()?;
//! let app = Router::new().route("/", get(visits)).layer(SessionLayer::new(manager));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## What the layer does
//! - Reads the session cookie (default name `sessionkit`; see [`CookieConfig`]). No store call
//!   happens unless the handler uses the session; a malformed cookie never reaches the store and
//!   is removed.
//! - After the handler, commits the session's changes and sets or removes the cookie, with
//!   `Cache-Control: no-store` on every response that does.
//! - If saving fails, the handler's response is replaced by the error page (503 when the store
//!   is unreachable, 409 when updates kept conflicting, 500 otherwise;
//!   [`WebConfig::with_error_page`] customises it). A failure
//!   never turns into a silently fresh session.
//! - Handlers see load errors themselves (`session.get(..).await` returns `Err`) and decide;
//!   returning [`SessionError`] (via `?`) renders the same error page.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod csrf;
pub use csrf::{CsrfLayer, CsrfService};
pub use sessionkit_core::csrf::CsrfConfig;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{COOKIE, HeaderName};
use http::{HeaderValue, Request, Response};
pub use sessionkit_core::Session;
pub use sessionkit_core::web::{CookieConfig, Persistence, SameSite, SessionError, WebConfig};
use sessionkit_core::web::{ResponseUpdate, SessionFailure, WebSessions};
use sessionkit_core::{Result, SessionManager};
use tower_layer::Layer;
use tower_service::Service;

/// Adds sessions to a tower service (an axum `Router`).
#[derive(Clone, Debug)]
pub struct SessionLayer {
    sessions: WebSessions,
}

impl SessionLayer {
    /// A layer with the default cookie and error page.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            sessions: WebSessions::new(manager),
        }
    }

    /// A layer with custom settings (cookie, error page), as
    /// [`SessionMiddleware::with_config`](https://docs.rs/sessionkit-actix) takes them too.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for cookie settings a browser
    /// would reject (see [`CookieConfig::validate`]).
    pub fn with_config(manager: SessionManager, web: WebConfig) -> Result<Self> {
        let sessions = WebSessions::with_config(manager, web)?;
        Ok(Self { sessions })
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            sessions: self.sessions.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around the inner one.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    sessions: WebSessions,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cookies = request
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let session = self.sessions.begin(cookies);
        request.extensions_mut().insert(session.clone());
        let sessions = self.sessions.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let failure = response.extensions_mut().remove::<SessionFailure>();
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
                        if name == http::header::SET_COOKIE {
                            response.headers_mut().append(name, value);
                        } else {
                            response.headers_mut().insert(name, value);
                        }
                    }
                    Ok(response)
                }
                ResponseUpdate::Replace(page) => Ok(page.into_http()),
            }
        })
    }
}
