//! What a store author needs besides the [`Store`](crate::Store) trait, and the guide to
//! writing a store.
//!
//! # Implementing a Store
//!
//! A store keeps session records under their [`SessionKey`](crate::SessionKey) (the SHA-256
//! of the id: a store never sees an id) and applies [`Change`](crate::Change)s to them. The
//! contracts are written on each [`Store`](crate::Store) method; the ones every store gets
//! wrong at first:
//!
//! - **`load` returns only live records.** `Ok(None)` for a missing or expired key, never an
//!   error; a grace-period pointer ([`Record::moved`](crate::Record::moved)) is returned until
//!   its own deadline.
//! - **`apply` is update-only and atomic.** No live session under the key → `Gone`, and
//!   nothing is written (a slow request must not re-create a session that was logged out).
//!   Then the change's conditions ([`Change::holds`](crate::Change::holds)) are checked in the
//!   same atomic step as the write: a failed condition is `Conflict` and writes nothing.
//!   [`Change::apply_to`](crate::Change::apply_to) is the reference semantics, version bump
//!   included.
//! - **`create` is insert-only** (a live record under the key is
//!   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict)); **`cycle`** moves a live session to a
//!   new key atomically and leaves the pointer only when asked.
//! - **Errors carry a kind.** [`Unavailable`](crate::ErrorKind::Unavailable) for connection
//!   trouble (the web integrations answer 503), [`Config`](crate::ErrorKind::Config) for a bad
//!   URL or a missing schema, [`Codec`](crate::ErrorKind::Codec) for a stored record that does
//!   not decode; never a panic on what the backend returns, and no session id, key or password
//!   in a message.
//! - **[`Capabilities`](crate::Capabilities) tell the truth.** An operation the store cannot
//!   do returns [`unsupported`] and its capability is off; `multiprocess_safe` only if
//!   several processes may share the store; `reports_purged` only with an implementation of
//!   [`Store::delete_expired_batch_reporting`](crate::Store::delete_expired_batch_reporting)
//!   (the default says `unsupported`, as the guide's store below does).
//!
//! A complete store (the one the conformance suite runs in `sessionkit-conformance`'s
//! `tests/guide_store.rs`), one process, sessions in a map, no listing or owner index:
//!
//! ```
#![doc = include_str!("guide_store.rs")]
//! ```
//!
//! **Test it with the conformance suite**, one macro call in the store crate's
//! `tests/conformance.rs`; the expression gives a fresh, isolated store per test (its own
//! table, namespace or directory), or `None` to skip when its server is down (through
//! `sessionkit_conformance::server_unavailable`, which fails instead under `CI=true`):
//!
//! ```ignore
//! sessionkit_conformance::conformance_suite!(async { Some(MapStore::default()) });
//! ```
//!
//! A store that several processes share also runs
//! `sessionkit_conformance::multiprocess` (real child processes writing one session).
//!
//! **The helpers in this module:** [`split_options`] and [`path_only`] read a store URL,
//! [`validate_table_name`] checks a name before it is spliced into statements, [`blocking`]
//! runs a synchronous driver off the async runtime, [`retry_transient`] retries what the
//! database aborted, [`unsupported`] is the error for an operation the store cannot do;
//! [`Record::to_blob`](crate::Record::to_blob) / [`Record::from_blob`](crate::Record::from_blob)
//! encode a whole record for stores that keep one value per session; [`sql`] has the layout
//! the SQL stores share.
//!
//! **Wiring a new backend into sessionkit:**
//!
//! 1. A crate `crates/sessionkit-<name>` (the workspace takes every crate there) on its own
//!    driver, depending on `sessionkit-core`, with its URL schemes in one `SCHEMES` constant, a
//!    `register(&mut Registry)` that passes them to
//!    [`Registry::register_store`](crate::Registry::register_store), and its
//!    `tests/conformance.rs`; its line in the root `[workspace.dependencies]`.
//! 2. In the `sessionkit` facade: an optional dependency, a cargo feature of the same name,
//!    the store's re-export and its `register` call in `sessionkit::registry()`.
//! 3. If it needs a server: `.ci/services` installs and starts it, and the tests find it
//!    through an environment variable with a loopback default (`SESSIONKIT_<NAME>_URL`).
//!
//! The CLI, the demo and both web integrations then reach it by URL with no further change.

use std::future::Future;
use std::time::Duration;

use crate::{Error, Result};

pub mod sql;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

/// Splits `scheme://rest` into the part after `//` (or after `:` when there is no `//`) and its
/// query string, parsed into pairs. Backends use it for options like `?table=sessions`.
pub fn split_options(url: &str) -> (&str, Vec<(String, String)>) {
    let body = url.split_once(':').map_or(url, |(_, rest)| rest);
    let body = body.strip_prefix("//").unwrap_or(body);
    match body.split_once('?') {
        None => (body, Vec::new()),
        Some((path, query)) => (
            path,
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (pair.to_owned(), String::new()),
                })
                .collect(),
        ),
    }
}

/// A URL option's value with its `%XX` escapes decoded (a file path in a store URL may have
/// them); anything else is kept as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its secrets replaced by `***`: the password of `scheme://user:password@host`
/// and the values of options named `pass` or ending in `password` (`password`, `sslpassword`,
/// `sentinel_password`). What error messages, logs and CLI output show of a store URL.
pub fn redacted_url(url: &str) -> String {
    let (before_query, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            // The userinfo ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let user = rest[..at]
                        .split_once(':')
                        .map_or(&rest[..at], |(user, _)| user);
                    let hidden = if rest[..at].contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{hidden}{}", &rest[at..])
                }
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name == "pass" || name.ends_with("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// The path of a URL that names only a path (`file:///dir`, `redb://file.redb`).
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) for a URL without a path or with options;
/// `example` shows the expected form.
pub fn path_only<'a>(url: &'a str, example: &str) -> Result<&'a str> {
    let (path, options) = split_options(url);
    if path.is_empty() || !options.is_empty() {
        return Err(Error::config(format!(
            "{:?}: expected {example} with no options",
            redacted_url(url)
        )));
    }
    Ok(path)
}

/// Checks a table (or prefix) name that SQL stores splice into their statements: 1 to 48
/// characters, a letter or `_` first, then letters, digits and `_`. SQL stores call this before
/// building any statement, so a configured name can never inject SQL.
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) naming the offending value.
pub fn validate_table_name(name: &str) -> Result<&str> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && name.len() <= 48 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name)
    } else {
        Err(Error::config(format!(
            "{name:?} is not a valid table name (1-48 of A-Z a-z 0-9 _, not starting with a digit)"
        )))
    }
}

/// Runs blocking store work (file I/O, an embedded database) on Tokio's blocking pool, for
/// stores whose driver is synchronous. A panic in `work` becomes a `Backend` error naming `store`.
///
/// # Errors
/// Whatever `work` returns, or `Backend` if it panicked.
pub async fn blocking<T: Send + 'static>(
    store: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::backend(format!("a blocking {store} task failed"), e))?
}

/// Shorthand for the error an unsupported operation returns.
pub fn unsupported(store: &'static str, operation: &'static str) -> Error {
    Error::Unsupported { store, operation }
}

/// How many times work that the database aborted (deadlock, serialization failure, lock wait
/// timeout) is run in all before the error reaches the caller.
pub const TRANSIENT_ATTEMPTS: u32 = 6;

/// Runs `attempt` again while `is_transient` says its error was a transient abort of the
/// database (running it again may succeed), with growing, jittered pauses, at most
/// [`TRANSIENT_ATTEMPTS`] times; any other error goes through `to_error` with `context` saying
/// what was being done.
///
/// # Errors
/// The first error that is not transient, as `to_error` maps it, or
/// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) when every attempt was aborted.
pub async fn retry_transient<T, E, F, Fut>(
    context: &str,
    is_transient: impl Fn(&E) -> bool,
    to_error: impl Fn(&str, E) -> Error,
    mut attempt: F,
) -> Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut pause = Duration::from_millis(2);
    for left in (0..TRANSIENT_ATTEMPTS).rev() {
        match attempt().await {
            Err(err) if left > 0 && is_transient(&err) => {
                tracing::debug!(error = %err, context, "transient database abort; retrying");
                let jitter = rand::random_range(0..=pause.as_millis() as u64);
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause *= 2;
            }
            other => return other.map_err(|e| to_error(context, e)),
        }
    }
    Err(Error::conflict(format!(
        "{context}: still aborted after {TRANSIENT_ATTEMPTS} attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn options_are_split() {
        let (path, opts) = split_options("sqlite://dir/app.db?table=s&wal");
        assert_eq!(path, "dir/app.db");
        assert_eq!(
            opts,
            vec![("table".into(), "s".into()), ("wal".into(), String::new())]
        );
        assert_eq!(split_options("memory:").0, "");
    }

    #[test]
    fn passwords_are_redacted() {
        for (url, shown) in [
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            (
                "postgres://u:p@ss@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            (
                "redis+cluster://u:pw@h1:1,h2:2",
                "redis+cluster://u:***@h1:1,h2:2",
            ),
            ("mysql://u@h/db", "mysql://u@h/db"),
            (
                "redis+unix:///s.sock?db=1&pass=pw",
                "redis+unix:///s.sock?db=1&pass=***",
            ),
            (
                "redis+sentinel://:pw@h1,h2/m?sentinel_password=spw&namespace=n",
                "redis+sentinel://:***@h1,h2/m?sentinel_password=***&namespace=n",
            ),
            ("memory:", "memory:"),
            ("sqlite://dir/a.db?table=s", "sqlite://dir/a.db?table=s"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
    }

    #[test]
    fn escapes_in_values_are_decoded() {
        assert_eq!(percent_decoded("/a%20b/c%2Fd%zz%"), "/a b/c/d%zz%");
        assert_eq!(percent_decoded("%ff"), "\u{fffd}");
    }

    #[test]
    fn table_names_are_validated() {
        assert!(validate_table_name("sessions").is_ok());
        assert!(validate_table_name("_s2").is_ok());
        for bad in [
            "",
            "1s",
            "s;drop table x",
            "s-t",
            "s t",
            "\"s\"",
            &"a".repeat(49),
            "sé",
        ] {
            assert_eq!(
                validate_table_name(bad).expect_err(bad).kind(),
                ErrorKind::Config
            );
        }
    }
}
