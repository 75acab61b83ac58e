//! The cut-over from tower-sessions' layer to sessionkit's own, as an axum middleware.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sessionkit_core::web::{CookieConfig, default_error_page};
use sessionkit_core::{CookieUpdate, Store, Timestamp};

use crate::store::TowerSessionsStore;

/// The settings of [`carry_over`]: the compat store over the app's sessionkit store, the
/// tower-sessions cookie to look for (name `id`, path `/` by default) and sessionkit's cookie
/// (the one sessionkit's layer is configured with; [`CookieConfig::default`] by default).
pub struct CarryOver<S = Arc<dyn Store>> {
    store: TowerSessionsStore<S>,
    tower: CookieConfig,
    sessionkit: CookieConfig,
}

impl<S> Clone for CarryOver<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tower: self.tower.clone(),
            sessionkit: self.sessionkit.clone(),
        }
    }
}

impl<S: Store> CarryOver<S> {
    /// Carries sessions of `store` over, with tower-sessions' default cookie (`id`, path `/`)
    /// and sessionkit's default cookie.
    pub fn new(store: TowerSessionsStore<S>) -> Self {
        Self {
            store,
            tower: CookieConfig::default().with_name(TOWER_SESSIONS_COOKIE),
            sessionkit: CookieConfig::default(),
        }
    }

    /// The tower-sessions cookie as the old app set it (its name, and the path and domain the
    /// removal must name for the browser to drop it).
    #[must_use]
    pub fn tower_cookie(mut self, cookie: CookieConfig) -> Self {
        self.tower = cookie;
        self
    }

    /// sessionkit's cookie, as its layer is configured
    /// ([`WebConfig::cookie`](sessionkit_core::web::WebConfig::cookie)).
    #[must_use]
    pub fn sessionkit_cookie(mut self, cookie: CookieConfig) -> Self {
        self.sessionkit = cookie;
        self
    }
}

/// tower-sessions' default cookie name.
pub const TOWER_SESSIONS_COOKIE: &str = "id";

/// axum middleware for the cut-over: put it **in front of** sessionkit's `SessionLayer`
/// (a later `.layer(...)` call) on the same store.
///
/// For a request that brings a tower-sessions cookie and no sessionkit one, it moves the
/// session to a fresh sessionkit id ([`TowerSessionsStore::carry_over`]), adds the new id to
/// the request's cookies (so sessionkit's layer and the handler see the session), sends it to
/// the browser with sessionkit's cookie attributes unless sessionkit's layer already set a
/// newer one, and removes the tower-sessions cookie. A cookie that names no live session is
/// just removed. Every other request passes through untouched, without a store call. A store
/// failure is answered with sessionkit's default error page (503 if the store is unreachable,
/// 500 otherwise), and the error's kind is logged, never the cookie.
///
/// ```
/// use axum::{Router, middleware::from_fn_with_state, routing::get};
/// use sessionkit_core::{Session, SessionManager};
/// use sessionkit_tower::SessionLayer;
/// use sessionkit_tower_sessions::{CarryOver, TowerSessionsStore, carry_over};
///
/// # fn app(store: std::sync::Arc<dyn sessionkit_core::Store>) -> sessionkit_core::Result<Router> {
/// let manager = SessionManager::builder(store.clone()).build()?;
/// let cut_over = CarryOver::new(TowerSessionsStore::new(store));
/// let app = Router::new()
///     .route("/", get(|session: Session| async move {
///         session.get::<String>("name").await.ok().flatten().unwrap_or_default()
///     }))
///     .layer(SessionLayer::new(manager))
///     .layer(from_fn_with_state(cut_over, carry_over));
/// # Ok(app)
/// # }
/// ```
pub async fn carry_over<S: Store>(
    State(cut_over): State<CarryOver<S>>,
    mut request: Request,
    next: Next,
) -> Response {
    let (old, has_new) = {
        let cookies = || cookie_headers(request.headers());
        let old = cut_over.tower.find(cookies()).map(str::to_owned);
        (old, cut_over.sessionkit.find(cookies()).is_some())
    };
    let Some(old) = old.filter(|_| !has_new) else {
        return next.run(request).await;
    };
    let carried = match cut_over.store.carry_over(&old).await {
        Ok(carried) => carried,
        Err(err) => {
            tracing::error!(kind = %err.kind(), "carrying a tower-sessions session over to sessionkit failed");
            let page = default_error_page(&err);
            let status =
                StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(CONTENT_TYPE, page.content_type)], page.body).into_response();
        }
    };
    let now = Timestamp::now();
    let mut set_new = None;
    if let Some(carried) = &carried {
        let pair = format!("{}={}", cut_over.sessionkit.name, carried.id.expose());
        if let Ok(value) = HeaderValue::from_str(&pair) {
            request.headers_mut().append(COOKIE, value);
        }
        set_new = cut_over.sessionkit.set_cookie(&carried.cookie(), now);
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // sessionkit's layer sets its cookie itself when the session's id or deadline changed in
    // this request; that one is newer than the id handed over here.
    let prefix = format!("{}=", cut_over.sessionkit.name);
    let layer_set_it = headers
        .get_all(SET_COOKIE)
        .iter()
        .any(|value| value.to_str().is_ok_and(|v| v.starts_with(&prefix)));
    let removal = cut_over.tower.set_cookie(&CookieUpdate::Remove, now);
    let set_cookies = set_new.filter(|_| !layer_set_it).into_iter().chain(removal);
    for value in set_cookies.filter_map(|v| HeaderValue::from_str(&v).ok()) {
        headers.append(SET_COOKIE, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn cookie_headers(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
}
