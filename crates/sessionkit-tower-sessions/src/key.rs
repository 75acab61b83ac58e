//! Where a tower-sessions session lives in a sessionkit store.

use sessionkit_core::SessionKey;
use sha2::{Digest, Sha256};
use tower_sessions_core::session::Id;

/// What the key of a tower-sessions id is hashed from, ahead of the id's cookie form.
///
/// sessionkit's own keys are the SHA-256 of an id's 24 raw bytes, so a 22-character cookie
/// form could never hash to one of them anyway; the tag makes that separation explicit and
/// keeps it if either id format ever changes length.
pub const KEY_DOMAIN: &[u8] = b"tower-sessions:";

/// The [`SessionKey`] a tower-sessions [`Id`] is stored under: the SHA-256 of
/// [`KEY_DOMAIN`] followed by the id's cookie form (its `Display`, 22 base64url characters).
///
/// Deterministic, so every process finds a session by the id its cookie holds, and one-way, so
/// the store (a backup, an admin listing, the `sessionkit` CLI) holds no cookie value. Tools
/// that import tower-sessions' own tables (which keep that same cookie form) can derive the
/// same key with [`session_key_for_cookie`].
pub fn session_key(id: &Id) -> SessionKey {
    hash_cookie_form(&id.to_string())
}

/// The [`SessionKey`] for a tower-sessions cookie value (or the `id` column of its SQL
/// stores), or `None` if the value is not an id tower-sessions could have issued: it must
/// parse as an [`Id`] and be that id's one canonical spelling.
pub fn session_key_for_cookie(value: &str) -> Option<SessionKey> {
    let id: Id = value.parse().ok()?;
    // Base64 of 16 bytes has two spare bits; only the spelling tower-sessions writes counts, so
    // that one session never has two cookie values.
    let canonical = id.to_string();
    (canonical == value).then(|| hash_cookie_form(&canonical))
}

fn hash_cookie_form(cookie_form: &str) -> SessionKey {
    let digest = Sha256::new()
        .chain_update(KEY_DOMAIN)
        .chain_update(cookie_form.as_bytes())
        .finalize();
    SessionKey::from_bytes(digest.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_tagged_hash_of_the_cookie_form() {
        let id = Id(0);
        assert_eq!(id.to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
        let expected: [u8; 32] = Sha256::digest(b"tower-sessions:AAAAAAAAAAAAAAAAAAAAAA").into();
        assert_eq!(session_key(&id), SessionKey::from_bytes(expected));
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let a = Id(7);
        let b = Id(8);
        assert_eq!(session_key(&a), session_key(&a));
        assert_ne!(session_key(&a), session_key(&b));
        assert_eq!(
            session_key_for_cookie(&a.to_string()),
            Some(session_key(&a))
        );
    }

    #[test]
    fn cookie_values_that_are_not_issued_ids_have_no_key() {
        assert_eq!(session_key_for_cookie(""), None);
        assert_eq!(session_key_for_cookie("not an id"), None);
        assert_eq!(session_key_for_cookie(&"A".repeat(32)), None);
        // The same 16 bytes with a spare bit set: decodes, but is not the spelling issued.
        let canonical = Id(0).to_string();
        let mut other = canonical[..21].to_owned();
        other.push('B');
        assert!(
            other.parse::<Id>().map_or(true, |id| id == Id(0)),
            "a variant spelling is either refused or names the same id"
        );
        assert_eq!(session_key_for_cookie(&other), None);
    }
}
