//! Session ids (what the browser holds) and session keys (what stores see).
//!
//! A [`SessionId`] is 192 bits from the operating system's CSPRNG, written as 32 base64url
//! characters. Because 24 bytes encode to exactly 32 characters with no padding and no spare
//! bits, every accepted cookie value maps to exactly one id: there is no second spelling of an id.
//!
//! Stores never see a `SessionId`. They see its [`SessionKey`], the SHA-256 digest of the id's
//! bytes, so a copy of a session table (a backup, a read replica, an admin listing) hands out no
//! live sessions. SHA-256 was measured against BLAKE3 for this 24-byte input (see
//! `docs/BENCHMARKS.md`): 59 ns against 86 ns on the CI machine (SHA-NI makes short inputs cheap),
//! and either is small next to the 380 ns the OS takes to hand out 24 random bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Number of random bytes in a session id (192 bits).
pub const ID_BYTES: usize = 24;
/// Length of a session id in its cookie form (base64url, no padding).
pub const ID_LEN: usize = 32;
/// Number of bytes in a [`SessionKey`].
pub const KEY_BYTES: usize = 32;

/// A session id: the secret a browser presents in its cookie.
///
/// Its `Debug` output is redacted and it has no `Display`, so an id does not end up in a log by
/// accident; [`SessionId::expose`] is the one way to get the cookie value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_BYTES]);

/// Why a cookie value is not a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSessionId {
    /// The value does not have exactly [`ID_LEN`] characters.
    #[error("a session id has {ID_LEN} characters, this value has {0}")]
    Length(usize),
    /// The value has a character outside the base64url alphabet.
    #[error("a session id is base64url; this value has another character")]
    Alphabet,
}

impl SessionId {
    /// Draws a fresh id from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) if the OS has no randomness to give,
    /// which is a broken machine, not a reason to fall back to a weaker generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::backend("the OS random number generator failed", e))?;
        Ok(Self(bytes))
    }

    /// Parses a cookie value. Checks length and alphabet before decoding, so a hostile value
    /// costs a length check and at most one pass over 32 bytes, and never reaches a store.
    ///
    /// # Errors
    /// [`InvalidSessionId`] for any value that is not exactly an id this library could issue.
    pub fn parse(value: &str) -> std::result::Result<Self, InvalidSessionId> {
        if value.len() != ID_LEN {
            return Err(InvalidSessionId::Length(value.len()));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidSessionId::Alphabet);
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut bytes) {
            Ok(ID_BYTES) => Ok(Self(bytes)),
            _ => Err(InvalidSessionId::Alphabet),
        }
    }

    /// The cookie value of this id. Treat it as a secret.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key stores file this session under: the SHA-256 digest of the id.
    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(<redacted>, key {})", self.key().short())
    }
}

/// The key a session is stored under: the hash of its [`SessionId`].
///
/// Safe to log, to show in admin tools and to hand to hooks: it cannot be turned back into an id,
/// and a request presenting it as a cookie is rejected (it has the wrong length).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; KEY_BYTES]);

impl SessionKey {
    /// Wraps raw digest bytes, as read back from a store.
    pub const fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Lower-case hex, 64 characters: the form text-keyed stores use.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(KEY_BYTES * 2);
        self.push_hex(&mut out);
        out
    }

    /// Appends the [`to_hex`](Self::to_hex) form to `out`, for callers that build a longer
    /// name around it (a store's key) without a second allocation.
    pub fn push_hex(&self, out: &mut String) {
        // Into a stack array, then one (ASCII fast path) UTF-8 check: text-keyed stores build
        // this on every request, and pushing char by char or growing a Vec per byte cost
        // 12–20 instructions a digit.
        let mut digits = [0u8; KEY_BYTES * 2];
        for (pair, b) in digits.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        out.push_str(std::str::from_utf8(&digits).unwrap_or_default()); // only ASCII digits
    }

    /// Parses the 64-character hex form (either case).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) for anything else, e.g. a corrupt row.
    pub fn from_hex(hex: &str) -> Result<Self> {
        let raw = hex.as_bytes();
        if raw.len() != KEY_BYTES * 2 {
            return Err(Error::corrupt(format!(
                "a session key is {} hex digits, found {}",
                KEY_BYTES * 2,
                raw.len()
            )));
        }
        let mut bytes = [0u8; KEY_BYTES];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
                return Err(Error::corrupt("a session key has a non-hex digit"));
            };
            bytes[i] = hi << 4 | lo;
        }
        Ok(Self(bytes))
    }

    /// Parses a key from raw bytes of any length, as read from a binary column.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) if the slice is not [`KEY_BYTES`] long.
    pub fn from_slice(raw: &[u8]) -> Result<Self> {
        <[u8; KEY_BYTES]>::try_from(raw).map(Self).map_err(|_| {
            Error::corrupt(format!(
                "a session key is {KEY_BYTES} bytes, found {}",
                raw.len()
            ))
        })
    }

    /// The first 12 hex digits: enough to tell sessions apart in a listing.
    pub fn short(&self) -> String {
        let mut short = String::with_capacity(SHORT_BYTES * 2);
        // Writing into a String cannot fail.
        let _ = self.write_short(&mut short);
        short
    }

    /// Writes the [`short`](Self::short) form to `out`, for spans and log lines that format
    /// it only when something records them.
    pub(crate) fn write_short(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for b in &self.0[..SHORT_BYTES] {
            out.write_char(char::from(HEX[usize::from(b >> 4)]))?;
            out.write_char(char::from(HEX[usize::from(b & 0x0f)]))?;
        }
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes of a key its [`short`](SessionKey::short) form shows.
const SHORT_BYTES: usize = 6;

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.short())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_through_their_cookie_form() {
        let id = SessionId::generate().expect("os rng");
        let text = id.expose();
        assert_eq!(text.len(), ID_LEN);
        assert_eq!(SessionId::parse(&text), Ok(id.clone()));
        assert_eq!(SessionId::parse(&text).map(|i| i.key()), Ok(id.key()));
    }

    #[test]
    fn ids_are_distinct() {
        let a = SessionId::generate().expect("os rng");
        let b = SessionId::generate().expect("os rng");
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn malformed_values_are_rejected() {
        assert_eq!(SessionId::parse(""), Err(InvalidSessionId::Length(0)));
        assert_eq!(
            SessionId::parse(&"a".repeat(31)),
            Err(InvalidSessionId::Length(31))
        );
        assert_eq!(
            SessionId::parse(&"a".repeat(33)),
            Err(InvalidSessionId::Length(33))
        );
        assert_eq!(
            SessionId::parse(&"a".repeat(4096)),
            Err(InvalidSessionId::Length(4096))
        );
        let mut bad = "a".repeat(31);
        bad.push('=');
        assert_eq!(SessionId::parse(&bad), Err(InvalidSessionId::Alphabet));
        bad.pop();
        bad.push('+');
        assert_eq!(SessionId::parse(&bad), Err(InvalidSessionId::Alphabet));
        // 32 bytes but not 32 characters: multi-byte UTF-8 never passes.
        let accented = format!("{}é", "a".repeat(30));
        assert_eq!(accented.len(), 32);
        assert_eq!(SessionId::parse(&accented), Err(InvalidSessionId::Alphabet));
    }

    #[test]
    fn debug_never_prints_the_id() {
        let id = SessionId::generate().expect("os rng");
        let shown = format!("{id:?}");
        assert!(!shown.contains(&id.expose()), "{shown}");
    }

    #[test]
    fn key_hex_round_trips_and_rejects_garbage() {
        let key = SessionId::generate().expect("os rng").key();
        assert_eq!(SessionKey::from_hex(&key.to_hex()).expect("hex"), key);
        assert_eq!(
            SessionKey::from_hex(&key.to_hex().to_uppercase()).expect("hex"),
            key
        );
        assert!(SessionKey::from_hex("zz").is_err());
        assert!(SessionKey::from_hex(&"g".repeat(64)).is_err());
        assert!(SessionKey::from_slice(&[0u8; 31]).is_err());
        assert_eq!(SessionKey::from_slice(key.as_bytes()).expect("slice"), key);
    }

    #[test]
    fn short_form_is_the_first_twelve_hex_digits() {
        let key = SessionId::generate().expect("os rng").key();
        assert_eq!(key.short(), key.to_hex()[..12]);
        assert_eq!(
            format!("{key:?}"),
            format!("SessionKey({})", &key.to_hex()[..12])
        );
    }

    #[test]
    fn key_is_sha256_of_the_id_bytes() {
        let id = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("valid");
        // sha256 of 24 zero bytes
        assert_eq!(
            id.key().to_hex(),
            "9d908ecfb6b256def8b49a7c504e6c889c4b0e41fe6ce3e01863dd7b61a20aa0"
        );
        let mut name = String::from("sk:s:{");
        id.key().push_hex(&mut name);
        assert_eq!(
            name,
            "sk:s:{9d908ecfb6b256def8b49a7c504e6c889c4b0e41fe6ce3e01863dd7b61a20aa0"
        );
    }
}
