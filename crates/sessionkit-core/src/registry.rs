//! Opening stores from URLs: `memory:`, `sqlite://app.db`, `redis://…`, one registry for all.
//!
//! Each backend crate exports a `register` function that adds its schemes; the `sessionkit`
//! facade builds a registry with every backend its features enable.
//!
//! A store is opened in one of two [`OpenMode`]s: [`Registry::open`] opens it as an
//! application does, creating its file or directory if missing (and its schema when the URL
//! asks for it with `setup=true`); [`Registry::open_existing`] creates nothing and fails with a
//! [`ErrorKind::Config`](crate::ErrorKind::Config) error if the store's file, directory or
//! schema is missing (what admin tools that only read or clean a store want).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::store::Store;

/// A function that opens a store from its full URL, in an [`OpenMode`].
pub type Opener =
    Arc<dyn Fn(String, OpenMode) -> BoxFuture<'static, Result<Arc<dyn Store>>> + Send + Sync>;

/// Whether opening a store may create what it needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenMode {
    /// Open as an application does: an embedded store creates its file or directory if it is
    /// missing (SQLite, redb, file), and a store creates its schema when its URL asks for it
    /// (`setup=true`).
    #[default]
    Create,
    /// Create nothing: no file, no directory, no table, whatever the URL's `setup` option says.
    /// The store's file or directory must exist and hold the store's schema (SQLite, redb,
    /// file; PostgreSQL and MySQL check their tables); otherwise opening fails with an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error that says what is missing and that
    /// `sessionkit setup` creates it. Stores whose opening creates nothing anyway (memory,
    /// Redis, Memcached) open as in `Create`. What admin tools that only read or clean a store
    /// use, so that a mistyped path is reported rather than created.
    Existing,
}

/// Maps URL schemes to the backends that open them.
#[derive(Clone, Default)]
pub struct Registry {
    openers: BTreeMap<String, Opener>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `open` for URLs whose scheme is `scheme` (without the colon). A later
    /// registration of the same scheme replaces the earlier one. `open` gets the full URL and
    /// the [`OpenMode`], whose contract it keeps: in [`OpenMode::Existing`] it creates nothing.
    pub fn register<F, Fut>(&mut self, scheme: &str, open: F) -> &mut Self
    where
        F: Fn(String, OpenMode) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Store>>> + Send + 'static,
    {
        let open = Arc::new(open);
        self.openers.insert(
            scheme.to_ascii_lowercase(),
            Arc::new(move |url, mode| {
                let open = Arc::clone(&open);
                Box::pin(async move { open(url, mode).await })
            }),
        );
        self
    }

    /// Registers a store's URL `schemes` (a backend's `SCHEMES`), each opened by `open`, which
    /// gets the full URL and the [`OpenMode`] (and keeps its contract: in
    /// [`OpenMode::Existing`] it creates nothing). What a backend crate's `register` function
    /// calls.
    pub fn register_store<S, F, Fut>(&mut self, schemes: &[&str], open: F) -> &mut Self
    where
        S: Store,
        F: Fn(String, OpenMode) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
    {
        let open = Arc::new(open);
        for scheme in schemes {
            let open = Arc::clone(&open);
            self.register(scheme, move |url, mode| {
                let opening = open(url, mode);
                async move { Ok(Arc::new(opening.await?) as Arc<dyn Store>) }
            });
        }
        self
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.openers.keys().map(String::as_str)
    }

    /// Opens the store `url` names, as an application does ([`OpenMode::Create`]).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) if the URL has no scheme or an unknown one
    /// (the message lists the known ones); otherwise whatever the backend's opener returns.
    pub async fn open(&self, url: &str) -> Result<Arc<dyn Store>> {
        self.open_with(url, OpenMode::Create).await
    }

    /// Opens the store `url` names without creating anything ([`OpenMode::Existing`]).
    ///
    /// # Errors
    /// As [`Registry::open`]; [`ErrorKind::Config`](crate::ErrorKind::Config) if the store's
    /// file, directory or schema does not exist.
    pub async fn open_existing(&self, url: &str) -> Result<Arc<dyn Store>> {
        self.open_with(url, OpenMode::Existing).await
    }

    /// Opens the store `url` names in `mode`.
    ///
    /// # Errors
    /// As [`Registry::open`] and, in [`OpenMode::Existing`], [`Registry::open_existing`].
    pub async fn open_with(&self, url: &str, mode: OpenMode) -> Result<Arc<dyn Store>> {
        let scheme = scheme_of(url).ok_or_else(|| {
            Error::config(format!(
                "{:?} is not a store URL (expected scheme:…, e.g. memory:)",
                crate::backend::redacted_url(url)
            ))
        })?;
        let Some(open) = self.openers.get(&scheme.to_ascii_lowercase()) else {
            let known: Vec<&str> = self.schemes().collect();
            return Err(Error::config(format!(
                "no store for scheme {scheme:?} (known: {}; is the crate feature enabled?)",
                known.join(", ")
            )));
        };
        open(url.to_owned(), mode).await
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("schemes", &self.openers.keys())
            .finish()
    }
}

/// The scheme of a store URL: the text before the first `:` if it is a valid URL scheme
/// (a letter, then letters, digits, `+`, `-` or `.`).
pub fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised() {
        assert_eq!(scheme_of("memory:"), Some("memory"));
        assert_eq!(scheme_of("redis+cluster://a:1,b:2"), Some("redis+cluster"));
        assert_eq!(scheme_of("sqlite://x.db"), Some("sqlite"));
        assert_eq!(scheme_of("no-colon"), None);
        assert_eq!(scheme_of("1abc:"), None);
        assert_eq!(scheme_of(":x"), None);
    }

    #[tokio::test]
    async fn unknown_schemes_are_config_errors() {
        let registry = Registry::new();
        let err = registry
            .open("nope://x")
            .await
            .err()
            .expect("unknown scheme");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let err = registry.open("no scheme").await.err().expect("no scheme");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    #[tokio::test]
    async fn the_mode_reaches_the_opener() {
        let mut registry = Registry::new();
        registry.register("probe", |url, mode| async move {
            Err(Error::config(format!("{url} {mode:?}")))
        });
        for (opened, shown) in [
            (registry.open("probe:x").await, "probe:x Create"),
            (registry.open_existing("PROBE:y").await, "PROBE:y Existing"),
        ] {
            let err = opened.err().expect("the probe fails");
            assert!(err.to_string().ends_with(shown), "{err}");
        }
    }
}
