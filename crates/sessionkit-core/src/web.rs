//! What every web integration shares: the session cookie's settings, finding it in a request,
//! writing `Set-Cookie`, and turning store errors into responses. Framework crates
//! (`sessionkit-tower`, `sessionkit-actix`, `sessionkit-rocket`) are thin layers over this.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::manager::SessionManager;
use crate::session::{CookieUpdate, Session};
use crate::time::Timestamp;

/// The `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Sent on same-site requests and top-level navigations (default).
    #[default]
    Lax,
    /// Sent on every request (requires `Secure`).
    None,
}

/// Whether the cookie outlives the browser session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// `Max-Age` set to the server-side deadline, kept in step whenever the deadline moves
    /// (default): the session survives a browser restart until it expires on the server.
    #[default]
    Persistent,
    /// No `Max-Age`: the browser drops the cookie when it closes. The server-side deadline
    /// still applies.
    BrowserSession,
}

/// The session cookie's settings. Defaults: name `sessionkit`, `HttpOnly`, `Secure`,
/// `SameSite=Lax`, `Path=/`, no `Domain`, persistent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieConfig {
    /// The cookie's name.
    pub name: String,
    /// The `Path` attribute.
    pub path: String,
    /// The `Domain` attribute (none: host-only).
    pub domain: Option<String>,
    /// The `Secure` attribute. Turn off only for plain-HTTP development.
    pub secure: bool,
    /// The `HttpOnly` attribute.
    pub http_only: bool,
    /// The `SameSite` attribute.
    pub same_site: SameSite,
    /// Persistent or browser-session cookie.
    pub persistence: Persistence,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "sessionkit".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistence: Persistence::Persistent,
        }
    }
}

impl CookieConfig {
    /// The defaults under the name `__Host-sessionkit`: browsers accept such a cookie only if it
    /// is `Secure`, has `Path=/` and no `Domain`, so a subdomain or a plain-HTTP page cannot plant
    /// or overwrite it (the strongest defence against session fixation through cookies).
    pub fn host_prefixed() -> Self {
        Self {
            name: "__Host-sessionkit".into(),
            ..Self::default()
        }
    }

    /// Returns `self` with another name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Returns `self` with `Secure` on or off.
    #[must_use]
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Returns `self` with another `SameSite`.
    #[must_use]
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Returns `self` with another persistence.
    #[must_use]
    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Returns `self` with a `Domain`.
    #[must_use]
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Returns `self` with a `Path`.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Checks the settings, including the rules browsers enforce for `__Host-` and `__Secure-`
    /// names (a cookie breaking them would be silently dropped by the browser).
    ///
    /// # Errors
    /// [`ErrorKind::Config`] saying what is wrong.
    pub fn validate(&self) -> Result<()> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        if !token(&self.name) {
            return Err(Error::config(format!(
                "{:?} is not a valid cookie name",
                self.name
            )));
        }
        let attribute = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !self.path.starts_with('/') || !attribute(&self.path) {
            return Err(Error::config(format!(
                "{:?} is not a valid cookie path",
                self.path
            )));
        }
        if self
            .domain
            .as_deref()
            .is_some_and(|d| d.is_empty() || !attribute(d))
        {
            return Err(Error::config("the cookie domain is not valid"));
        }
        if self.name.starts_with("__Host-")
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return Err(Error::config(
                "a __Host- cookie needs Secure, Path=/ and no Domain",
            ));
        }
        if self.name.starts_with("__Secure-") && !self.secure {
            return Err(Error::config("a __Secure- cookie needs Secure"));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(Error::config("SameSite=None needs Secure"));
        }
        Ok(())
    }

    /// The session cookie's value in `Cookie` header values, if present. With several cookies
    /// of this name, the first one wins (browsers send the most specific path first).
    pub fn find<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        cookie_headers
            .into_iter()
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value.trim().trim_matches('"'))
    }

    /// The `Set-Cookie` header value for a commit's cookie update, or `None` to leave the cookie.
    pub fn set_cookie(&self, update: &CookieUpdate, now: Timestamp) -> Option<String> {
        let (value, max_age) = match update {
            CookieUpdate::Unchanged => return None,
            CookieUpdate::Set { id, expires_at } => {
                let max_age = match self.persistence {
                    Persistence::Persistent => Some(expires_at.duration_since(now)),
                    Persistence::BrowserSession => None,
                };
                (id.expose(), max_age)
            }
            CookieUpdate::Remove => (String::new(), Some(Duration::ZERO)),
        };
        let mut header = format!("{}={value}; Path={}", self.name, self.path);
        if let Some(domain) = &self.domain {
            let _ = write!(header, "; Domain={domain}");
        }
        if let Some(max_age) = max_age {
            let _ = write!(header, "; Max-Age={}", max_age.as_secs());
            if max_age.is_zero() {
                header.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
            }
        }
        if self.http_only {
            header.push_str("; HttpOnly");
        }
        if self.secure {
            header.push_str("; Secure");
        }
        header.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        Some(header)
    }
}

/// A response for a request whose session failed: status and plain-text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPage {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// A session error returned from a handler (`?` converts a sessionkit [`Error`]): both web
/// integrations render it as the configured error page (503 for an unreachable store, 409 for
/// updates that kept conflicting, 500 otherwise), for axum (feature `axum`), actix-web
/// (feature `actix`) and Rocket (feature `rocket`) alike.
#[derive(Debug, Clone)]
pub struct SessionError(pub Arc<Error>);

impl From<Error> for SessionError {
    fn from(err: Error) -> Self {
        Self(Arc::new(err))
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Builds the response for a session failure; replace it to render your own error page.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> ErrorPage + Send + Sync>;

/// The default error page: 503 when the store is unreachable (retry later), 409 when the
/// session's [`update`](crate::Session::update)s kept conflicting with other requests past
/// [`UPDATE_ATTEMPTS`](crate::UPDATE_ATTEMPTS) (nothing was saved; the request may be sent
/// again) or when a request on an old id asked for what only the current id may do
/// ([`ErrorKind::Superseded`]), 500 otherwise. The body names the kind of failure, never the store's message
/// (which may hold hostnames).
pub fn default_error_page(err: &Error) -> ErrorPage {
    let status = match err.kind() {
        ErrorKind::Unavailable => 503,
        ErrorKind::Conflict | ErrorKind::Superseded => 409,
        _ => 500,
    };
    ErrorPage {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("session {}\n", err.kind()),
    }
}

/// Everything a web integration is configured with.
#[derive(Clone)]
pub struct WebConfig {
    /// The cookie.
    pub cookie: CookieConfig,
    /// The error page builder.
    pub error_page: ErrorHandler,
    /// `Cache-Control: no-store` on every response of a request whose session has an owner
    /// (a signed-in page), not only on those that set the cookie.
    pub no_store_when_signed_in: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            cookie: CookieConfig::default(),
            error_page: Arc::new(default_error_page),
            no_store_when_signed_in: false,
        }
    }
}

impl WebConfig {
    /// The session cookie's settings (default: [`CookieConfig::default`]).
    #[must_use]
    pub fn with_cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// Sends `Cache-Control: no-store` on every response of a request that loaded a session
    /// with an owner (default off: only responses that set or remove the cookie get it), so
    /// that no shared or browser cache keeps a signed-in page, which the next user of the
    /// machine could otherwise see with the back button. A request whose handler never used
    /// the session is not covered: the layer does not load a session just to look at it.
    #[must_use]
    pub fn with_no_store_when_signed_in(mut self, on: bool) -> Self {
        self.no_store_when_signed_in = on;
        self
    }

    /// How a session failure is rendered (default: [`default_error_page`]).
    #[must_use]
    pub fn with_error_page(
        mut self,
        page: impl Fn(&Error) -> ErrorPage + Send + Sync + 'static,
    ) -> Self {
        self.error_page = Arc::new(page);
        self
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("cookie", &self.cookie)
            .field("no_store_when_signed_in", &self.no_store_when_signed_in)
            .finish_non_exhaustive()
    }
}

/// Put in a response's extensions by a handler that failed on its session (the integrations'
/// `SessionError` responses do): the layer replaces that response with the configured error page.
#[derive(Clone, Debug)]
pub struct SessionFailure(pub Arc<Error>);

/// What to add to a response after the handler ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseUpdate {
    /// Add these headers (`Set-Cookie`, and `Cache-Control: no-store` with it). Empty when the
    /// cookie stays as it is.
    Headers(Vec<(&'static str, String)>),
    /// The session could not be saved: send this page instead of the handler's response (whose
    /// effects on the session were not saved).
    Replace(ErrorPage),
}

impl WebConfig {
    /// Commits `session` and says what the response needs. The one end-of-request step both
    /// framework integrations run.
    pub async fn finish(&self, session: &Session, now: Timestamp) -> ResponseUpdate {
        // Boxed: inline, the commit's state machine (~630 bytes) made the tower layer's
        // per-request future 1,048 bytes, just over the 1 KiB from which glibc's malloc leaves
        // its per-thread cache for the large bins (a `malloc_consolidate` on every request);
        // two small allocations cost less than that one.
        match Box::pin(session.commit()).await {
            Ok(committed) => {
                let mut headers = Vec::new();
                let cookie = self.cookie.set_cookie(&committed.cookie, now);
                let signed_in = self.no_store_when_signed_in && session.loaded_with_owner();
                if let Some(cookie) = cookie {
                    headers.push(("set-cookie", cookie));
                    headers.push(("cache-control", "no-store".to_owned()));
                } else if signed_in {
                    headers.push(("cache-control", "no-store".to_owned()));
                }
                ResponseUpdate::Headers(headers)
            }
            Err(err) => ResponseUpdate::Replace(self.failure_page(session, &err)),
        }
    }

    /// The error page for a request whose session failed (when saving, or in the handler,
    /// which returned a [`SessionError`]), and its log line: every 5xx at error level, other
    /// statuses (409) at warn, with the status, the error's kind, message and source, and the
    /// short hash of the session's key (never the id).
    pub fn failure_page(&self, session: &Session, err: &Error) -> ErrorPage {
        let page = (self.error_page)(err);
        let key = session.key_for_logs();
        let key = key.as_deref().unwrap_or("-");
        let kind = err.kind();
        let source = std::error::Error::source(err);
        if page.status >= 500 {
            tracing::error!(status = page.status, %kind, session = key, error = %err, ?source, "session failure");
        } else {
            tracing::warn!(status = page.status, %kind, session = key, error = %err, ?source, "session failure");
        }
        page
    }
}

/// A session manager with its web settings: what a framework integration is built from, and
/// the two steps it runs around every handler ([`begin`](Self::begin), [`end`](Self::end)).
#[derive(Clone, Debug)]
pub struct WebSessions {
    /// The manager sessions come from.
    pub manager: SessionManager,
    /// The cookie, error page and caching settings.
    pub web: Arc<WebConfig>,
}

impl WebSessions {
    /// With the default cookie and error page.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            web: Arc::new(WebConfig::default()),
        }
    }

    /// With custom settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for cookie settings a browser would reject (see
    /// [`CookieConfig::validate`]).
    pub fn with_config(manager: SessionManager, web: WebConfig) -> Result<Self> {
        web.cookie.validate()?;
        Ok(Self {
            manager,
            web: Arc::new(web),
        })
    }

    /// The (lazy) session of a request with these `Cookie` header values.
    pub fn begin<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Session {
        self.manager.session(self.web.cookie.find(cookie_headers))
    }

    /// What the response needs once the handler ran: the error page for a `failure` the
    /// handler reported (nothing is committed then), or else [`WebConfig::finish`].
    pub async fn end(&self, session: &Session, failure: Option<&Error>) -> ResponseUpdate {
        match failure {
            Some(err) => ResponseUpdate::Replace(self.web.failure_page(session, err)),
            None => self.web.finish(session, self.manager.now()).await,
        }
    }
}

#[cfg(feature = "rocket")]
#[cfg_attr(docsrs, doc(cfg(feature = "rocket")))]
pub use crate::rocket_extract::{MissingSessionFairing, RocketSession};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    #[test]
    fn defaults_are_secure() {
        let config = CookieConfig::default();
        config.validate().expect("defaults are valid");
        let id = SessionId::generate().expect("rng");
        let now = Timestamp::from_millis(0);
        let update = CookieUpdate::Set {
            id: id.clone(),
            expires_at: now.saturating_add(Duration::from_secs(90)),
        };
        let header = config.set_cookie(&update, now).expect("a cookie");
        assert_eq!(
            header,
            format!(
                "sessionkit={}; Path=/; Max-Age=90; HttpOnly; Secure; SameSite=Lax",
                id.expose()
            )
        );
        let removed = config
            .set_cookie(&CookieUpdate::Remove, now)
            .expect("a removal");
        assert!(
            removed.starts_with("sessionkit=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970"),
            "{removed}"
        );
        assert_eq!(config.set_cookie(&CookieUpdate::Unchanged, now), None);
        let browser = config
            .with_persistence(Persistence::BrowserSession)
            .set_cookie(&update, now)
            .expect("cookie");
        assert!(!browser.contains("Max-Age"), "{browser}");
    }

    #[test]
    fn host_prefix_rules_are_enforced() {
        CookieConfig::host_prefixed().validate().expect("valid");
        for bad in [
            CookieConfig::host_prefixed().with_secure(false),
            CookieConfig::host_prefixed().with_domain("example.com"),
            CookieConfig::host_prefixed().with_path("/app"),
            CookieConfig::default()
                .with_name("__Secure-x")
                .with_secure(false),
            CookieConfig::default()
                .with_same_site(SameSite::None)
                .with_secure(false),
            CookieConfig::default().with_name("bad name"),
            CookieConfig::default().with_name("a;b"),
            CookieConfig::default().with_path("relative"),
        ] {
            assert_eq!(
                bad.validate().expect_err("invalid").kind(),
                ErrorKind::Config,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn flash_levels_are_named_both_ways() {
        use crate::FlashLevel;
        for level in [
            FlashLevel::Info,
            FlashLevel::Success,
            FlashLevel::Warning,
            FlashLevel::Error,
        ] {
            assert_eq!(FlashLevel::from_name(level.as_str()), Some(level));
        }
        for bogus in ["", "Info", "warn", "error "] {
            assert_eq!(FlashLevel::from_name(bogus), None, "{bogus:?}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let config = CookieConfig::default();
        assert_eq!(config.find(["a=1; sessionkit=abc; b=2"]), Some("abc"));
        assert_eq!(config.find(["a=1", "sessionkit=\"q\""]), Some("q"));
        assert_eq!(config.find(["sessionkitx=1; xsessionkit=2"]), None);
        assert_eq!(
            config.find(["sessionkit=first; sessionkit=second"]),
            Some("first")
        );
        assert_eq!(config.find(["garbage;;;==;"]), None);
    }

    #[test]
    fn errors_become_503_409_or_500_without_leaking_details() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "db.internal:5432");
        let page = default_error_page(&Error::unavailable("connect", refused));
        assert_eq!(page.status, 503);
        assert!(!page.body.contains("db.internal"));
        assert_eq!(default_error_page(&Error::corrupt("x")).status, 500);
        let conflict = default_error_page(&Error::conflict("the update of [\"cart\"] conflicted"));
        assert_eq!(
            (conflict.status, conflict.body.as_str()),
            (409, "session conflict\n")
        );
    }
}
