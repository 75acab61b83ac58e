//! # sessionkit
//!
//! Server-side web sessions for Rust that never lose a write. This facade re-exports the core
//! ([`SessionManager`], [`Session`], the [`Store`] trait) and every backend its cargo features
//! enable, and opens any of them from a URL with [`open`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit::Result<()> {
//! let store = sessionkit::open("memory:").await?;
//! let manager = sessionkit::SessionManager::builder_arc(store).build()?;
//! let session = manager.session(None);
//! session.insert("user", &"alice").await?;
//! let committed = session.commit().await?; // the web layer sets the cookie from this
//! assert!(matches!(committed.cookie, sessionkit::CookieUpdate::Set { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! See [`sessionkit_core`] for the life cycle of a session, the concurrency guarantee and the
//! security defaults.
//!
//! ## Features
//! - `memory` (default): the in-process [`MemoryStore`], URL `memory:`.

pub use sessionkit_core::*;

#[cfg(feature = "memory")]
pub use sessionkit_memory::MemoryStore;

/// A registry of every store scheme the enabled features provide.
pub fn registry() -> Registry {
    #[allow(unused_mut)]
    let mut registry = Registry::new();
    #[cfg(feature = "memory")]
    sessionkit_memory::register(&mut registry);
    registry
}

/// Opens the store a URL names (`memory:`, …) with the backends the enabled features provide.
///
/// # Errors
/// [`ErrorKind::Config`] for an unknown scheme or a malformed URL; the backend's own errors
/// (for example [`ErrorKind::Unavailable`] when its server cannot be reached).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    registry().open(url).await
}
