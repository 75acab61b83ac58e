//! Cross-site request forgery protection for the demo's forms, self-contained so that a
//! library helper can replace it: a per-session secret kept in the session, a fresh masked
//! token per rendered page, verification in constant time, and an `Origin` (or `Referer`)
//! check against the request's `Host`.
//!
//! A token is `base64url(mask || mask XOR secret)` with a fresh random mask: every render
//! gives a different string (so the token cannot be recovered from compressed responses,
//! BREACH), and every one of them verifies as long as the session keeps its secret.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sessionkit::Session;
use sessionkit::tower::SessionError;
use subtle::ConstantTimeEq as _;

/// The session key holding the secret.
pub const SECRET_KEY: &str = "csrf_secret";
/// The form field carrying the token.
pub const FIELD: &str = "csrf";
const SECRET_BYTES: usize = 32;

/// Why a state-changing request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `Origin` (or, without it, `Referer`) names another site than the request's `Host`.
    CrossOrigin,
    /// No token, a malformed one, or one that is not this session's.
    BadToken,
}

/// `bytes` random bytes from a CSPRNG, base64url (a secret, a password).
pub fn random_text(bytes: usize) -> String {
    let mut raw = vec![0; bytes];
    rand::fill(&mut raw[..]);
    URL_SAFE_NO_PAD.encode(raw)
}

fn new_secret() -> String {
    random_text(SECRET_BYTES)
}

fn decode_secret(text: &str) -> Option<[u8; SECRET_BYTES]> {
    let mut secret = [0; SECRET_BYTES];
    (URL_SAFE_NO_PAD.decode_slice(text, &mut secret).ok()? == SECRET_BYTES).then_some(secret)
}

/// A fresh masked token for a page about to be rendered; creates the session's secret if it
/// has none yet.
///
/// # Errors
/// A session error.
pub async fn token(session: &Session) -> Result<String, SessionError> {
    let secret = match session
        .get::<String>(SECRET_KEY)
        .await?
        .as_deref()
        .and_then(decode_secret)
    {
        Some(secret) => secret,
        None => {
            let text = new_secret();
            session.insert(SECRET_KEY, &text).await?;
            decode_secret(&text).unwrap_or_default()
        }
    };
    let mask = rand::random::<[u8; SECRET_BYTES]>();
    let mut raw = [0; 2 * SECRET_BYTES];
    for i in 0..SECRET_BYTES {
        raw[i] = mask[i];
        raw[SECRET_BYTES + i] = mask[i] ^ secret[i];
    }
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// Replaces the session's secret (at sign-in: tokens rendered before it stop verifying).
///
/// # Errors
/// A session error.
pub async fn rotate(session: &Session) -> Result<(), SessionError> {
    session.insert(SECRET_KEY, &new_secret()).await?;
    Ok(())
}

/// Whether `token` was made by [`token`] for this session's current secret. A session without
/// a secret accepts no token. The comparison takes the same time wherever the bytes differ.
///
/// # Errors
/// A session error.
pub async fn verify(session: &Session, token: &str) -> Result<bool, SessionError> {
    let Some(secret) = session
        .get::<String>(SECRET_KEY)
        .await?
        .as_deref()
        .and_then(decode_secret)
    else {
        return Ok(false);
    };
    let mut raw = [0; 2 * SECRET_BYTES];
    if URL_SAFE_NO_PAD.decode_slice(token, &mut raw).ok() != Some(2 * SECRET_BYTES) {
        return Ok(false);
    }
    let (mask, masked) = raw.split_at(SECRET_BYTES);
    let mut unmasked = [0; SECRET_BYTES];
    for i in 0..SECRET_BYTES {
        unmasked[i] = mask[i] ^ masked[i];
    }
    Ok(bool::from(unmasked.ct_eq(&secret)))
}

/// The `scheme://authority` prefix's authority of a URL, if the scheme is HTTP(S).
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The `Origin` check: when the request carries `Origin`, it must be this site (its authority
/// equal to the request's `Host`); without `Origin`, the same for `Referer` if present; with
/// neither, the request passes this check and relies on its token alone.
pub fn check_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER));
    let Some(source) = source else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let from = source.to_str().ok().and_then(authority);
    match (from, host) {
        (Some(from), Some(host)) if from.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(Refused::CrossOrigin),
    }
}

/// The value of `field` in an `application/x-www-form-urlencoded` body, taken as it is (a
/// token is base64url, which needs no escaping; an escaped one simply does not verify).
pub fn form_field<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(name, value)| (name == field).then_some(value))
}

/// The whole check of a state-changing request: origin first, then the token of the form
/// field [`FIELD`] in `body` (or of the `X-CSRF-Token` header).
///
/// # Errors
/// [`Refused`] when the request must be refused (`Ok(Err(..))`); a session error (`Err`).
pub async fn check(
    session: &Session,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<(), Refused>, SessionError> {
    if let Err(refused) = check_origin(headers) {
        return Ok(Err(refused));
    }
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| form_field(body, FIELD));
    let Some(token) = token else {
        return Ok(Err(Refused::BadToken));
    };
    Ok(if verify(session, token).await? {
        Ok(())
    } else {
        Err(Refused::BadToken)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn origin_must_be_the_host() {
        let host = (header::HOST, "127.0.0.1:3000");
        assert_eq!(check_origin(&headers(std::slice::from_ref(&host))), Ok(()));
        assert_eq!(
            check_origin(&headers(&[
                host.clone(),
                (header::ORIGIN, "http://127.0.0.1:3000")
            ])),
            Ok(())
        );
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:3001",
            "file://x",
        ] {
            assert_eq!(
                check_origin(&headers(&[host.clone(), (header::ORIGIN, bad)])),
                Err(Refused::CrossOrigin),
                "{bad}"
            );
        }
        assert_eq!(
            check_origin(&headers(&[
                host.clone(),
                (header::REFERER, "http://127.0.0.1:3000/sessions?x")
            ])),
            Ok(())
        );
        assert_eq!(
            check_origin(&headers(&[
                host.clone(),
                (header::REFERER, "https://evil.example/127.0.0.1:3000")
            ])),
            Err(Refused::CrossOrigin)
        );
        // Origin wins over Referer.
        assert_eq!(
            check_origin(&headers(&[
                host,
                (header::ORIGIN, "http://evil.example"),
                (header::REFERER, "http://127.0.0.1:3000/")
            ])),
            Err(Refused::CrossOrigin)
        );
    }

    #[test]
    fn form_fields_are_found() {
        assert_eq!(form_field(b"item=tea&csrf=abc_-", FIELD), Some("abc_-"));
        assert_eq!(form_field(b"csrfx=1&xcsrf=2", FIELD), None);
        assert_eq!(form_field(b"\xff", FIELD), None);
    }
}
