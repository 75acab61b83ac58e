//! What a store author needs besides the [`Store`](crate::Store) trait: reading options from
//! a store URL, checking a configured table name, running a synchronous driver off the async
//! runtime, retrying what the database aborted, and (in [`sql`]) the layout both SQL stores
//! share. See the guide in the crate docs, "Implementing a Store".

use std::future::Future;
use std::time::Duration;

use crate::{Error, Result};

pub mod sql;

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

/// The path of a URL that names only a path (`file:///dir`, `redb://file.redb`).
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) for a URL without a path or with options;
/// `example` shows the expected form.
pub fn path_only<'a>(url: &'a str, example: &str) -> Result<&'a str> {
    let (path, options) = split_options(url);
    if path.is_empty() || !options.is_empty() {
        return Err(Error::config(format!(
            "{url:?}: expected {example} with no options"
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
