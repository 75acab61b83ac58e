//! The session's CSRF secret and the tokens made from it.
//!
//! A token is `base64url(mask || mask XOR secret)` with a fresh random mask: every render gives
//! another string, so a page compressed together with attacker-chosen text does not reveal the
//! secret (BREACH), and every one of them verifies while the session keeps its secret. The web
//! side (which requests need a token, the `Origin` check, the 403 page) is in [`crate::csrf`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use super::{Session, updates};
use crate::codec::{decode_value, encode_value};
use crate::error::Result;

/// The session key holding the secret (base64url).
pub(super) const CSRF_KEY: &str = "__sessionkit.csrf";
const SECRET_BYTES: usize = 32;
type Secret = [u8; SECRET_BYTES];

fn decode_secret(text: &str) -> Option<Secret> {
    let mut secret = [0; SECRET_BYTES];
    (URL_SAFE_NO_PAD.decode_slice(text, &mut secret).ok()? == SECRET_BYTES).then_some(secret)
}

fn stored_secret(bytes: Option<&Vec<u8>>) -> Option<Secret> {
    let text: String = decode_value(CSRF_KEY, bytes?).ok()?;
    decode_secret(&text)
}

fn mask(secret: &Secret) -> String {
    let mask: Secret = rand::random();
    let mut raw = [0; 2 * SECRET_BYTES];
    for i in 0..SECRET_BYTES {
        raw[i] = mask[i];
        raw[SECRET_BYTES + i] = mask[i] ^ secret[i];
    }
    URL_SAFE_NO_PAD.encode(raw)
}

fn unmask(token: &str) -> Option<Secret> {
    let mut raw = [0; 2 * SECRET_BYTES];
    if URL_SAFE_NO_PAD.decode_slice(token, &mut raw).ok()? != 2 * SECRET_BYTES {
        return None;
    }
    let (mask, masked) = raw.split_at(SECRET_BYTES);
    let mut secret = [0; SECRET_BYTES];
    for i in 0..SECRET_BYTES {
        secret[i] = mask[i] ^ masked[i];
    }
    Some(secret)
}

impl Session {
    /// A fresh CSRF token for a page about to be rendered (put it in every form that changes
    /// something, or send it as the `X-CSRF-Token` header from scripts). Creates the session's
    /// secret on first use, which starts a session on a request without one (a login form
    /// needs a token too).
    ///
    /// Every call gives another string, and all of them verify until the secret changes: at
    /// [`Session::cycle_id`] (so that whoever knew the session before a login, through a
    /// planted id, knows no token of the signed-in session) and with the session itself.
    /// Forms rendered before a login then fail verification: re-render them.
    ///
    /// A request that presented the session's old id during the grace period after a
    /// `cycle_id()` gets a token that verifies nowhere: whoever holds an old id must not learn
    /// the new secret, and the page still renders (a form sent from it is refused as out of
    /// date).
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn csrf_token(&self) -> Result<String> {
        self.with(|loaded| {
            if loaded.require_current_id("csrf_token").is_err() {
                return Ok(mask(&rand::random()));
            }
            if let Some(secret) = stored_secret(loaded.data.get(CSRF_KEY)) {
                return Ok(mask(&secret));
            }
            let text = URL_SAFE_NO_PAD.encode(rand::random::<Secret>());
            let secret = decode_secret(&text).unwrap_or_default();
            let bytes = encode_value(CSRF_KEY, &text)?;
            // Conditional like an update: two first renders racing keep one secret (the
            // later render's page then carries a token of the secret that lost, and its form
            // is refused once; a reload fixes it).
            let replay = updates::replay(move |stored: &mut String| {
                if decode_secret(stored).is_none() {
                    stored.clone_from(&text);
                }
            });
            loaded.put_updated(CSRF_KEY, bytes, replay);
            Ok(mask(&secret))
        })
        .await
    }

    /// Whether `token` was made by [`Session::csrf_token`] for this session's current secret.
    /// A session without a secret accepts no token; the comparison takes the same time
    /// wherever the bytes differ. Loads the session, changes nothing.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn verify_csrf(&self, token: &str) -> Result<bool> {
        let presented = unmask(token);
        self.with(|loaded| {
            let (Some(secret), Some(presented)) =
                (stored_secret(loaded.data.get(CSRF_KEY)), presented)
            else {
                return Ok(false);
            };
            Ok(bool::from(presented.ct_eq(&secret)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_differ_and_unmask_to_the_secret() {
        let secret: Secret = rand::random();
        let (a, b) = (mask(&secret), mask(&secret));
        assert_ne!(a, b);
        assert_eq!(unmask(&a), Some(secret));
        assert_eq!(unmask(&b), Some(secret));
        for bad in ["", "short", &a[1..], &format!("{a}A"), "!!!!"] {
            assert_eq!(unmask(bad), None, "{bad}");
        }
    }
}
