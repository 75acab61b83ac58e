//! Cross-site request forgery protection: what the web integrations' CSRF layer
//! (`sessionkit_tower::CsrfLayer`, `sessionkit_actix::CsrfMiddleware`,
//! `sessionkit_rocket::CsrfFairing`) checks before the handler runs.
//!
//! Every request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS` and `TRACE`):
//! 1. **Origin.** If it carries `Origin` (or, without it, `Referer`), that origin must be one
//!    of [`CsrfConfig::allowed_origins`], or, when none are configured, the request's own
//!    `Host`. `Origin: null` is refused. A request with neither header (old clients, some
//!    privacy tools) relies on its token alone.
//! 2. **Token.** It must carry a token from [`Session::csrf_token`](crate::Session::csrf_token)
//!    of its own session, in the [`header`](CsrfConfig::header) (scripts) or in the
//!    [`field`](CsrfConfig::field) of an `application/x-www-form-urlencoded` body (forms; the
//!    layer reads at most [`max_form_bytes`](CsrfConfig::max_form_bytes) and hands the body on
//!    unchanged; with Rocket, the field must be within a longer form's first
//!    [`FORM_PREFIX_BYTES`], see [`Refusal::TokenNotFirst`]). Multipart and JSON bodies must
//!    use the header.
//!
//! A refused request never reaches the handler: the layer answers 403 (413 for a form over
//! the limit, 400 for a body that could not be read) with a plain-text body saying why, and
//! logs it at warn level with the session key's short hash.
//!
//! Tokens are masked afresh for every render (safe in compressed responses) and compared in
//! constant time; the per-session secret changes at [`Session::cycle_id`](crate::Session::cycle_id)
//! (call it at login), so a token learnt before a login is worthless after it.

use std::fmt;

use crate::error::{Error, Result};
use crate::session::Session;
use crate::web::ErrorPage;

/// The header scripts send the token in, by default.
pub const DEFAULT_HEADER: &str = "x-csrf-token";
/// The form field carrying the token, by default.
pub const DEFAULT_FIELD: &str = "csrf_token";
/// How much of a form body the layer reads to find the token, by default (64 KiB).
pub const DEFAULT_MAX_FORM_BYTES: usize = 64 * 1024;

/// The CSRF layer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CsrfConfig {
    /// The origins (`scheme://host[:port]`, lower case, no path) unsafe requests may come
    /// from. Empty (the default): the request's own `Host`, whatever the scheme. Configure
    /// them when a proxy rewrites `Host`, or when another origin of yours posts to this one.
    pub allowed_origins: Vec<String>,
    /// The request header carrying the token (lower case).
    pub header: String,
    /// The form field carrying the token.
    pub field: String,
    /// The largest form body the layer reads; a larger one is refused (413).
    pub max_form_bytes: usize,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            header: DEFAULT_HEADER.into(),
            field: DEFAULT_FIELD.into(),
            max_form_bytes: DEFAULT_MAX_FORM_BYTES,
        }
    }
}

/// Why the CSRF layer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `Origin` (or `Referer`) names another site.
    CrossOrigin,
    /// No token in the header or the form field.
    MissingToken,
    /// A token that is malformed or not of this session's current secret.
    InvalidToken,
    /// A form body over [`CsrfConfig::max_form_bytes`].
    FormTooLarge,
    /// The form body could not be read (the client went away mid-body).
    UnreadableForm,
    /// A form longer than what the integration may read before the handler, whose token
    /// field is not in that first part: `sessionkit-rocket` reads a form's first
    /// [`FORM_PREFIX_BYTES`] (Rocket hands no more of a body to code that runs before the
    /// handler). Put the token field first in the form (browsers send fields in document
    /// order), or send the token in the header.
    TokenNotFirst,
}

/// How much of a longer form `sessionkit-rocket`'s CSRF check can read: Rocket's peek window
/// (`rocket::data::PEEK_BYTES`).
pub const FORM_PREFIX_BYTES: usize = 512;

impl Refusal {
    /// The HTTP status the layer answers with.
    pub const fn status(self) -> u16 {
        match self {
            Self::FormTooLarge => 413,
            Self::UnreadableForm => 400,
            Self::CrossOrigin | Self::MissingToken | Self::InvalidToken | Self::TokenNotFirst => {
                403
            }
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Self::CrossOrigin => "the request came from another site",
            Self::MissingToken => "the form or request carried no CSRF token",
            Self::InvalidToken => {
                "the CSRF token is not valid for this session (the page may be older than your \
                 last sign-in: reload it and try again)"
            }
            Self::FormTooLarge => "the form is too large",
            Self::UnreadableForm => "the form could not be read",
            Self::TokenNotFirst => {
                "the CSRF token field must come first in the form (this server looks for it \
                 in the form's first 512 bytes only)"
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explanation())
    }
}

/// What the CSRF layer does with a request, from its method and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// A safe method: nothing to check.
    Pass,
    /// Refused before looking at a token.
    Refuse(Refusal),
    /// Verify this token (from the header).
    Verify(String),
    /// Read the form body (up to the limit) and verify its token field.
    ReadForm,
}

/// Whether `method` changes state and so needs a token.
pub fn is_unsafe(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// `scheme://authority` of an HTTP(S) URL, or `None`.
fn origin_of(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    (!authority.is_empty() && !authority.contains('@')).then_some((scheme, authority))
}

impl CsrfConfig {
    /// Returns `self` allowing unsafe requests from `origin` (`https://app.example.com`).
    #[must_use]
    pub fn with_allowed_origin(mut self, origin: impl Into<String>) -> Self {
        let origin = origin.into().trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins.push(origin);
        self
    }

    /// Returns `self` with another token header.
    #[must_use]
    pub fn with_header(mut self, header: impl Into<String>) -> Self {
        self.header = header.into().to_ascii_lowercase();
        self
    }

    /// Returns `self` with another form field.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Returns `self` with another form size limit.
    #[must_use]
    pub fn with_max_form_bytes(mut self, limit: usize) -> Self {
        self.max_form_bytes = limit;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for an allowed origin that is not
    /// `http(s)://authority`, an empty header or field name.
    pub fn validate(&self) -> Result<()> {
        for origin in &self.allowed_origins {
            match origin_of(origin) {
                Some((scheme, authority)) if origin.len() == scheme.len() + 3 + authority.len() => {
                }
                _ => {
                    return Err(Error::config(format!(
                        "{origin:?} is not an origin (scheme://host[:port], no path)"
                    )));
                }
            }
        }
        if self.header.is_empty() || self.field.is_empty() {
            return Err(Error::config(
                "the CSRF header and field names must not be empty",
            ));
        }
        Ok(())
    }

    /// What to do with a request of `method` whose headers `header` looks up by lower-case
    /// name (the first value, if it is text).
    pub fn plan<'a>(&self, method: &str, header: impl Fn(&str) -> Option<&'a str>) -> Plan {
        if !is_unsafe(method) {
            return Plan::Pass;
        }
        if let Err(refusal) = self.check_origin(&header) {
            return Plan::Refuse(refusal);
        }
        if let Some(token) = header(&self.header) {
            return Plan::Verify(token.to_owned());
        }
        let form = header("content-type").is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if form {
            Plan::ReadForm
        } else {
            Plan::Refuse(Refusal::MissingToken)
        }
    }

    fn check_origin<'a>(&self, header: &impl Fn(&str) -> Option<&'a str>) -> Result<(), Refusal> {
        let Some(source) = header("origin").or_else(|| header("referer")) else {
            return Ok(());
        };
        let Some((scheme, authority)) = origin_of(source) else {
            return Err(Refusal::CrossOrigin);
        };
        let allowed = if self.allowed_origins.is_empty() {
            header("host").is_some_and(|host| host.eq_ignore_ascii_case(authority))
        } else {
            self.allowed_origins.iter().any(|allowed| {
                allowed.len() == scheme.len() + 3 + authority.len()
                    && allowed[..scheme.len()].eq_ignore_ascii_case(scheme)
                    && allowed[scheme.len() + 3..].eq_ignore_ascii_case(authority)
            })
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::CrossOrigin)
        }
    }

    /// The token in the form field of an `application/x-www-form-urlencoded` body, taken as
    /// it is (a token is base64url and needs no escaping; an escaped one does not verify).
    pub fn form_token<'a>(&self, body: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(body)
            .ok()?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find_map(|(name, value)| (name == self.field).then_some(value))
    }

    /// Verifies `token` (the header's, or the form field's) against the session's secret.
    ///
    /// # Errors
    /// A store error while loading the session (`Ok(Err(_))` is a refusal).
    pub async fn verify(
        &self,
        session: &Session,
        token: Option<&str>,
    ) -> Result<std::result::Result<(), Refusal>> {
        let Some(token) = token else {
            return Ok(Err(Refusal::MissingToken));
        };
        Ok(if session.verify_csrf(token).await? {
            Ok(())
        } else {
            Err(Refusal::InvalidToken)
        })
    }

    /// The page for a refused request, and its log line (warn level: the reason and the
    /// session key's short hash, never the id or the token).
    pub fn refused(&self, session: &Session, refusal: Refusal) -> ErrorPage {
        let key = session.key_for_logs();
        tracing::warn!(
            status = refusal.status(),
            reason = %refusal,
            session = key.as_deref().unwrap_or("-"),
            "CSRF check refused a request"
        );
        ErrorPage {
            status: refusal.status(),
            content_type: "text/plain; charset=utf-8",
            body: format!("request refused: {refusal}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(config: &CsrfConfig, method: &str, headers: &[(&str, &'static str)]) -> Plan {
        let headers = headers.to_vec();
        config.plan(method, |name| {
            headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        })
    }

    const HOST: (&str, &str) = ("host", "127.0.0.1:3000");
    const FORM: (&str, &str) = (
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    );

    #[test]
    fn safe_methods_pass_unsafe_ones_need_a_token() {
        let config = CsrfConfig::default();
        for method in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert_eq!(
                plan(&config, method, &[("origin", "http://evil.example")]),
                Plan::Pass
            );
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"] {
            assert_eq!(
                plan(&config, method, &[HOST]),
                Plan::Refuse(Refusal::MissingToken)
            );
        }
        assert_eq!(plan(&config, "POST", &[HOST, FORM]), Plan::ReadForm);
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, ("x-csrf-token", "abc")]),
            Plan::Verify("abc".into())
        );
        assert_eq!(
            plan(
                &config,
                "POST",
                &[HOST, ("content-type", "multipart/form-data; boundary=x")]
            ),
            Plan::Refuse(Refusal::MissingToken)
        );
    }

    #[test]
    fn the_origin_must_be_the_host_or_an_allowed_one() {
        let config = CsrfConfig::default();
        for good in ["http://127.0.0.1:3000", "https://127.0.0.1:3000"] {
            assert_eq!(
                plan(&config, "POST", &[HOST, FORM, ("origin", good)]),
                Plan::ReadForm
            );
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:3001",
            "file://127.0.0.1:3000",
            "http://user@127.0.0.1:3000",
            "127.0.0.1:3000",
        ] {
            assert_eq!(
                plan(&config, "POST", &[HOST, FORM, ("origin", bad)]),
                Plan::Refuse(Refusal::CrossOrigin),
                "{bad}"
            );
        }
        let referer = ("referer", "http://127.0.0.1:3000/cart?x#y");
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, referer]),
            Plan::ReadForm
        );
        let lying = ("referer", "https://evil.example/127.0.0.1:3000");
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, lying]),
            Plan::Refuse(Refusal::CrossOrigin)
        );
        // Origin wins over Referer.
        let evil = ("origin", "http://evil.example");
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, evil, referer]),
            Plan::Refuse(Refusal::CrossOrigin)
        );
        // Without a Host, only a request with neither header passes to its token.
        assert_eq!(
            plan(&config, "POST", &[FORM, ("origin", "http://a")]),
            Plan::Refuse(Refusal::CrossOrigin)
        );
        assert_eq!(plan(&config, "POST", &[FORM]), Plan::ReadForm);

        let config = CsrfConfig::default().with_allowed_origin("https://App.example.com/");
        config.validate().expect("valid");
        let app = ("origin", "https://app.example.com");
        assert_eq!(plan(&config, "POST", &[HOST, FORM, app]), Plan::ReadForm);
        let plain = ("origin", "http://app.example.com");
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, plain]),
            Plan::Refuse(Refusal::CrossOrigin)
        );
        let own_host = ("origin", "http://127.0.0.1:3000");
        assert_eq!(
            plan(&config, "POST", &[HOST, FORM, own_host]),
            Plan::Refuse(Refusal::CrossOrigin)
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for origin in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
        ] {
            let config = CsrfConfig::default().with_allowed_origin(origin);
            assert!(config.validate().is_err(), "{origin}");
        }
        assert!(CsrfConfig::default().with_field("").validate().is_err());
    }

    #[test]
    fn form_tokens_are_found() {
        let config = CsrfConfig::default();
        assert_eq!(
            config.form_token(b"item=tea&csrf_token=abc_-"),
            Some("abc_-")
        );
        assert_eq!(config.form_token(b"csrf_tokenx=1&xcsrf_token=2"), None);
        assert_eq!(config.form_token(b"\xff"), None);
    }
}
